"""What a request may cost: rows × max(T, 1) × the model's activation bytes per row and sample,
refused above the server's limit with RESOURCE_EXHAUSTED, saying the cost, the limit and what fits;
and where the per-sample size comes from (the manifest, or measured for older packages)."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dropnet.core.errors import InvalidInputError, ModelPackageError, ResourceExhaustedError
from dropnet.core.manifest import FORMAT_V1, MANIFEST_FILE
from dropnet.protos.dropnet.v1 import predictor_pb2 as v1
from dropnet.protos.dropnet.v1 import predictor_pb2_grpc as v1_grpc
from dropnet.protos.inference import grpc_service_pb2 as oip
from dropnet.protos.inference import grpc_service_pb2_grpc as oip_grpc
from dropnet.server.predictor import Predictor
from dropnet.server.request import check_request
from tests.server.grpc_harness import ServerThread, grpc_settings, models_dir_with
from tests.server.helpers import MODEL, digits_rows

ROWS, T = 10, 50


def _refusal(predictor: Predictor, rows: int, samples: int | None, limit: int, **checks: Any) -> str:
    mode = "deterministic" if samples is None else "mc"
    with pytest.raises(ResourceExhaustedError) as refused:
        check_request(predictor, digits_rows(rows, 0), mode, samples, None, max_cost_bytes=limit, **checks)
    return str(refused.value)


def test_a_request_over_the_cost_limit_is_refused_saying_the_cost_the_limit_and_what_fits(
    tiny_predictor: Predictor,
) -> None:
    s = tiny_predictor.sample_bytes
    cost = ROWS * T * s
    assert _refusal(tiny_predictor, ROWS, T, cost - 1) == (
        f"the request costs {cost} bytes ({ROWS} rows × {T} samples × {s} bytes per row and sample); "
        f"the limit is {cost - 1} bytes per request: at most {ROWS - 1} rows fit at mc_samples {T}"
    )
    checked = check_request(tiny_predictor, digits_rows(ROWS, 0), "mc", T, 1, max_cost_bytes=cost)  # at the limit
    assert checked.num_samples == T and checked.x.shape[0] == ROWS


def test_a_deterministic_request_counts_as_one_sample(tiny_predictor: Predictor) -> None:
    s = tiny_predictor.sample_bytes
    message = _refusal(tiny_predictor, ROWS, None, ROWS * s - 1)
    assert f"costs {ROWS * s} bytes ({ROWS} rows (deterministic: 1 sample) × {s} bytes" in message
    assert message.endswith(f"at most {ROWS - 1} rows fit")
    assert check_request(tiny_predictor, digits_rows(ROWS, 0), max_cost_bytes=ROWS * s).num_samples == 0


def test_when_not_one_row_fits_the_message_says_how_many_samples_would(tiny_predictor: Predictor) -> None:
    s = tiny_predictor.sample_bytes
    assert _refusal(tiny_predictor, 1, T, (T - 1) * s).endswith(
        f"not one row fits at mc_samples {T}; one row fits up to mc_samples {T - 1}"
    )
    assert _refusal(tiny_predictor, 1, None, s - 1).endswith("not one row of this model fits")


def test_the_row_and_sample_limits_still_apply_on_their_own(tiny_predictor: Predictor) -> None:
    generous = 10**12
    with pytest.raises(InvalidInputError, match="expected at most 4 rows per request"):
        check_request(tiny_predictor, digits_rows(5, 0), max_rows=4, max_cost_bytes=generous)
    with pytest.raises(InvalidInputError, match=f"mc_samples must be an integer in 1..{tiny_predictor.max_mc_samples}"):
        check_request(
            tiny_predictor, digits_rows(1, 0), "mc", tiny_predictor.max_mc_samples + 1, max_cost_bytes=generous
        )


@pytest.fixture(scope="module")
def server(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    limit = ROWS * T * Predictor.load(tiny_package, device="cpu").sample_bytes
    models = models_dir_with(tiny_package, tmp_path_factory.mktemp("cost"))
    settings = grpc_settings(models, max_request_cost_bytes=limit)
    with ServerThread(settings) as running:
        yield running


def _details(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=60)
    return caught.value.code(), caught.value.details()


def test_both_apis_refuse_a_costly_request_with_resource_exhausted(
    server: ServerThread, tiny_predictor: Predictor
) -> None:
    x, limit = digits_rows(ROWS + 1, 0), ROWS * T * tiny_predictor.sample_bytes
    expected = f"the limit is {limit} bytes per request: at most {ROWS} rows fit at mc_samples {T}"
    predict = v1.PredictRequest(
        model=MODEL, input=v1.Tensor(shape=x.shape, dtype=v1.DATA_TYPE_FLOAT32, data=x.tobytes()),
        mode=v1.MODE_MC_DROPOUT, mc_samples=T, seed=1,
    )
    infer = oip.ModelInferRequest(model_name=MODEL, raw_input_contents=[x.tobytes()])
    infer.inputs.add(name="x", datatype="FP32", shape=x.shape)
    infer.parameters["mc_samples"].int64_param = T
    with server.channel() as channel:
        v1_stub, oip_stub = v1_grpc.PredictorStub(channel), oip_grpc.GRPCInferenceServiceStub(channel)
        for call, request in ((v1_stub.Predict, predict), (oip_stub.ModelInfer, infer)):
            code, details = _details(call, request)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and expected in details, details
        predict.input.CopyFrom(v1.Tensor(shape=(ROWS, 1, 8, 8), dtype=v1.DATA_TYPE_FLOAT32, data=x[:ROWS].tobytes()))
        answer = v1_stub.Predict(predict, timeout=60)  # at the limit: served
        assert list(answer.probabilities.shape) == [ROWS, 10]


def _rewritten(package: Path, destination: Path, change: Any) -> Path:
    copy = Path(shutil.copytree(package, destination))
    raw = json.loads((copy / MANIFEST_FILE).read_text())
    change(raw)
    (copy / MANIFEST_FILE).write_text(json.dumps(raw))
    return copy


def _to_format_1(raw: dict) -> None:
    raw["format"] = FORMAT_V1
    del raw["task"], raw["dropout"]["sites"], raw["mc"]["sample_bytes"]


@pytest.mark.parametrize(
    "change", [_to_format_1, lambda raw: raw["mc"].pop("sample_bytes")], ids=["format 1", "format 2 without it"]
)
def test_a_manifest_without_sample_bytes_loads_with_it_measured_and_logged_once(
    tiny_package: Path, tiny_predictor: Predictor, tmp_path: Path, caplog: pytest.LogCaptureFixture, change: Any
) -> None:
    package = _rewritten(tiny_package, tmp_path / "old", change)
    with caplog.at_level(logging.INFO, logger="dropnet.server.predictor"):
        old = Predictor.load(package, device="cpu")
    assert old.manifest.mc.sample_bytes is None
    assert old.sample_bytes == tiny_predictor.sample_bytes == tiny_predictor.manifest.mc.sample_bytes
    logged = [r.getMessage() for r in caplog.records if "has no mc.sample_bytes" in r.getMessage()]
    assert len(logged) == 1 and f"measured {old.sample_bytes} activation bytes per row and sample" in logged[0]


@pytest.mark.parametrize("value", [0, -5, 1.5, "big", None])
def test_a_bad_sample_bytes_is_refused_naming_it(tiny_package: Path, tmp_path: Path, value: Any) -> None:
    package = _rewritten(tiny_package, tmp_path / "bad", lambda raw: raw["mc"].update(sample_bytes=value))
    with pytest.raises(ModelPackageError, match="mc.sample_bytes must be an integer >= 1, got"):
        Predictor.load(package, device="cpu")
