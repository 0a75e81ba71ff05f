"""A regression package (hand-built graphs): the engine, the data plane, OIP metadata and the CLI follow its table."""

from __future__ import annotations

import asyncio
import json
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
from dropnet.cli import main
from dropnet.exporter.onnx_graph import IR_VERSION, OPSET
from dropnet.protos.dropnet.v1 import predictor_pb2 as v1
from dropnet.server import codecs
from dropnet.server.cli_predict import to_json
from dropnet.server.client import DropnetClient
from dropnet.server.dataplane import DataPlane, InferRequest, InferResult
from dropnet.server.predictor import Predictor
from tests.server.grpc_harness import ServerThread, grpc_settings
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


def test_dropnet_predict_prints_each_target_and_mc_mean_plus_minus_std(
    regression_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = _rows(2)
    np.save(tmp_path / "x.npy", x)
    expected = x @ WEIGHTS
    assert main(["predict", str(regression_package), "--input", str(tmp_path / "x.npy")]) == 0
    title, header, *rows = capsys.readouterr().out.splitlines()
    assert title.endswith("weight scaling (deterministic); each target: prediction")
    assert header.split() == ["row", *TARGETS]
    np.testing.assert_allclose([[float(v) for v in line.split()[1:]] for line in rows], expected, atol=1e-4)
    assert main(["predict", str(regression_package), "--input", str(tmp_path / "x.npy"), "--mc-samples", "3",
                 "--seed", "5"]) == 0
    title, header, *rows = capsys.readouterr().out.splitlines()
    assert title.endswith("MC dropout, T=3, seed=5; each target: mean ± std")
    assert header.split() == ["row", *TARGETS]
    cells = [line.split()[1:] for line in rows]
    assert all(cell[1::3] == ["±"] * len(TARGETS) for cell in cells)
    np.testing.assert_allclose([[float(v) for v in cell[0::3]] for cell in cells], expected, atol=1e-4)
    assert [[float(v) for v in cell[2::3]] for cell in cells] == [[0.0] * len(TARGETS)] * 2
    assert main(["predict", str(regression_package), "--input", str(tmp_path / "x.npy"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["targets"] == list(TARGETS)
    np.testing.assert_allclose([row["prediction"] for row in report["rows"]], expected, rtol=1e-6)


def test_dropnet_v1_serves_the_regression_outputs_and_describes_the_targets(
    regression_package: Path, tmp_path: Path
) -> None:
    predictor, x = Predictor.load(regression_package), _rows(3)
    with ServerThread(grpc_settings(regression_package.parent.parent)) as server:
        with DropnetClient(server.target) as client:
            model = client.get_model("prices")
            deterministic = client.predict("prices", x)
            mc = client.predict("prices", x, mc_samples=4, seed=9, outputs=("mean", "std", "samples"))
    assert (model.task, list(model.targets), list(model.classes)) == (v1.TASK_REGRESSION, list(TARGETS), [])
    assert [o.name for o in model.deterministic_outputs] == ["prediction"]
    assert [o.name for o in model.mc_outputs] == ["mean", "std", "samples"]
    assert sorted(deterministic) == ["model", "prediction", "version"]
    np.testing.assert_array_equal(deterministic["prediction"], predictor.predict(x).prediction)
    embedded = predictor.predict(x, mc_samples=4, seed=9, return_samples=True)
    assert sorted(mc) == ["mean", "model", "samples", "seed", "std", "version"] and mc["seed"] == 9
    for name in ("mean", "std", "samples"):
        np.testing.assert_array_equal(mc[name], embedded.outputs[name])
