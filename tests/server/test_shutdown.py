"""A graceful stop keeps to ``--grace``: work in flight gets until the deadline, what still runs then ends UNAVAILABLE.

In process (a gated Predictor holds runs as long as the test wants) and as a real ``dropnet serve``
whose inference never returns, so the process can only exit because the deadline is kept.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from dropnet.protos.inference import grpc_service_pb2 as oip
from dropnet.protos.inference import grpc_service_pb2_grpc as oip_grpc
from dropnet.server.dataplane import CUT_MARGIN_S, CUT_MESSAGE
from dropnet.server.process import ServeProcess
from tests.server.grpc_harness import ServerThread, grpc_settings, models_dir_with, wait_until
from tests.server.gating import GatedPredictor, hold_running_and_queued, raw_infer_request
from tests.server.test_grpc_errors import ROWS
from tests.server.test_grpc_serve import _arrived
from tests.server.helpers import MODEL

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def _unavailable(call: grpc.Future) -> str:
    """The details of a call that must end UNAVAILABLE."""
    with pytest.raises(grpc.RpcError) as caught:
        call.result()
    assert caught.value.code() == UNAVAILABLE, caught.value.details()
    return caught.value.details()


def test_calls_still_running_at_the_deadline_end_unavailable(
    models_dir: Path, gated: list[GatedPredictor], caplog: pytest.LogCaptureFixture
) -> None:
    settings = grpc_settings(models_dir, batching=False, inference_workers=1)
    with ServerThread(settings) as server, server.channel() as channel:
        (predictor,) = gated
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        try:
            running, queued = hold_running_and_queued(server, stub, predictor, ROWS, timeout=120)
            with caplog.at_level(logging.INFO):
                finished = server.run(server.server.stop(grace=0.2))
            assert not finished  # stop() returned while the first run is still held in the gate
            assert _unavailable(running) == _unavailable(queued) == CUT_MESSAGE
        finally:
            predictor.gate.set()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert any("grace period of 0.2s over: 2 request(s) ended UNAVAILABLE" in r.getMessage() for r in caplog.records)


def _refused(server: ServerThread) -> bool:
    """Whether a new call is refused UNAVAILABLE (one racing the start of the stop may be CANCELLED by grpc).

    The probe's deadline is short: on a loaded machine a connection made while the server stops can hang
    instead of being refused, and the probe must then try again rather than outlast the held run's gate.
    """
    with server.channel() as channel:
        try:
            oip_grpc.GRPCInferenceServiceStub(channel).ServerLive(oip.ServerLiveRequest(), timeout=2)
        except grpc.RpcError as error:
            return error.code() == UNAVAILABLE
    return False


def test_work_that_ends_within_the_grace_is_answered(models_dir: Path, gated: list[GatedPredictor]) -> None:
    with ServerThread(grpc_settings(models_dir, batching=False)) as server, server.channel() as channel:
        (predictor,) = gated
        predictor.entered.clear()
        predictor.gate.clear()
        stopped: list[bool] = []
        try:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            running = stub.ModelInfer.future(raw_infer_request(ROWS), timeout=120)
            assert predictor.entered.wait(timeout=60)
            stopper = threading.Thread(target=lambda: stopped.append(server.run(server.server.stop(grace=120))))
            stopper.start()
            wait_until(lambda: _refused(server), "new calls are refused UNAVAILABLE")
            assert not stopped  # still within the grace: the stop waits for the held run
        finally:
            predictor.gate.set()
        assert running.result().model_name == MODEL
        stopper.join(timeout=120)
    assert stopped == [True]


BLOCKED_RUN = """
import sys
import threading

from dropnet.cli import main
from dropnet.server.predictor import Predictor

run_deterministic = Predictor.run_deterministic


def never_returns(self, x):
    if len(x) == 1:  # the test inference of a package at load
        return run_deterministic(self, x)
    print("run started", file=sys.stderr, flush=True)
    threading.Event().wait()  # an onnxruntime run cannot be interrupted: this one never ends


Predictor.run_deterministic = never_returns
sys.exit(main(["serve", *sys.argv[1:]]))
"""
"""``dropnet serve`` whose deterministic runs of several rows never return."""
GRACE_S = 1.0
EXIT_BOUND_S = GRACE_S + CUT_MARGIN_S + 30.0
"""A generous bound on SIGTERM → exit: the promise is grace + CUT_MARGIN_S, plus up to 0.5 s to stop the
metrics endpoint (its poll interval) and the time to exit; a stop that waited for the run would never end."""


@pytest.mark.slow
def test_serve_exits_within_the_grace_and_cut_clients_get_unavailable(tiny_package: Path, tmp_path: Path) -> None:
    models = models_dir_with(tiny_package, tmp_path)
    serve = ServeProcess(
        ["--models", str(models), "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--device", "cpu",
         "--no-batching", "--inference-workers", "1", "--reload-interval", "0", "--grace", str(GRACE_S)],
        command=[sys.executable, "-c", BLOCKED_RUN],
    )
    try:
        metrics_url = serve.wait_for(r"metrics at (http://\S+/metrics)").group(1)
        port = int(serve.wait_for(r"serving on 127\.0\.0\.1:(\d+)").group(1))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            running = stub.ModelInfer.future(raw_infer_request(ROWS), timeout=300)
            serve.wait_for("run started")
            queued = stub.ModelInfer.future(raw_infer_request(ROWS), timeout=300)
            wait_until(lambda: _arrived(metrics_url) == 2, "one request runs and one waits in the queue")
            signalled = time.monotonic()
            serve.process.send_signal(signal.SIGTERM)
            code = serve.process.wait(timeout=EXIT_BOUND_S)
            took = time.monotonic() - signalled
            details = [_unavailable(running), _unavailable(queued)]
        assert code == 0 and took < EXIT_BOUND_S
        print(f"SIGTERM to exit with a run that never ends: {took:.2f}s (--grace {GRACE_S:g}, margin {CUT_MARGIN_S:g}s)")
        assert details == [CUT_MESSAGE, CUT_MESSAGE]
        serve.wait_for("inference runs still in onnxruntime are left to finish in their threads")
        serve.wait_for(r"\bstopped$")
        assert not any("Traceback" in line for line in serve.lines), "\n".join(serve.lines)
    finally:
        serve.kill()
