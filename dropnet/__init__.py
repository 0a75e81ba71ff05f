"""dropnet: dropout neural networks — train, export to ONNX, serve over gRPC."""

__version__ = "0.1.0"
