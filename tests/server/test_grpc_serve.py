"""Around the inference services: health, reflection, binding, and `dropnet serve` with its graceful stop."""

from __future__ import annotations

import argparse
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from dropnet.errors import ConfigError
from protos.inference import grpc_service_pb2 as oip
from protos.inference import grpc_service_pb2_grpc as oip_grpc
from server.app import HEALTH_NAMES, INFERENCE_SERVICE, PREDICTOR_SERVICE
from dropnet.fielddocs import field_docs
from server.cli_serve import add_arguments, settings_from_args
from server.settings import ServerSettings
from tests.server.grpc_harness import ServerThread, grpc_settings, models_dir_with, wait_until
from tests.server.helpers import MODEL, digits_rows

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(grpc_settings(models_dir_with(tiny_package, tmp_path_factory.mktemp("serve")))) as running:
        yield running


def test_health_is_serving_for_the_server_and_each_service(server: ServerThread) -> None:
    with server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in HEALTH_NAMES:
            assert health.Check(health_pb2.HealthCheckRequest(service=name), timeout=60).status == SERVING, name
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=60)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_follows_readiness_across_a_reload(tiny_package: Path, tmp_path: Path) -> None:
    models = models_dir_with(tiny_package, tmp_path)
    broken = models / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{}")
    with ServerThread(grpc_settings(models, reload_interval_s=0.1)) as server, server.channel() as channel:
        assert not oip_grpc.GRPCInferenceServiceStub(channel).ServerReady(oip.ServerReadyRequest(), timeout=60).ready
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
        assert next(watch).status == NOT_SERVING
        shutil.rmtree(broken)
        shutil.copytree(tiny_package, broken)
        assert next(watch).status == SERVING
        watch.cancel()
        ready = oip_grpc.GRPCInferenceServiceStub(channel).ModelReady(oip.ModelReadyRequest(name="broken"), timeout=60)
        assert ready.ready


def _reflect(
    channel: grpc.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (response,) = stub.ServerReflectionInfo(iter([request]), timeout=60)
    return response


def test_reflection_lists_and_describes_every_service(server: ServerThread) -> None:
    with server.channel() as channel:
        listed = _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
        names = {service.name for service in listed.list_services_response.service}
        assert names >= {PREDICTOR_SERVICE, INFERENCE_SERVICE, "grpc.health.v1.Health"}
        for symbol, file_name in ((INFERENCE_SERVICE, "inference/grpc_service.proto"),
                                  (PREDICTOR_SERVICE, "dropnet/v1/predictor.proto")):
            found = _reflect(channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
            files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
                     for raw in found.file_descriptor_response.file_descriptor_proto]
            assert [f.name for f in files] == [file_name]
            assert symbol.rpartition(".")[2] in [s.name for s in files[0].service]


def test_a_port_in_use_is_a_config_error(server: ServerThread, tmp_path: Path) -> None:
    settings = grpc_settings(server.server.settings.models_dir, port=server.port)
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{server.port}"):
        with ServerThread(settings):
            pass


def test_every_settings_field_has_a_documented_flag() -> None:
    docs = field_docs(ServerSettings)
    assert set(docs) == set(ServerSettings.__dataclass_fields__) and all(docs.values())
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    assert all(doc in help_text for doc in docs.values())
    assert settings_from_args(parser.parse_args(["--models", "m"])) == ServerSettings(models_dir=Path("m"))
    args = parser.parse_args([
        "--models", "m", "--host", "0.0.0.0", "--port", "0", "--metrics-port", "9100", "--device", "cpu",
        "--intra-op-threads", "2", "--inference-workers", "3", "--no-batching", "--max-batch-size", "8",
        "--max-queue-delay-ms", "0.5", "--max-queue-size", "4", "--max-message-bytes", "1000",
        "--max-mc-samples", "7", "--max-rows-per-request", "9", "--reload-interval", "0", "--grace", "2.5",
    ])
    assert settings_from_args(args) == ServerSettings(
        models_dir=Path("m"), host="0.0.0.0", port=0, metrics_port=9100, device="cpu", intra_op_threads=2,
        inference_workers=3, batching=False, max_batch_size=8, max_queue_delay_ms=0.5, max_queue_size=4,
        max_message_bytes=1000, max_mc_samples=7, max_rows_per_request=9, reload_interval_s=0.0, shutdown_grace_s=2.5,
    )


class ServeProcess:
    """``dropnet serve`` as a subprocess; its stderr lines are collected by a reader thread."""

    def __init__(self, *flags: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dropnet.cli", "serve", *flags],
            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            self._new.put(line)
        self._new.put(None)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first stderr line matching ``pattern`` (fails if the process exits first)."""
        for line in self.lines:
            if match := re.search(pattern, line):
                return match
        while (line := self._new.get(timeout=120)) is not None:
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"dropnet serve exited without logging {pattern!r}:\n{''.join(self.lines)}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join()


def _mc_request(rows: np.ndarray, seed: int) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=MODEL, raw_input_contents=[rows.tobytes()])
    request.inputs.add(name="x", datatype="FP32", shape=rows.shape)
    request.parameters["mc_samples"].int64_param = 1000
    request.parameters["seed"].int64_param = seed
    return request


def _arrived(metrics_url: str) -> int:
    """Requests the server has started running or holds in its queue."""
    text = urllib.request.urlopen(metrics_url, timeout=60).read().decode()
    values = {sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples}
    return int(values.get("dropnet_batch_rows_count", 0) + values.get("dropnet_queue_depth", 0))


@pytest.mark.slow
def test_sigterm_finishes_in_flight_requests_then_exits_zero(tiny_package: Path, tmp_path: Path) -> None:
    models = models_dir_with(tiny_package, tmp_path)
    serve = ServeProcess(
        "--models", str(models), "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--device", "cpu",
        "--no-batching", "--inference-workers", "1", "--reload-interval", "0", "--grace", "120",
    )
    try:
        metrics_url = serve.wait_for(r"metrics at (http://\S+/metrics)").group(1)
        port = int(serve.wait_for(r"serving on 127\.0\.0\.1:(\d+)").group(1))
        rows = digits_rows(64, seed=0)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            in_flight = [stub.ModelInfer.future(_mc_request(rows, seed), timeout=300) for seed in range(4)]
            wait_until(lambda: _arrived(metrics_url) == len(in_flight), "every request reached the server")
            serve.process.send_signal(signal.SIGTERM)
            answers = [future.result() for future in in_flight]
        assert [len(answer.outputs) for answer in answers] == [5] * 4
        assert [answer.parameters["seed"].int64_param for answer in answers] == [0, 1, 2, 3]
        assert serve.process.wait(timeout=120) == 0
        assert any("stopped" in line for line in serve.lines)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as caught:
            oip_grpc.GRPCInferenceServiceStub(channel).ServerLive(oip.ServerLiveRequest(), timeout=60)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        serve.close()
