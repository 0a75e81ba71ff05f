"""Around the inference services: health, reflection, binding, and `dropnet serve` with its graceful stop."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import sys
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

from dropnet.cli import main
from dropnet.core.errors import ConfigError, UnavailableError
from dropnet.protos.inference import grpc_service_pb2 as oip
from dropnet.protos.inference import grpc_service_pb2_grpc as oip_grpc
from dropnet.server import providers
from dropnet.server.app import HEALTH_NAMES, INFERENCE_SERVICE, PREDICTOR_SERVICE, GrpcServer
from dropnet.server.cli_serve import StopSignals, add_arguments, loop_factory, settings_from_args
from dropnet.server.dataplane import InferRequest
from dropnet.server.process import ServeProcess
from dropnet.server.settings import ServerSettings
from tests.server.grpc_harness import ServerThread, grpc_settings, models_dir_with, wait_until
from tests.server.helpers import MODEL, digits_rows

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


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
    docs = [" ".join((field.description or "").split()) for field in ServerSettings.model_fields.values()]
    assert all(docs)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    assert all(doc in help_text for doc in docs)
    assert settings_from_args(parser.parse_args(["--models", "m"])) == ServerSettings(models_dir=Path("m"))
    args = parser.parse_args([
        "--models", "m", "--host", "0.0.0.0", "--port", "0", "--metrics-port", "9100", "--device", "cpu",
        "--intra-op-threads", "2", "--inference-workers", "3", "--no-batching", "--max-batch-size", "8",
        "--max-queue-delay-ms", "0.5", "--max-queue-size", "4", "--max-message-bytes", "2048",
        "--max-mc-samples", "7", "--max-rows-per-request", "9", "--reload-interval", "0", "--grace", "2.5",
    ])
    assert settings_from_args(args) == ServerSettings(
        models_dir=Path("m"), host="0.0.0.0", port=0, metrics_port=9100, device="cpu", intra_op_threads=2,
        inference_workers=3, batching=False, max_batch_size=8, max_queue_delay_ms=0.5, max_queue_size=4,
        max_message_bytes=2048, max_mc_samples=7, max_rows_per_request=9, reload_interval_s=0.0, shutdown_grace_s=2.5,
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "70000"], r"port must be an int in \[0, 65535\], got 70000"),
        (["--max-batch-size", "0"], r"max_batch_size must be an int >= 1, got 0"),
        (["--grace", "-1"], r"shutdown_grace_s must be a finite float >= 0, got -1\.0"),
        (["--device", "tpu"], r"device must be one of \['auto', 'cpu', 'cuda'\], got 'tpu'"),
    ],
)
def test_serve_with_a_bad_flag_exits_2_with_the_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert main(["serve", "--models", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dropnet serve: error: ") and re.search(message, err) and "Traceback" not in err


@pytest.mark.skipif(providers.cuda_status()[0], reason="needs a machine where CUDA is not usable")
def test_serve_on_cuda_without_cuda_exits_2(
    models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--models", str(models_dir), "--port", "0", "--device", "cuda", "--reload-interval", "0"]) == 2
    err = capsys.readouterr().err
    assert "dropnet serve: error: device 'cuda' was requested but CUDA is not usable" in err


def test_event_loop_auto_takes_uvloop_where_installed_and_asyncio_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvloop

    assert loop_factory("auto") is uvloop.new_event_loop and loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loop_factory("auto") is None
    with pytest.raises(ConfigError, match="--event-loop uvloop: uvloop is not installed; expected `pip install uvloop`"):
        loop_factory("uvloop")


def test_a_failed_start_stops_the_data_plane(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def fail(self: GrpcServer) -> None:
        raise RuntimeError("health service broke")

    monkeypatch.setattr(GrpcServer, "_sync_health", fail)
    server = GrpcServer(grpc_settings(models_dir, reload_interval_s=0.05, metrics_port=0))

    async def start_and_fail() -> list[str]:
        with pytest.raises(RuntimeError, match="health service broke"):
            await server.start()
        return [task.get_name() for task in asyncio.all_tasks() if task is not asyncio.current_task()]

    assert asyncio.run(start_and_fail()) == []  # no reload task left behind
    assert not server.dataplane.live() and server.dataplane.metrics_port is None
    with pytest.raises(UnavailableError, match="shutting down"):  # the worker pool is shut down
        asyncio.run(server.dataplane.infer(InferRequest(MODEL, None, digits_rows(1, 0))))


def test_stop_leaves_no_task_behind(models_dir: Path) -> None:
    async def start_and_stop() -> list[str]:
        server = GrpcServer(grpc_settings(models_dir, reload_interval_s=0.05))
        await server.start()
        await server.stop(grace=0)
        return [task.get_name() for task in asyncio.all_tasks() if task is not asyncio.current_task()]

    assert asyncio.run(start_and_stop()) == []


def test_a_second_stop_signal_forces_an_exit_with_128_plus_its_number() -> None:
    exits: list[int] = []

    async def signal_twice() -> bool:
        signals = StopSignals(force_exit=exits.append)
        signals.received(signal.SIGTERM)
        assert exits == []
        signals.received(signal.SIGINT)
        return signals.requested.is_set()

    assert asyncio.run(signal_twice())
    assert exits == [128 + signal.SIGINT]


BLOCKED_LOAD = """
import sys
from dropnet.cli import main
from dropnet.server.predictor import Predictor

