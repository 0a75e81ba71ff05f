"""The graph builders' public face: the two graphs of a model package and their verification.

Graphs are built node by node with ``onnx.helper`` from the trained network's weights rather
than exported with ``torch.onnx``, whose TorchScript exporter is being removed (and could not
express the in-graph, seed-driven dropout noise anyway). See dropnet.exporter.deterministic,
dropnet.exporter.mc and dropnet.exporter.rng for what each graph computes.
"""

from dropnet.exporter.deterministic import build_deterministic
from dropnet.exporter.mc import build_mc
from dropnet.exporter.onnx_graph import IR_VERSION, OPSET, verify_model
from dropnet.exporter.rng import RNG_SCHEME

__all__ = ["IR_VERSION", "OPSET", "RNG_SCHEME", "build_deterministic", "build_mc", "verify_model"]
