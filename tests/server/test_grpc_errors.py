"""Every way a request can fail, over the wire, with its status code and message."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dropnet.core.errors import QUOTE_LIMIT, InvalidInputError, ModelPackageError, quoted, quoted_list
from dropnet.protos.dropnet.v1 import predictor_pb2 as v1
from dropnet.protos.dropnet.v1 import predictor_pb2_grpc as v1_grpc
from dropnet.protos.inference import grpc_service_pb2 as oip
from dropnet.protos.inference import grpc_service_pb2_grpc as oip_grpc
from dropnet.server.grpc_errors import CUT, INTERNAL_MESSAGE, MAX_STATUS_MESSAGE_BYTES, bounded, status_of
from tests.server.grpc_harness import ServerThread, grpc_settings, models_dir_with
from tests.server.gating import GatedPredictor, hold_running_and_queued, raw_infer_request
from tests.server.helpers import MODEL, digits_rows

MAX_ROWS = 8
MAX_MC_SAMPLES = 50
MAX_MESSAGE_BYTES = 64 * 1024
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def models_dir(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models_dir_with(tiny_package, tmp_path_factory.mktemp("errors"))


@pytest.fixture(scope="module")
def server(models_dir: Path) -> Iterator[ServerThread]:
    settings = grpc_settings(
        models_dir, max_rows_per_request=MAX_ROWS, max_mc_samples=MAX_MC_SAMPLES, max_message_bytes=MAX_MESSAGE_BYTES
    )
    with ServerThread(settings) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with server.channel() as opened:
        yield opened


def _mc(request: oip.ModelInferRequest, samples: int) -> oip.ModelInferRequest:
    request.parameters["mc_samples"].int64_param = samples
    return request


def _code_and_details(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=60)
    return caught.value.code(), caught.value.details()


ROWS = digits_rows(2, seed=0)
OIP_CASES = {
    "wrong shape": (raw_infer_request(digits_rows(2, 0)[:, :, :7, :7].copy()), INVALID, "expected (batch, 1, 8, 8)"),
    "wrong dtype": (raw_infer_request(ROWS, datatype="BYTES"), INVALID, "datatype 'BYTES'; expected one of"),
    "wrong byte length": (raw_infer_request(ROWS, datatype="FP64"), INVALID, "has 512 bytes of data; expected 1024"),
    "non-finite values": (raw_infer_request(np.where(ROWS > 8, np.nan, ROWS).astype(np.float32)), INVALID, "non-finite"),
    "empty input": (raw_infer_request(np.zeros((0, 1, 8, 8), np.float32)), INVALID, "empty batch"),
    "unknown model": (raw_infer_request(ROWS, model="nope"), NOT_FOUND, "model 'nope' is not loaded"),
    "unknown version": (raw_infer_request(ROWS, model_version="9"), NOT_FOUND, "no loaded version '9'"),
    "unknown output": (
        raw_infer_request(ROWS, outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(name="entropy")]),
        INVALID, "unknown output(s) ['entropy']",
    ),
    "MC output in deterministic mode": (
        raw_infer_request(ROWS, outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(name="std")]),
        INVALID, "unknown output(s) ['std'] for mode 'deterministic'",
    ),
    "mc_samples above the max": (_mc(raw_infer_request(ROWS), MAX_MC_SAMPLES + 1), INVALID, "in 1..50, got 51"),
    "mc_samples zero": (_mc(raw_infer_request(ROWS), 0), INVALID, "in 1..50, got 0"),
    "too many rows": (raw_infer_request(digits_rows(MAX_ROWS + 1, 0)), INVALID, f"9 rows; expected at most {MAX_ROWS}"),
}


@pytest.mark.parametrize("case", OIP_CASES)
def test_oip_errors(channel: grpc.Channel, case: str) -> None:
    request, code, message = OIP_CASES[case]
    got_code, details = _code_and_details(oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer, request)
    assert got_code == code and message in details, details


def _predict(x: np.ndarray, dtype: int = v1.DATA_TYPE_FLOAT32, **fields: Any) -> v1.PredictRequest:
    return v1.PredictRequest(model=MODEL, input=v1.Tensor(shape=x.shape, dtype=dtype, data=x.tobytes()), **fields)


V1_CASES = {
    "wrong shape": (_predict(digits_rows(1, 0).reshape(1, 64)), INVALID, "x has shape (1, 64)"),
    "wrong dtype": (_predict(ROWS, dtype=v1.DATA_TYPE_UNSPECIFIED), INVALID, "dtype DATA_TYPE_UNSPECIFIED"),
    "wrong byte length": (_predict(ROWS, dtype=v1.DATA_TYPE_INT64), INVALID, "512 bytes of data; expected 1024"),
    "non-finite values": (_predict(np.full((1, 1, 8, 8), np.inf, np.float32)), INVALID, "64 non-finite value(s)"),
    "unknown model": (v1.PredictRequest(model="nope", input=_predict(ROWS).input), NOT_FOUND, "'nope' is not loaded"),
    "unknown version": (_predict(ROWS, version="9"), NOT_FOUND, "no loaded version '9'"),
    "unknown output": (_predict(ROWS, outputs=["nope"]), INVALID, "unknown output(s) ['nope']"),
    "mc_samples above the max": (_predict(ROWS, mc_samples=MAX_MC_SAMPLES + 1), INVALID, "got 51"),
    "seed in deterministic mode": (_predict(ROWS, mode=v1.MODE_DETERMINISTIC, seed=1), INVALID, "MODE_MC_DROPOUT only"),
    "too many rows": (_predict(digits_rows(MAX_ROWS + 1, 0)), INVALID, "9 rows; expected at most 8"),
}


@pytest.mark.parametrize("case", V1_CASES)
def test_v1_errors(channel: grpc.Channel, case: str) -> None:
    request, code, message = V1_CASES[case]
    got_code, details = _code_and_details(v1_grpc.PredictorStub(channel).Predict, request)
    assert got_code == code and message in details, details


def test_get_model_reports_the_sample_limit_requests_are_held_to(channel: grpc.Channel) -> None:
    model = v1_grpc.PredictorStub(channel).GetModel(v1.GetModelRequest(name=MODEL), timeout=60)
    assert model.mc.max_samples == MAX_MC_SAMPLES  # the server's limit, below the package's 1000


def test_requests_refused_for_their_encoding_are_counted(server: ServerThread, channel: grpc.Channel) -> None:
    def refused(model: str) -> float:
        labels = {"model": model, "mode": "_unknown", "code": "INVALID_ARGUMENT"}
        return server.server.dataplane.metrics.registry.get_sample_value("dropnet_requests_total", labels) or 0.0

    before = {model: refused(model) for model in (MODEL, "_unknown")}
    _code_and_details(oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer, raw_infer_request(ROWS, datatype="BYTES"))
    unknown_model = v1.PredictRequest(model="nope", input=_predict(ROWS, dtype=v1.DATA_TYPE_UNSPECIFIED).input)
    _code_and_details(v1_grpc.PredictorStub(channel).Predict, unknown_model)
    assert {model: refused(model) - count for model, count in before.items()} == {MODEL: 1.0, "_unknown": 1.0}


def test_model_metadata_of_an_unknown_model_is_not_found(channel: grpc.Channel) -> None:
    stub = oip_grpc.GRPCInferenceServiceStub(channel)
    code, details = _code_and_details(stub.ModelMetadata, oip.ModelMetadataRequest(name="nope"))
    assert code == NOT_FOUND and "'nope'" in details


def test_messages_over_the_size_limit_are_refused(channel: grpc.Channel) -> None:
    big = digits_rows(MAX_MESSAGE_BYTES // 256 + 1, seed=0)  # 256 bytes per row
    code, _ = _code_and_details(oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer, raw_infer_request(big))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    small = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(raw_infer_request(ROWS), timeout=60)
    assert small.model_name == MODEL


@pytest.mark.parametrize(
    "failure", [RuntimeError("secret detail"), ModelPackageError("/srv/secret detail/manifest.json is corrupt")]
)
def test_unexpected_errors_are_internal_with_a_generic_message(
    models_dir: Path, gated: list[GatedPredictor], caplog: pytest.LogCaptureFixture, failure: Exception
) -> None:
    with ServerThread(grpc_settings(models_dir)) as server, server.channel() as channel:
        gated[0].failure = failure
        with caplog.at_level(logging.ERROR, logger="dropnet.server.grpc_errors"):
            code, details = _code_and_details(oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer, raw_infer_request(ROWS))
            v1_code, v1_details = _code_and_details(v1_grpc.PredictorStub(channel).Predict, _predict(ROWS))
    assert (code, details) == (v1_code, v1_details) == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
    logged = [r for r in caplog.records if r.name == "dropnet.server.grpc_errors"]
    assert len(logged) == 2 and all(r.exc_info[1] is failure for r in logged)


def test_a_full_queue_is_resource_exhausted(models_dir: Path, gated: list[GatedPredictor]) -> None:
    settings = grpc_settings(models_dir, max_queue_size=1, batching=False, inference_workers=1)
    with ServerThread(settings) as server, server.channel() as channel:
        (predictor,) = gated
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        try:
            running, waiting = hold_running_and_queued(server, stub, predictor, ROWS, timeout=60)
            code, details = _code_and_details(stub.ModelInfer, raw_infer_request(ROWS))
        finally:
            predictor.gate.set()
        assert running.result().model_name == waiting.result().model_name == MODEL
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "1 requests waiting" in details


def test_deadlines_are_honoured_and_the_server_stays_healthy(models_dir: Path, gated: list[GatedPredictor]) -> None:
    with ServerThread(grpc_settings(models_dir)) as server, server.channel() as channel:
        (predictor,) = gated
        predictor.gate.clear()
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        try:
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(_mc(raw_infer_request(ROWS), 10), timeout=0.2)
        finally:
            predictor.gate.set()
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=60)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert stub.ModelInfer(_mc(raw_infer_request(ROWS), 10), timeout=60).model_name == MODEL


def test_quoted_strings_and_lists_stay_short() -> None:
    assert quoted("nope") == "'nope'" and quoted(7) == "'7'"
    assert quoted("x" * 20_000) == repr("x" * QUOTE_LIMIT) + "... (20000 characters)"
    assert quoted_list(["a", "b"]) == "['a', 'b']" and quoted_list([]) == "[]"
    many = quoted_list(f"name-{i}" for i in range(2_000))
    assert many == "['name-0', 'name-1', 'name-2', 'name-3', 'name-4', ... 1995 more]"
    assert len(quoted_list(["y" * 10_000] * 10)) < 6 * (QUOTE_LIMIT + 30)


@pytest.mark.parametrize("text", ["a" * 10_000, "%" * 10_000, "é" * 10_000, "\n" * 10_000, "\U0001F600" * 10_000])
def test_status_messages_fit_the_trailer_whatever_they_hold(text: str) -> None:
    message = bounded(f"model {text} is not loaded")
    wire = sum(1 if " " <= c <= "~" and c != "%" else 3 * len(c.encode()) for c in message)
    assert MAX_STATUS_MESSAGE_BYTES - 12 <= wire <= MAX_STATUS_MESSAGE_BYTES and message.endswith(CUT)
    assert bounded("short message") == "short message"
    code, details = status_of(InvalidInputError(f"bad {text}"))
    assert code == INVALID and details.startswith("bad ") and details.endswith(CUT)
