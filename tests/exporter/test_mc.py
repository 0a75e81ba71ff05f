"""mc.onnx: summaries, row-seed semantics, reproducibility under onnxruntime's optimisers, expectation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from dropnet.exporter.graphs import RNG_SCHEME, build_deterministic, build_mc, verify_model
from dropnet.core.seeding import row_seeds
from tests.exporter.helpers import mc_feeds, network, rows, run, session
from dropnet.trainer.config import FLAVOURS

NETS = {
    "mlp-paper": dict(hidden=[24, 16]),
    "mlp-gaussian-maxout": dict(hidden=[12, 8], activation="maxout", flavour="gaussian"),
    "conv-inverted-bn": dict(arch="conv", conv_channels=[4, 6], conv_kernel=3, hidden=[12], batch_norm=True, flavour="inverted"),
}
OUTPUTS = ["probabilities", "std", "predictive_entropy", "mutual_information", "samples"]
LEVELS = [
    ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
]
RANDOM_OPS = {"Dropout", "RandomUniform", "RandomNormal", "RandomUniformLike", "RandomNormalLike", "Bernoulli", "Multinomial"}


@pytest.fixture(scope="module", params=list(NETS))
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[onnx.ModelProto, np.ndarray]:
    """(mc.onnx with exposed internals, 5 input rows) of each test network."""
    model, spec = network(tmp_path_factory.mktemp("net"), **NETS[request.param])
    return build_mc(model, spec, {"flavour": "any"}, expose_internals=True), rows(spec, 5)


def test_summaries_equal_numpy_recomputations(built: tuple[onnx.ModelProto, np.ndarray]) -> None:
    proto, x = built
    verify_model(proto)
    out = run(session(proto), **mc_feeds(x, 40, 11))
    samples = out["samples"].astype(np.float64)
    assert samples.shape == (40, 5, 10) and out["probabilities"].shape == (5, 10)
    logits = out["logit_samples"] - out["logit_samples"].max(axis=-1, keepdims=True)
    np.testing.assert_allclose(samples, np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True), atol=1e-6)
    mean = samples.mean(axis=0)
    entropy = -(mean * np.log(mean)).sum(axis=-1)
    per_sample = -(samples * np.log(samples)).sum(axis=-1).mean(axis=0)
    np.testing.assert_allclose(out["probabilities"], mean, atol=1e-5)
    np.testing.assert_allclose(out["std"], samples.std(axis=0), atol=1e-5)
    np.testing.assert_allclose(out["predictive_entropy"], entropy, atol=1e-5)
    np.testing.assert_allclose(out["mutual_information"], np.maximum(entropy - per_sample, 0.0), atol=1e-5)
    assert (out["mutual_information"] > 1e-4).all()  # the noise really varies the samples


def test_one_seed_stands_for_its_row_seeds_bit_for_bit(built: tuple[onnx.ModelProto, np.ndarray]) -> None:
    proto, x = built
    sess = session(proto)
    single = run(sess, **mc_feeds(x, 20, 2**40 + 9))
    expanded = run(sess, **mc_feeds(x, 20, row_seeds(2**40 + 9, len(x))))
    for name, value in single.items():
        np.testing.assert_array_equal(value, expanded[name], err_msg=name)


def test_a_row_depends_on_its_seed_alone(built: tuple[onnx.ModelProto, np.ndarray]) -> None:
    """Row b of a batch equals the same row run alone or elsewhere in another batch."""
    proto, x = built
    sess = session(proto)
    seeds = np.array([17, -3, 2**33, 5, 17])
    batch = run(sess, **mc_feeds(x, 20, seeds))
    flipped = run(sess, **mc_feeds(x[::-1], 20, seeds[::-1]))
    for b in range(len(x)):
        alone = run(sess, **mc_feeds(x[b : b + 1], 20, seeds[b : b + 1]))
        for other in (batch, flipped):
            row = b if other is batch else len(x) - 1 - b
            for name in ("noise_0", "samples", "logit_samples"):  # the noise, and each sample, bit for bit
                np.testing.assert_array_equal(other[name][:, row], alone[name][:, 0], err_msg=name)
            for name in ("probabilities", "std"):
                np.testing.assert_array_equal(other[name][row], alone[name][0], err_msg=name)
            for name in ("predictive_entropy", "mutual_information"):  # class sums: reduction kernels vary with B
                np.testing.assert_allclose(other[name][row], alone[name][0], rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("net", ["mlp-paper", "conv-inverted-bn"])
def test_reproducible_and_seed_driven_under_every_optimisation_level(tmp_path: Path, net: str) -> None:
    model, spec = network(tmp_path, **NETS[net])
    x = rows(spec, 3)
    plain, exposed = build_mc(model, spec, {}), build_mc(model, spec, {}, expose_internals=True)
    baseline = run(session(exposed, LEVELS[0]), **mc_feeds(x, 30, 1))
    for level in LEVELS:
        saved = tmp_path / f"optimised-{int(level)}.onnx"
        sess = session(plain, level, save_to=saved)
        first, again = run(sess, **mc_feeds(x, 30, 1)), run(sess, **mc_feeds(x, 30, 1))
        other = run(sess, **mc_feeds(x, 30, 2))
        fresh = run(session(plain, level), **mc_feeds(x, 30, 1))
        reloaded = run(session(saved, level), **mc_feeds(x, 30, 1))
        for name in OUTPUTS:
            np.testing.assert_array_equal(first[name], again[name], err_msg=f"{level} {name}")
            np.testing.assert_array_equal(first[name], fresh[name], err_msg=f"{level} fresh session {name}")
            np.testing.assert_array_equal(first[name], reloaded[name], err_msg=f"{level} reloaded {name}")
        assert np.abs(first["samples"] - other["samples"]).max() > 1e-3, f"{level}: seeds 1 and 2 agree"
        np.testing.assert_allclose(first["samples"], baseline["samples"], atol=1e-6, err_msg=str(level))
        noise = run(session(exposed, level), **mc_feeds(x, 30, 1))
        for site in (name for name in noise if name.startswith("noise_")):
            np.testing.assert_array_equal(noise[site], baseline[site], err_msg=f"{level} {site}")


def test_building_is_deterministic(tmp_path: Path) -> None:
    model, spec = network(tmp_path, **NETS["mlp-paper"])
    assert build_mc(model, spec, {}).SerializeToString() == build_mc(model, spec, {}).SerializeToString()


def test_a_seed_vector_of_another_length_is_refused(built: tuple[onnx.ModelProto, np.ndarray]) -> None:
    proto, x = built
    with pytest.raises(Exception, match="cannot be reshaped"):
        session(proto).run(None, mc_feeds(x, 4, [1, 2, 3]))


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(
    "site", [dict(hidden=[], retain_input=0.8), dict(hidden=[32], retain_input=1.0, retain_hidden=0.5)], ids=["input", "hidden"]
)
def test_mean_logits_converge_to_the_deterministic_graph(tmp_path: Path, flavour: str, site: dict) -> None:
    """One dropout site feeding the output layer: logits are linear in the noise, so E[mc] = deterministic."""
    model, spec = network(tmp_path, flavour=flavour, **site)
    x = rows(spec, 3)
    expected = run(session(build_deterministic(model, spec, {})), x=x)["logits"]
    samples = 4000
    logits = run(session(build_mc(model, spec, {}, expose_internals=True)), **mc_feeds(x, samples, 99))["logit_samples"]
    mean, spread = logits.mean(axis=0), logits.std(axis=0, ddof=1)
    assert (spread > 1e-2).all()
    np.testing.assert_array_less(np.abs(mean - expected), 5 * spread / math.sqrt(samples) + 1e-5)


def test_layers_before_the_first_noisy_site_run_once_per_row(tmp_path: Path) -> None:
    """With input retain 1 the first Gemm sees [batch, 64], not [T·batch, 64]; with input dropout it cannot."""
    for retain, shared in ((1.0, True), (0.8, False)):
        model, spec = network(tmp_path / str(retain), hidden=[16], retain_input=retain)
        inferred = onnx.shape_inference.infer_shapes(build_mc(model, spec, {}), data_prop=True)
        first = next(node for node in inferred.graph.node if node.op_type == "Gemm")
        info = next(v for v in inferred.graph.value_info if v.name == first.output[0])
        assert (info.type.tensor_type.shape.dim[0].dim_param == "batch") is shared


def test_a_network_without_noise_repeats_the_deterministic_graph(tmp_path: Path) -> None:
    model, spec = network(tmp_path, hidden=[16], retain_input=1.0, retain_hidden=1.0)
    x = rows(spec, 4)
    expected = run(session(build_deterministic(model, spec, {})), x=x)["probabilities"]
    out = run(session(build_mc(model, spec, {})), **mc_feeds(x, 6, 0))
    np.testing.assert_allclose(out["samples"], np.broadcast_to(expected, (6, 4, 10)), atol=1e-6)
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-6)
    assert np.abs(out["std"]).max() <= 1e-6 and np.abs(out["mutual_information"]).max() <= 1e-6


def test_runs_in_the_reference_evaluator(built: tuple[onnx.ModelProto, np.ndarray]) -> None:
    proto, x = built
    feeds = mc_feeds(x, 4, [3, -1, 2**40, 0, 8])
    names = [o.name for o in proto.graph.output]
    expected = run(session(proto), **feeds)
    for name, value in zip(names, ReferenceEvaluator(proto).run(None, feeds)):
        if value.dtype == bool:
            np.testing.assert_array_equal(value, expected[name], err_msg=name)
        else:
            np.testing.assert_allclose(value, expected[name], atol=1e-5, err_msg=name)


def test_graph_interface_and_metadata(built: tuple[onnx.ModelProto, np.ndarray]) -> None:
    proto, _ = built
    shapes = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.input
    }
    assert list(shapes) == ["x", "num_samples", "seed", "first_sample"] and shapes["seed"] == ["seeds"]
    assert shapes["num_samples"] == shapes["first_sample"] == []
    first_sample = next(t for t in proto.graph.initializer if t.name == "first_sample")  # overridable, default 0
    assert numpy_helper.to_array(first_sample).tolist() == 0 and first_sample.data_type == onnx.TensorProto.INT64
    assert [o.name for o in proto.graph.output][:5] == OUTPUTS
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["graph"] == "mc" and props["rng_scheme"] == RNG_SCHEME and props["flavour"] == "any"
    assert int(props["rng_max_samples"]) >= 10**6
    assert not {node.op_type for node in proto.graph.node} & RANDOM_OPS
