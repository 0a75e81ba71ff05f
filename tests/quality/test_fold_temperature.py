"""τ folded into both graphs: onnxruntime on the folded graphs equals softmax(logits / τ) of the unfolded ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from scipy.special import softmax

from dropnet.core.errors import ModelPackageError
from dropnet.core.manifest import DETERMINISTIC_FILE, INPUT_NAME, MC_FILE, NUM_SAMPLES_INPUT, SEED_INPUT
from dropnet.core.outputs import Mode
from dropnet.exporter.own.gates import run_graph, session
from dropnet.quality.fold_temperature import TEMPERATURE_KEY, check_folded, fold_deterministic, fold_mc
from dropnet.quality.metrics import TINY

ROWS, SAMPLES, SEED = 6, 5, 42
TOLERANCE = 1e-5
"""float32 rounding of a Div and a Softmax: |Δ| ≤ TOLERANCE · (1 + |value|)."""
TAUS = (2.5, 0.4)


def graphs(package: Path) -> dict[Mode, onnx.ModelProto]:
    return {mode: onnx.load(package / name) for mode, name in ((Mode.DETERMINISTIC, DETERMINISTIC_FILE),
                                                                (Mode.MC, MC_FILE))}


def rows(proto: onnx.ModelProto) -> np.ndarray:
    """Seeded inputs of the graph's row shape: values 0..16 (the digits' range; the zoo MLP takes any float)."""
    shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
    return np.random.default_rng(0).uniform(0.0, 16.0, size=(ROWS, *shape)).astype(np.float32)


def mc_run(proto: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    feeds = {INPUT_NAME: x, NUM_SAMPLES_INPUT: np.array(SAMPLES, np.int64), SEED_INPUT: np.array([SEED], np.int64)}
    return run_graph(session(proto), feeds)


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_array_less(np.abs(actual - expected), TOLERANCE * (1 + np.abs(expected)))


def check_parity(package: Path, tau: float) -> None:
    source = graphs(package)
    x = rows(source[Mode.DETERMINISTIC])
    deterministic = fold_deterministic(source[Mode.DETERMINISTIC], tau)
    logits = run_graph(session(source[Mode.DETERMINISTIC]), {INPUT_NAME: x})["logits"].astype(np.float64)
    folded = run_graph(session(deterministic), {INPUT_NAME: x})
    assert_close(folded["logits"], logits / tau)
    assert_close(folded["probabilities"], softmax(logits / tau, axis=1))

    mc = fold_mc(source[Mode.MC], tau)
    samples = mc_run(source[Mode.MC], x)["samples"].astype(np.float64)
    answer = mc_run(mc, x)
    # Each sample's log-probabilities are its logits up to a constant per row: softmax(log p / τ) = softmax(z / τ).
    expected = softmax(np.log(np.maximum(samples, TINY)) / tau, axis=-1)
    assert_close(answer["samples"], expected)
    assert_close(answer["probabilities"], expected.mean(axis=0))
    assert_close(answer["std"], expected.std(axis=0))
    entropy = -np.sum(expected.mean(axis=0) * np.log(expected.mean(axis=0)), axis=1)
    assert_close(answer["predictive_entropy"], entropy)
    mean_entropy = -np.sum(expected * np.log(expected), axis=-1).mean(axis=0)
    assert_close(answer["mutual_information"], np.maximum(entropy - mean_entropy, 0.0))
    for proto, value in ((deterministic, tau), (mc, tau)):
        props = {prop.key: prop.value for prop in proto.metadata_props}
        assert float(props[TEMPERATURE_KEY]) == pytest.approx(value, rel=1e-7)
    check_folded({mode: proto.SerializeToString() for mode, proto in source.items()},
                 deterministic.SerializeToString(), mc.SerializeToString(), {Mode.DETERMINISTIC: tau, Mode.MC: tau}, x)


@pytest.mark.parametrize("tau", TAUS)
def test_folded_graphs_of_a_dropnet_package_divide_the_logits_by_tau(tiny_package: Path, tau: float) -> None:
    check_parity(tiny_package, tau)


@pytest.mark.slow
@pytest.mark.parametrize("tau", TAUS)
def test_folded_graphs_of_an_own_model_package_divide_the_logits_by_tau(own_package: Path, tau: float) -> None:
    check_parity(own_package, tau)


def test_the_graph_keeps_its_metadata_and_the_uncalibrated_logits_inside(tiny_package: Path) -> None:
    source = graphs(tiny_package)[Mode.DETERMINISTIC]
    folded = fold_deterministic(source, 2.0)
    before = {prop.key: prop.value for prop in source.metadata_props}
    after = {prop.key: prop.value for prop in folded.metadata_props}
    assert after == {**before, TEMPERATURE_KEY: "2.0"}
    assert [o.name for o in folded.graph.output] == [o.name for o in source.graph.output]
    divide = next(node for node in folded.graph.node if node.op_type == "Div" and node.output[0] == "logits")
    assert divide.input[0] == "logits_uncalibrated"


def test_check_folded_catches_a_graph_with_another_temperature(tiny_package: Path) -> None:
    source = graphs(tiny_package)
    blobs = {mode: proto.SerializeToString() for mode, proto in source.items()}
    deterministic = fold_deterministic(source[Mode.DETERMINISTIC], 2.0).SerializeToString()
    mc = fold_mc(source[Mode.MC], 2.0).SerializeToString()
    x = rows(source[Mode.DETERMINISTIC])
    with pytest.raises(ModelPackageError, match="deterministic.onnx with the temperature folded in: logits off"):
        check_folded(blobs, deterministic, mc, {Mode.DETERMINISTIC: 2.1, Mode.MC: 2.0}, x)
    with pytest.raises(ModelPackageError, match="mc.onnx with the temperature folded in: samples off"):
        check_folded(blobs, deterministic, mc, {Mode.DETERMINISTIC: 2.0, Mode.MC: 1.9}, x)


def test_folding_twice_is_refused(tiny_package: Path) -> None:
    source = graphs(tiny_package)
    with pytest.raises(ModelPackageError, match="already carries a temperature"):
        fold_deterministic(fold_deterministic(source[Mode.DETERMINISTIC], 2.0), 2.0)
    with pytest.raises(ModelPackageError, match="already carries a temperature"):
        fold_mc(fold_mc(source[Mode.MC], 2.0), 2.0)


def test_a_graph_without_logits_or_sample_softmax_is_refused() -> None:
    x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("samples", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("Relu", [INPUT_NAME], ["samples"])], "regression", [x], [y])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    with pytest.raises(ModelPackageError, match="deterministic.onnx: no node outputs 'logits'; expected the graph of a "
                                                "classification package"):
        fold_deterministic(proto, 2.0)
    with pytest.raises(ModelPackageError, match="mc.onnx: samples comes from a Relu node; expected the Softmax"):
        fold_mc(proto, 2.0)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("inf"), True])
def test_a_temperature_that_is_not_positive_and_finite_is_refused(tiny_package: Path, tau: object) -> None:
    with pytest.raises(ModelPackageError, match="temperature must be a positive finite number"):
        fold_deterministic(graphs(tiny_package)[Mode.DETERMINISTIC], tau)  # type: ignore[arg-type]
