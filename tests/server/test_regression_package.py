"""A regression package (hand-built graphs): the engine, the data plane, OIP metadata and the CLI follow its table."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from dropnet.core.errors import InvalidInputError
from dropnet.core.manifest import (
    DETERMINISTIC_FILE,
    MC_FILE,
    DropoutSite,
    DropoutSpec,
    InputSpec,
    OnnxVersions,
    build_manifest,
)
from dropnet.core.outputs import Mode, Task, default_output_names, output_specs
from dropnet.exporter.onnx_graph import IR_VERSION, OPSET
from dropnet.server import codecs
from dropnet.server.cli_predict import format_table, to_json
from dropnet.server.dataplane import DataPlane, InferRequest, InferResult
from dropnet.server.predictor import Predictor
from tests.server.handmade import repeated_samples, samples_output, serialised, write_package
from tests.server.helpers import make_settings

FEATURES, TARGETS = 3, ("price", "volume")
WEIGHTS = np.arange(FEATURES * len(TARGETS), dtype=np.float32).reshape(FEATURES, len(TARGETS))


def _graph(mc: bool) -> bytes:
    """x @ WEIGHTS; the mc graph gives it as the mean of T identical samples."""
    rows = ["batch", len(TARGETS)]
    first = "mean" if mc else "prediction"
    nodes = [helper.make_node("MatMul", ["x", "w"], [first])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])]
    outputs = [helper.make_tensor_value_info(first, TensorProto.FLOAT, rows)]
    constants = [numpy_helper.from_array(WEIGHTS, "w")]
    if not mc:
        return serialised(nodes, inputs, outputs, constants)
    sampling, mc_inputs = repeated_samples("mean", len(TARGETS))
    nodes += [helper.make_node("Sub", ["mean", "mean"], ["std"]), *sampling]
    outputs += [helper.make_tensor_value_info("std", TensorProto.FLOAT, rows), samples_output(len(TARGETS))]
    return serialised(nodes, inputs + mc_inputs, outputs, constants)


@pytest.fixture(scope="module")
def regression_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    draft = build_manifest(
        name="prices", version="1", created="2025-01-01T00:00:00+00:00", dropnet_version="0.1.0", versions={},
        source_run={}, input=InputSpec("x", (FEATURES,), "float32", (-1.0, 1.0)), task=Task.REGRESSION,
        targets=TARGETS, architecture={}, dropout=DropoutSpec((DropoutSite("head.drop", "inverted", 0.5),)),
        max_norm=(), onnx=OnnxVersions(OPSET, IR_VERSION), rng="none", metrics={},
    )
    graphs = {DETERMINISTIC_FILE: _graph(False), MC_FILE: _graph(True)}
    return write_package(tmp_path_factory.mktemp("models") / "prices" / "1", draft, graphs)


def _rows(n: int) -> np.ndarray:
    return np.random.default_rng(n).uniform(-1, 1, size=(n, FEATURES)).astype(np.float32)


def test_the_engine_answers_with_the_regression_outputs(regression_package: Path) -> None:
    predictor = Predictor.load(regression_package)
    x = _rows(4)
    deterministic = predictor.predict(x)
    assert tuple(deterministic.outputs) == ("prediction",) and deterministic.labels is None
    np.testing.assert_allclose(deterministic.prediction, x @ WEIGHTS, rtol=1e-6)
    mc = predictor.predict(x, mc_samples=3, seed=1, return_samples=True)
    assert tuple(mc.outputs) == ("mean", "std", "samples") and mc.samples.shape == (3, 4, len(TARGETS))
    assert mc.probabilities is None
    header = format_table(predictor, mc, 3).splitlines()[1].split()
    assert header == ["row", "mean", "std"]
    report = to_json(predictor, mc, "x.npy", 3)
    assert report["targets"] == list(TARGETS) and sorted(report["rows"][0]) == ["mean", "row", "std"]


def test_the_data_plane_and_oip_metadata_follow_the_regression_table(regression_package: Path) -> None:
    async def main() -> tuple[InferResult, InferResult, str, object]:
        plane = DataPlane(make_settings(regression_package.parent.parent))
        await plane.start()
        try:
            deterministic = await plane.infer(InferRequest("prices", None, _rows(2)))
            mc = await plane.infer(InferRequest("prices", None, _rows(2), "mc", 4, 7, ("samples", "mean")))
            with pytest.raises(InvalidInputError) as refused:
                await plane.infer(InferRequest("prices", None, _rows(2), outputs=("probabilities",)))
            return deterministic, mc, str(refused.value), plane.describe("prices", None)
        finally:
            await plane.stop()

    deterministic, mc, refusal, model = asyncio.run(main())
    assert tuple(deterministic.outputs) == default_output_names(Task.REGRESSION, Mode.DETERMINISTIC)
    assert [(name, value.shape) for name, value in mc.outputs.items()] == [("samples", (4, 2, 2)), ("mean", (2, 2))]
    assert "unknown output(s) ['probabilities'] for mode 'deterministic'; expected some of ['prediction']" in refusal
    metadata = codecs.encode_model_metadata(model)
    table = {spec.name: spec.dims({"D": len(TARGETS)}) for mode in Mode for spec in output_specs(Task.REGRESSION, mode)}
    assert [(o.name, list(o.shape)) for o in metadata.outputs] == list(table.items())
