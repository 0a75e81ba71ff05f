"""Test doubles for requests held inside the engine: a gated Predictor, and what tests read about queued requests."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import numpy as np

from dropnet.protos.inference import grpc_service_pb2 as oip
from dropnet.protos.inference import grpc_service_pb2_grpc as oip_grpc
from dropnet.server.predictor import Predictor
from tests.server.grpc_harness import ServerThread, wait_until
from tests.server.helpers import MODEL


GATE_TIMEOUT_S = 300.0
"""How long a held run waits for its gate before failing: far beyond any test's hold, even on a loaded CI machine."""


class GatedPredictor:
    """A real Predictor whose runs wait while the gate is closed, or fail when told to."""

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.failure: Exception | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._predictor, name)

    def run_deterministic(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self._enter()
        return self._predictor.run_deterministic(x)

    def run_mc(self, *args: Any) -> dict[str, np.ndarray]:
        self._enter()
        return self._predictor.run_mc(*args)

    def _enter(self) -> None:
        self.entered.set()
        if self.failure is not None:
            raise self.failure
        assert self.gate.wait(timeout=GATE_TIMEOUT_S), "the gate was never opened"


def raw_infer_request(x: np.ndarray, datatype: str = "FP32", model: str = MODEL, **fields: Any) -> oip.ModelInferRequest:
    """A ModelInferRequest of rows ``x`` as raw contents."""
    request = oip.ModelInferRequest(model_name=model, raw_input_contents=[x.tobytes()], **fields)
    request.inputs.add(name="x", datatype=datatype, shape=x.shape)
    return request


def queue_depth(server: ServerThread) -> float:
    """Requests waiting for their batch, from the server's queue-depth metric."""
    return server.server.dataplane.metrics.registry.get_sample_value("dropnet_queue_depth", {"model": MODEL}) or 0.0


def hold_running_and_queued(
    server: ServerThread, stub: oip_grpc.GRPCInferenceServiceStub, predictor: GatedPredictor, x: np.ndarray,
    timeout: float,
) -> tuple[grpc.Future, grpc.Future]:
    """With ``predictor``'s gate closed: one ModelInfer of rows ``x`` running inside it and a second one queued."""
    predictor.entered.clear()
    predictor.gate.clear()
    running = stub.ModelInfer.future(raw_infer_request(x), timeout=timeout)
    assert predictor.entered.wait(timeout=60)
    queued = stub.ModelInfer.future(raw_infer_request(x), timeout=timeout)
    wait_until(lambda: queue_depth(server) == 1, "the second request waits in the queue")
    return running, queued
