"""The floor of a Python gRPC inference server: Open Inference Protocol ModelInfer on grpc.aio, nothing else.

    .venv/bin/python benchmarks/oip_floor_server.py MODEL.onnx [--port 0] [--intra-op-threads 1]

Serves one ONNX graph (input ``x``, output ``probabilities``) under any model name: decodes the
first input (raw or typed FP32 contents), runs onnxruntime inline on the event loop and answers
with raw FP32 bytes. No validation, metrics, batching or other RPCs. Prints ``serving on
HOST:PORT`` once bound. ``benchmarks/server_vs_mlserver.py`` runs it beside the real servers.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
import numpy as np
import onnxruntime as ort
from tritonclient.grpc import service_pb2, service_pb2_grpc


class FloorServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """ModelInfer only: one onnxruntime run per request."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session

    async def ModelInfer(self, request: service_pb2.ModelInferRequest, context: object) -> service_pb2.ModelInferResponse:
        tensor = request.inputs[0]
        if request.raw_input_contents:
            x = np.frombuffer(request.raw_input_contents[0], dtype=np.float32)
        else:
            x = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
        (probabilities,) = self.session.run(["probabilities"], {"x": x.reshape(tuple(tensor.shape))})
        output = service_pb2.ModelInferResponse.InferOutputTensor(
            name="probabilities", datatype="FP32", shape=probabilities.shape)
        return service_pb2.ModelInferResponse(model_name=request.model_name, outputs=[output],
                                              raw_output_contents=[probabilities.tobytes()])


async def serve(model: str, host: str, port: int, intra_op_threads: int) -> None:
    """Serve ``model`` on ``host:port`` (0: a free port) until the process is stopped."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FloorServicer(session), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"serving on {host}:{bound}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the ONNX graph to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--intra-op-threads", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(serve(args.model, args.host, args.port, args.intra_op_threads))


if __name__ == "__main__":
    main()
