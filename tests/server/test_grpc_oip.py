"""The KServe v2 / Open Inference Protocol service, driven by Triton's own client (tritonclient.grpc)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tc

from dropnet.protos.inference import grpc_service_pb2 as oip
from dropnet.protos.inference import grpc_service_pb2_grpc as oip_grpc
from dropnet.server.predictor import Predictor
from tests.server.grpc_harness import ServerThread, grpc_settings, models_dir_with
from tests.server.helpers import MODEL, digits_rows


CLASSES = 10


@pytest.fixture(scope="module")
def server(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(grpc_settings(models_dir_with(tiny_package, tmp_path_factory.mktemp("oip")))) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator["tc.InferenceServerClient"]:
    triton = tc.InferenceServerClient(server.target)
    yield triton
    triton.close()


def _input(x: np.ndarray) -> "tc.InferInput":
    tensor = tc.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def test_health_rpcs(client: "tc.InferenceServerClient") -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready(MODEL, "2")
    assert not client.is_model_ready("no-such-model")


def test_server_metadata(client: "tc.InferenceServerClient") -> None:
    from dropnet import __version__

    metadata = client.get_server_metadata(as_json=True)
    assert (metadata["name"], metadata["version"]) == ("dropnet", __version__)


def test_model_metadata_lists_the_input_and_every_output(client: "tc.InferenceServerClient") -> None:
    metadata = client.get_model_metadata(MODEL, as_json=True)
    assert (metadata["name"], metadata["versions"], metadata["platform"]) == (MODEL, ["1"], "onnxruntime_onnx")
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "1", "8", "8"]}]
    outputs = {o["name"]: (o["datatype"], [int(d) for d in o["shape"]]) for o in metadata["outputs"]}
    assert outputs == {
        "probabilities": ("FP32", [-1, CLASSES]),
        "predicted_class": ("INT64", [-1]),
        "logits": ("FP32", [-1, CLASSES]),
        "std": ("FP32", [-1, CLASSES]),
        "predictive_entropy": ("FP32", [-1]),
        "mutual_information": ("FP32", [-1]),
        "samples": ("FP32", [-1, -1, CLASSES]),
    }


def test_deterministic_raw_infer_matches_the_embedded_predictor(
    client: "tc.InferenceServerClient", tiny_predictor: Predictor
) -> None:
    x = digits_rows(5, seed=1)
    result = client.infer(MODEL, [_input(x)])
    expected = tiny_predictor.predict(x)
    response = result.get_response()
    assert (response.model_name, response.model_version) == (MODEL, "1")
    assert [o.name for o in response.outputs] == ["probabilities", "predicted_class", "logits"]
    assert len(response.raw_output_contents) == 3  # raw in, raw out
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected.probabilities, rtol=1e-6, atol=1e-7)
    assert result.as_numpy("predicted_class").tolist() == expected.predicted_class.tolist()
    assert "seed" not in response.parameters


def test_typed_contents_infer_through_the_generated_stub(server: ServerThread, tiny_predictor: Predictor) -> None:
    x = digits_rows(3, seed=2)
    request = oip.ModelInferRequest(model_name=MODEL, model_version="1", id="typed-1")
    contents = oip.InferTensorContents(fp32_contents=x.ravel())
    request.inputs.add(name="x", datatype="FP32", shape=x.shape, contents=contents)
    with server.channel() as channel:
        response = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    assert response.id == "typed-1" and not response.raw_output_contents
    by_name = {o.name: o for o in response.outputs}
    probabilities = np.array(by_name["probabilities"].contents.fp32_contents, np.float32).reshape(3, 10)
    assert list(by_name["probabilities"].shape) == [3, 10]
    expected = tiny_predictor.predict(x)
    np.testing.assert_allclose(probabilities, expected.probabilities, rtol=1e-6, atol=1e-7)
    assert list(by_name["predicted_class"].contents.int64_contents) == expected.predicted_class.tolist()


def test_mc_infer_with_parameters_is_seeded_and_reproducible(
    client: "tc.InferenceServerClient", tiny_predictor: Predictor
) -> None:
    x = digits_rows(4, seed=3)
    first = client.infer(MODEL, [_input(x)], parameters={"mc_samples": 20, "seed": 7})
    again = client.infer(MODEL, [_input(x)], parameters={"mc_samples": 20, "seed": 7})
    other = client.infer(MODEL, [_input(x)], parameters={"mc_samples": 20, "seed": 8})
    expected = tiny_predictor.predict(x, mc_samples=20, seed=7)
    assert first.get_response().parameters["seed"].int64_param == 7
    assert [o.name for o in first.get_response().outputs] == [
        "probabilities", "predicted_class", "std", "predictive_entropy", "mutual_information",
    ]
    for name in ("probabilities", "std", "predictive_entropy", "mutual_information"):
        np.testing.assert_allclose(first.as_numpy(name), getattr(expected, name), rtol=1e-5, atol=1e-6, err_msg=name)
        assert np.array_equal(first.as_numpy(name), again.as_numpy(name)), name
    assert not np.array_equal(first.as_numpy("probabilities"), other.as_numpy("probabilities"))
    assert first.as_numpy("std").shape == (4, CLASSES) and first.as_numpy("mutual_information").shape == (4,)


def test_mc_without_a_seed_reports_the_one_it_drew(client: "tc.InferenceServerClient") -> None:
    x = digits_rows(2, seed=4)
    drawn = client.infer(MODEL, [_input(x)], parameters={"mc_samples": 10})
    seed = drawn.get_response().parameters["seed"].int64_param
    replay = client.infer(MODEL, [_input(x)], parameters={"mc_samples": 10, "seed": seed})
    assert np.array_equal(drawn.as_numpy("probabilities"), replay.as_numpy("probabilities"))


def test_requested_outputs_are_honoured(client: "tc.InferenceServerClient") -> None:
    x = digits_rows(3, seed=5)
    wanted = [tc.InferRequestedOutput("samples"), tc.InferRequestedOutput("mutual_information")]
    result = client.infer(MODEL, [_input(x)], outputs=wanted, parameters={"mc_samples": 6, "seed": 1})
    assert [o.name for o in result.get_response().outputs] == ["samples", "mutual_information"]
    samples = result.as_numpy("samples")
    assert samples.shape == (6, 3, CLASSES)
    np.testing.assert_allclose(samples.sum(axis=2), 1.0, rtol=1e-5)
    assert result.as_numpy("probabilities") is None
    logits = client.infer(MODEL, [_input(x)], outputs=[tc.InferRequestedOutput("logits")])
    assert [o.name for o in logits.get_response().outputs] == ["logits"]
    assert logits.as_numpy("logits").shape == (3, CLASSES)
