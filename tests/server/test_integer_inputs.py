"""A package whose input is int64 token ids: loaded, checked, converted and served by the manifest's dtype."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from dropnet.core.errors import InvalidInputError
from dropnet.core.errors import ModelPackageError
from dropnet.core.manifest import (
    DETERMINISTIC_FILE,
    MANIFEST_FILE,
    MC_FILE,
    DropoutSite,
    DropoutSpec,
    InputSpec,
    OnnxVersions,
    build_manifest,
)
from dropnet.exporter.onnx_graph import IR_VERSION, OPSET
from dropnet.server import codecs
from dropnet.server.dataplane import DataPlane, InferRequest
from dropnet.server.predictor import Predictor
from dropnet.server.request import check_request
from tests.server.handmade import repeated_samples, samples_output, serialised, write_package
from tests.server.helpers import make_settings

TOKENS, VOCABULARY, CLASSES = 4, 50, 3


def _graph(mc: bool, embedding: np.ndarray) -> bytes:
    """Mean of the tokens' embeddings as logits; the mc graph repeats the deterministic answer T times."""
    nodes = [
        helper.make_node("Gather", ["embedding", "x"], ["embedded"]),
        helper.make_node("ReduceMean", ["embedded", "axis1"], ["logits"], keepdims=0),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    batch = ["batch", CLASSES]
    inputs = [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", TOKENS])]
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, batch)]
    constants = [numpy_helper.from_array(embedding, "embedding"), numpy_helper.from_array(np.array([1]), "axis1"),
                 numpy_helper.from_array(np.array([-1]), "last")]
    if not mc:
        return serialised(nodes, inputs, [*outputs, helper.make_tensor_value_info("logits", TensorProto.FLOAT, batch)],
                          constants)
    sampling, mc_inputs = repeated_samples("probabilities", CLASSES)
    nodes += [
        helper.make_node("Sub", ["probabilities", "probabilities"], ["std"]),
        helper.make_node("Log", ["probabilities"], ["log_p"]),
        helper.make_node("Mul", ["probabilities", "log_p"], ["p_log_p"]),
        helper.make_node("ReduceSum", ["p_log_p", "last"], ["neg_entropy"], keepdims=0),
        helper.make_node("Neg", ["neg_entropy"], ["predictive_entropy"]),
        helper.make_node("Sub", ["predictive_entropy", "predictive_entropy"], ["mutual_information"]),
        *sampling,
    ]
    outputs += [helper.make_tensor_value_info("std", TensorProto.FLOAT, batch),
                helper.make_tensor_value_info("predictive_entropy", TensorProto.FLOAT, ["batch"]),
                helper.make_tensor_value_info("mutual_information", TensorProto.FLOAT, ["batch"]),
                samples_output(CLASSES)]
    return serialised(nodes, inputs + mc_inputs, outputs, constants)


@pytest.fixture(scope="module")
def token_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    embedding = np.random.default_rng(0).normal(size=(VOCABULARY, CLASSES)).astype(np.float32)
    draft = build_manifest(
        name="tokens", version="1", created="2025-01-01T00:00:00+00:00", dropnet_version="0.1.0", versions={},
        source_run={}, input=InputSpec("x", (TOKENS,), "int64", (0, VOCABULARY - 1)), classes=("a", "b", "c"),
        architecture={}, dropout=DropoutSpec((DropoutSite("embedding", "inverted", 0.9),)), max_norm=(),
        onnx=OnnxVersions(OPSET, IR_VERSION), rng="none", metrics={},
    )
    graphs = {DETERMINISTIC_FILE: _graph(False, embedding), MC_FILE: _graph(True, embedding)}
    return write_package(tmp_path_factory.mktemp("models") / "tokens" / "1", draft, graphs)


def test_token_ids_are_converted_to_int64_and_predicted(token_package: Path) -> None:
    predictor = Predictor.load(token_package)
    ids = np.array([[1, 2, 3, 4], [49, 0, 7, 7]], dtype=np.uint8)
    prediction = predictor.predict(ids)
    assert prediction.probabilities.shape == (2, CLASSES) and prediction.labels is not None
    np.testing.assert_array_equal(prediction.probabilities, predictor.predict(ids.astype(np.int64)).probabilities)
    assert check_request(predictor, ids).x.dtype == np.int64
    mc = predictor.predict(ids.tolist(), mc_samples=3, seed=1, return_samples=True)
    assert mc.samples.shape == (3, 2, CLASSES)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((1, TOKENS), np.float32), r"x has dtype float32; expected integers \(converted to int64\)"),
        (np.full((1, TOKENS), 50), r"x holds integers in 50\.\.50; expected integers in 0\.\.49"),
        (np.full((1, TOKENS), -1), r"x holds integers in -1\.\.-1; expected integers in 0\.\.49"),
        (np.full((1, TOKENS), 2**64 - 1, np.uint64), r"x holds integers in 18446744073709551615\.\."),
    ],
    ids=["floats", "above", "below", "uint64"],
)
def test_values_that_are_not_valid_token_ids_are_refused(token_package: Path, x: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Predictor.load(token_package).predict(x)


def test_the_server_serves_and_describes_an_integer_input(token_package: Path) -> None:
    async def main() -> tuple:
        plane = DataPlane(make_settings(token_package.parent.parent))
        await plane.start()
        try:
            result = await plane.infer(InferRequest("tokens", None, np.array([[3, 1, 4, 1]], np.int32)))
            return result, plane.describe("tokens", None)
        finally:
            await plane.stop()

    result, model = asyncio.run(main())
    assert result.outputs["probabilities"].shape == (1, CLASSES)
    metadata = codecs.encode_model_metadata(model)
    assert (metadata.inputs[0].datatype, list(metadata.inputs[0].shape)) == ("INT64", [-1, TOKENS])
    description = codecs.encode_model(model)
    assert not description.HasField("normalisation") and list(description.value_range) == [0, VOCABULARY - 1]


def test_a_graph_whose_input_type_differs_from_the_manifest_is_refused(token_package: Path, tmp_path: Path) -> None:
    package = Path(shutil.copytree(token_package, tmp_path / "pkg"))
    raw = json.loads((package / MANIFEST_FILE).read_text())
    raw["input"]["dtype"] = "float32"
    (package / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(ModelPackageError, match=r"deterministic\.onnx: graph takes x of type tensor\(int64\); "
                                                 r"the manifest expects float32 \(tensor\(float\)\)"):
        Predictor.load(package)