real_load = Predictor.load


def load(*args, **kwargs):
    print("load blocked", file=sys.stderr, flush=True)
    with open(sys.argv[1], "rb"):  # a FIFO: blocks until the test opens it for writing
        pass
    return real_load(*args, **kwargs)


Predictor.load = staticmethod(load)
sys.exit(main(["serve", *sys.argv[2:]]))
"""
"""``dropnet serve`` whose model loading blocks on the FIFO given as its first argument."""


@pytest.fixture
def blocked_serve(models_dir: Path, tmp_path: Path) -> Iterator[tuple[ServeProcess, Path]]:
    fifo = tmp_path / "release-load"
    os.mkfifo(fifo)
    serve = ServeProcess(
        [str(fifo), "--models", str(models_dir), "--port", "0", "--device", "cpu", "--reload-interval", "0"],
        command=[sys.executable, "-c", BLOCKED_LOAD],
    )
    try:
        serve.wait_for("load blocked")
        yield serve, fifo
    finally:
        serve.kill()


@pytest.mark.slow
def test_a_signal_while_loading_stops_cleanly_and_exits_zero(blocked_serve: tuple[ServeProcess, Path]) -> None:
    serve, fifo = blocked_serve
    serve.process.send_signal(signal.SIGTERM)
    serve.wait_for("stopping before the models finished loading")
    serve.wait_for(r"\bstopped$")
    os.close(os.open(fifo, os.O_WRONLY))  # let the loading thread finish, so the process can exit
    assert serve.process.wait(timeout=120) == 0
    assert not any("serving on" in line for line in serve.lines)


@pytest.mark.slow
def test_a_second_signal_exits_at_once_and_non_zero(blocked_serve: tuple[ServeProcess, Path]) -> None:
    serve, _ = blocked_serve  # the FIFO is never opened: without a forced exit, stopping would wait for ever
    serve.process.send_signal(signal.SIGTERM)
    serve.wait_for("SIGTERM received: stopping")
    serve.process.send_signal(signal.SIGTERM)
    assert serve.process.wait(timeout=120) == 128 + signal.SIGTERM
    serve.wait_for("second SIGTERM received: exiting now with code 143")


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
    serve = ServeProcess([
        "--models", str(models), "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--device", "cpu",
        "--no-batching", "--inference-workers", "1", "--reload-interval", "0", "--grace", "120",
    ])
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
        assert any(line.endswith("event loop: uvloop") for line in serve.lines)  # --event-loop auto, uvloop installed
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as caught:
            oip_grpc.GRPCInferenceServiceStub(channel).ServerLive(oip.ServerLiveRequest(), timeout=60)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        serve.kill()
