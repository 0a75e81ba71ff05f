"""``dropnet serve --workers N``: N processes on one port, supervised."""

from __future__ import annotations

import os
import signal
import socket
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dropnet.cli import main
from dropnet.core.errors import ConfigError
from dropnet.protos.inference import grpc_service_pb2 as oip
from dropnet.protos.inference import grpc_service_pb2_grpc as oip_grpc
from dropnet.server.process import ServeProcess
from dropnet.server.settings import ServerSettings
from dropnet.server.workers import worker_settings
from tests.server.grpc_harness import models_dir_with
from tests.server.helpers import MODEL, digits_rows

CONNECTIONS = 24
"""Separate connections in the spreading test: all on one of two workers has probability 2 × 2^-24."""


def _infer_request() -> oip.ModelInferRequest:
    rows = digits_rows(1, seed=0)
    request = oip.ModelInferRequest(model_name=MODEL, raw_input_contents=[rows.tobytes()])
    request.inputs.add(name="x", datatype="FP32", shape=rows.shape)
    return request


def _requests_served(metrics_url: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=60).read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "dropnet_requests_total")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _start(tiny_package: Path, tmp_path: Path, workers: int = 2) -> tuple[ServeProcess, str, str, list[str], list[int]]:
    """A supervised server: the process, the shared gRPC host:port and REST URL, each worker's metrics URL and the
    worker pids."""
    serve = ServeProcess([
        "--models", str(models_dir_with(tiny_package, tmp_path)), "--port", "0", "--http-port", "0",
        "--metrics-port", "0", "--device", "cpu", "--reload-interval", "0", "--workers", str(workers),
    ])
    pids = [int(pid) for pid in serve.wait_for(r"started \d+ workers on port \d+ \(REST \d+\): pids ([\d ]+)$").group(1).split()]
    targets, rest, metrics = set(), set(), []
    for index in range(workers):
        metrics.append(serve.wait_for(rf"worker-{index} \S+: metrics at (http://\S+/metrics)").group(1))
        rest.add(serve.wait_for(rf"worker-{index} \S+: REST on (http://\S+:\d+)$").group(1))
        targets.add(serve.wait_for(rf"worker-{index} \S+: serving on (\S+:\d+)$").group(1))
    assert len(targets) == 1 and len(rest) == 1  # one gRPC port and one REST port for all
    return serve, targets.pop(), rest.pop(), metrics, pids


@pytest.mark.slow
def test_workers_share_one_port_connections_spread_and_sigint_stops_them_all(tiny_package: Path, tmp_path: Path) -> None:
    serve, target, rest, metrics, pids = _start(tiny_package, tmp_path)
    try:
        with urllib.request.urlopen(f"{rest}/v2/models/{MODEL}/ready", timeout=60) as ready:
            assert ready.status == 200
        for _ in range(CONNECTIONS):
            # a new TCP connection each time: no subchannel shared with the previous channel
            with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                answer = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(_infer_request(), timeout=60)
                assert "probabilities" in [output.name for output in answer.outputs]
        served = [_requests_served(url) for url in metrics]
        assert sum(served) == CONNECTIONS and min(served) > 0, served  # the REST check is not an inference
        serve.process.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C would: workers get it once, from the supervisor
        assert serve.process.wait(timeout=120) == 0
        assert not any(_alive(pid) for pid in pids)
        for index in range(2):
            assert sum(f"worker-{index} " in line and "SIGINT received: stopping" in line for line in serve.lines) == 1
            assert any(f"worker-{index} " in line and line.endswith("stopped") for line in serve.lines)
    finally:
        serve.kill()


@pytest.mark.slow
def test_a_worker_that_dies_stops_the_others_and_the_supervisor_exits_with_its_code(
    tiny_package: Path, tmp_path: Path
) -> None:
    serve, _, _, _, pids = _start(tiny_package, tmp_path)
    try:
        os.kill(pids[1], signal.SIGKILL)
        assert serve.process.wait(timeout=120) == 128 + signal.SIGKILL
        assert not _alive(pids[0])
        serve.wait_for(rf"worker 1 \(pid {pids[1]}\) exited with code 137: stopping the others")
    finally:
        serve.kill()


def test_a_port_taken_by_another_program_exits_2_before_any_worker_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--models", str(tmp_path), "--port", str(port), "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert f"dropnet serve: error: cannot listen on 127.0.0.1:{port}" in err and "started" not in err


def test_worker_settings_share_the_port_and_offset_the_metrics_port(tmp_path: Path) -> None:
    settings = ServerSettings(models_dir=tmp_path, port=0, metrics_port=9100, workers=3)
    third = worker_settings(settings, 50123, 2)
    assert (third.port, third.reuse_port, third.metrics_port, third.workers, third.http_port) == (50123, True, 9102, 3, None)
    assert worker_settings(settings.model_copy(update={"http_port": 0}), 50123, 2, http_port=50124).http_port == 50124
    assert worker_settings(settings.model_copy(update={"metrics_port": 0}), 50123, 2).metrics_port == 0
    assert worker_settings(settings.model_copy(update={"metrics_port": None}), 50123, 2).metrics_port is None
    with pytest.raises(ConfigError, match=r"worker 2 would serve metrics on port 65536; expected a port ≤ 65533"):
        worker_settings(settings.model_copy(update={"metrics_port": 65534}), 50123, 2)
