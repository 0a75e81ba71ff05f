"""dropnet's own service, dropnet.v1.Predictor, through its generated stub."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from dropnet.protos.dropnet.v1 import predictor_pb2 as v1
from dropnet.protos.dropnet.v1 import predictor_pb2_grpc as v1_grpc
from dropnet.server.tensors import decode_tensor
from dropnet.server.predictor import Predictor
from dropnet.server.security import public_manifest
from tests.server.grpc_harness import ServerThread, grpc_settings, models_dir_with
from tests.server.helpers import MODEL, digits_rows


@pytest.fixture(scope="module")
def server(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(grpc_settings(models_dir_with(tiny_package, tmp_path_factory.mktemp("v1")))) as running:
        yield running


@pytest.fixture(scope="module")
def stub(server: ServerThread) -> Iterator[v1_grpc.PredictorStub]:
    with server.channel() as channel:
        yield v1_grpc.PredictorStub(channel)


def _tensor(x: np.ndarray) -> v1.Tensor:
    return v1.Tensor(shape=x.shape, dtype=v1.DATA_TYPE_FLOAT32, data=x.astype("<f4").tobytes())


def _outputs(response: v1.PredictResponse) -> dict[str, np.ndarray]:
    return {
        field.name: decode_tensor(value, field.name) for field, value in response.ListFields() if field.message_type
    }


def test_deterministic_predict_matches_the_embedded_predictor(
    stub: v1_grpc.PredictorStub, tiny_predictor: Predictor
) -> None:
    x = digits_rows(4, seed=11)
    response = stub.Predict(v1.PredictRequest(model=MODEL, input=_tensor(x)), timeout=60)
    expected = tiny_predictor.predict(x)
    assert (response.model, response.version, response.HasField("seed")) == (MODEL, "1", False)
    outputs = _outputs(response)
    assert set(outputs) == {"probabilities", "predicted_class", "logits"}
    np.testing.assert_allclose(outputs["probabilities"], expected.probabilities, rtol=1e-6, atol=1e-7)
    assert outputs["predicted_class"].dtype == np.int64
    assert outputs["predicted_class"].tolist() == expected.predicted_class.tolist()


def test_uint8_input_is_accepted_and_converted(stub: v1_grpc.PredictorStub, tiny_predictor: Predictor) -> None:
    x = np.random.default_rng(0).integers(0, 17, size=(2, 1, 8, 8), dtype=np.uint8)
    tensor = v1.Tensor(shape=x.shape, dtype=v1.DATA_TYPE_UINT8, data=x.tobytes())
    response = stub.Predict(v1.PredictRequest(model=MODEL, input=tensor, outputs=["probabilities"]), timeout=60)
    expected = tiny_predictor.predict(x.astype(np.float32)).probabilities
    np.testing.assert_allclose(_outputs(response)["probabilities"], expected, rtol=1e-6, atol=1e-7)


def test_mc_predict_is_seeded_and_returns_samples_on_request(
    stub: v1_grpc.PredictorStub, tiny_predictor: Predictor
) -> None:
    x = digits_rows(3, seed=12)
    request = v1.PredictRequest(
        model=MODEL, version="1", input=_tensor(x), mode=v1.MODE_MC_DROPOUT, mc_samples=16, seed=42,
        outputs=["probabilities", "std", "predictive_entropy", "mutual_information", "samples"],
    )
    response = stub.Predict(request, timeout=60)
    expected = tiny_predictor.predict(x, mc_samples=16, seed=42, return_samples=True)
    assert response.seed == 42
    outputs = _outputs(response)
    assert list(outputs) == ["probabilities", "std", "predictive_entropy", "mutual_information", "samples"]
    for name, array in outputs.items():
        np.testing.assert_allclose(array, getattr(expected, name), rtol=1e-5, atol=1e-6, err_msg=name)
    assert outputs["samples"].shape == (16, 3, 10)
    assert stub.Predict(request, timeout=60) == response


def test_mc_predict_with_server_defaults_reports_its_seed(stub: v1_grpc.PredictorStub) -> None:
    x = digits_rows(2, seed=13)
    response = stub.Predict(v1.PredictRequest(model=MODEL, input=_tensor(x), mode=v1.MODE_MC_DROPOUT), timeout=60)
    assert response.HasField("seed")
    replay = stub.Predict(v1.PredictRequest(model=MODEL, input=_tensor(x), seed=response.seed), timeout=60)
    assert replay.probabilities == response.probabilities and replay.std == response.std


def test_list_models(stub: v1_grpc.PredictorStub) -> None:
    (model,) = stub.ListModels(v1.ListModelsRequest(), timeout=60).models
    assert (model.name, list(model.versions), model.latest, model.ready) == (MODEL, ["1"], "1", True)


def test_get_model_describes_the_manifest(stub: v1_grpc.PredictorStub, tiny_predictor: Predictor) -> None:
    manifest = public_manifest(tiny_predictor.manifest).to_dict()
    model = stub.GetModel(v1.GetModelRequest(name=MODEL), timeout=60)
    assert json.loads(model.manifest_json) == manifest
    assert (model.name, model.version) == (MODEL, "1")
    assert (model.input.name, model.input.dtype, list(model.input.shape)) == ("x", v1.DATA_TYPE_FLOAT32, [-1, 1, 8, 8])
    assert list(model.value_range) == manifest["input"]["value_range"]
    assert model.normalisation.mean == pytest.approx(manifest["input"]["normalisation"]["mean"])
    assert (model.task, list(model.classes), list(model.targets)) == (v1.TASK_CLASSIFICATION, manifest["classes"], [])
    assert model.dropout.flavour == manifest["dropout"]["flavour"]
    assert list(model.dropout.retain) == pytest.approx(manifest["dropout"]["retain"])
    assert list(model.max_norm) == pytest.approx([c or 0.0 for c in manifest["max_norm"]])
    assert (model.onnx.opset, model.mc.max_samples) == (manifest["onnx"]["opset"], manifest["mc"]["max_samples"])
    assert [o.name for o in model.deterministic_outputs] == ["probabilities", "predicted_class", "logits"]
    assert [(o.name, list(o.shape)) for o in model.mc_outputs][-1] == ("samples", [-1, -1, 10])


def test_get_model_of_an_unknown_version_is_not_found(stub: v1_grpc.PredictorStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetModel(v1.GetModelRequest(name=MODEL, version="7"), timeout=60)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no loaded version '7'" in caught.value.details()
