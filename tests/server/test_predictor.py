"""The embedded engine: package verification, parity with torch, MC outputs, validation, providers."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from dropnet.core.errors import ConfigError, InvalidInputError, ModelPackageError
from dropnet.core.manifest import data_digest
from dropnet.core.seeding import row_seeds
from dropnet.server import providers
from dropnet.server.predictor import Predictor
from dropnet.server.request import check_request
from tests.factories import make_package
from dropnet.trainer.rundir import load_run

REPO = Path(__file__).resolve().parents[2]
ORT_LOG_LINE = ":onnxruntime:"  # onnxruntime's own log lines look like "[E:onnxruntime:Default, ...]"


@pytest.fixture(scope="module")
def predictor(tiny_package: Path) -> Predictor:
    return Predictor.load(tiny_package, intra_op_threads=1)


def _rows(n: int, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 16.0, size=(n, 1, 8, 8)).astype(np.float32)


def _copy(package: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(package, tmp_path / "pkg"))


# --- loading and package integrity -------------------------------------------------------------

def test_load_reports_identity_provider_and_threads(predictor: Predictor, tiny_package: Path) -> None:
    assert predictor.manifest.to_dict() == json.loads((tiny_package / "manifest.json").read_text())
    assert (predictor.name, predictor.version) == ("tiny-digits", "1")
    assert predictor.provider == "CPUExecutionProvider"
    assert predictor.input_shape == (1, 8, 8)
    assert predictor._deterministic.get_session_options().intra_op_num_threads == 1
    assert predictor._mc.get_session_options().intra_op_num_threads == 1


def test_truncated_onnx_file_is_refused_by_name_and_size(tiny_package: Path, tmp_path: Path) -> None:
    pkg = _copy(tiny_package, tmp_path)
    data = (pkg / "mc.onnx").read_bytes()
    (pkg / "mc.onnx").write_bytes(data[:-100])
    message = rf"mc\.onnx has {len(data) - 100} bytes, the manifest expects {len(data)}"
    with pytest.raises(ModelPackageError, match=message):
        Predictor.load(pkg)


def test_wrong_sha256_is_refused_with_expected_and_actual(tiny_package: Path, tmp_path: Path) -> None:
    pkg = _copy(tiny_package, tmp_path)
    manifest = json.loads((pkg / "manifest.json").read_text())
    actual = manifest["files"]["deterministic.onnx"]["sha256"]
    manifest["files"]["deterministic.onnx"]["sha256"] = "0" * 64
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    message = rf"deterministic\.onnx has SHA-256 {actual}, the manifest expects 0{{64}}"
    with pytest.raises(ModelPackageError, match=message):
        Predictor.load(pkg)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda pkg: (pkg / "mc.onnx").unlink(), r"mc\.onnx is missing; the manifest lists it"),
        (lambda pkg: (pkg / "manifest.json").unlink(), r"manifest\.json is missing"),
        (lambda pkg: (pkg / "manifest.json").write_text("{not json"), r"manifest\.json: not valid JSON"),
        (
            lambda pkg: _edit_manifest(pkg, format="dropnet-model/9"),
            r"format must be 'dropnet-model/2' or 'dropnet-model/1', got '.*/9'",
        ),
        (lambda pkg: _edit_manifest(pkg, classes=None), r"manifest\.json: classes is missing; expected a non-empty"),
        (
            lambda pkg: _edit_manifest(pkg, input={**_manifest(pkg)["input"], "shape": [0, 8]}),
            r"input\.shape must be a non-empty list of positive ints, got \[0, 8\]",
        ),
        (
            lambda pkg: _edit_manifest(pkg, classes=["a", "b"]),
            r"deterministic\.onnx: graph takes x \['batch', 1, 8, 8\] and gives probabilities \['batch', 10\]; "
            r"the manifest expects x \(batch, 1, 8, 8\) and 2 classes",
        ),
    ],
    ids=["missing-file", "missing-manifest", "bad-json", "wrong-format", "missing-field", "bad-shape", "classes"],
)
def test_broken_packages_are_refused(
    tiny_package: Path, tmp_path: Path, damage: Callable[[Path], object], message: str
) -> None:
    pkg = _copy(tiny_package, tmp_path)
    damage(pkg)
    with pytest.raises(ModelPackageError, match=message):
        Predictor.load(pkg)


def test_listed_but_unloadable_onnx_is_refused(tiny_package: Path, tmp_path: Path) -> None:
    pkg = _copy(tiny_package, tmp_path)
    garbage = b"not an onnx model" * 10
    (pkg / "mc.onnx").write_bytes(garbage)
    manifest = json.loads((pkg / "manifest.json").read_text())
    _edit_manifest(pkg, files={**manifest["files"], "mc.onnx": asdict(data_digest(garbage))})
    with pytest.raises(ModelPackageError, match=r"mc\.onnx: onnxruntime .* cannot load it"):
        Predictor.load(pkg)


def test_not_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelPackageError, match="is not a model package: expected a directory"):
        Predictor.load(tmp_path / "nothing-here")


def _manifest(pkg: Path) -> dict:
    return json.loads((pkg / "manifest.json").read_text())


def _edit_manifest(pkg: Path, **fields: object) -> None:
    manifest = _manifest(pkg)
    for key, value in fields.items():
        if value is None:
            del manifest[key]
        else:
            manifest[key] = value
    (pkg / "manifest.json").write_text(json.dumps(manifest))


# --- deterministic prediction -------------------------------------------------------------------

def test_deterministic_matches_the_torch_eval_network(predictor: Predictor, tiny_run_dir: Path) -> None:
    _, _, model = load_run(tiny_run_dir)
    x = _rows(16)
    with torch.no_grad():
        expected = model(torch.from_numpy(x))
    out = predictor.run_deterministic(x)
    assert np.max(np.abs(out["logits"] - expected.numpy())) <= 1e-5
    prediction = predictor.predict(x)
    np.testing.assert_allclose(prediction.probabilities, torch.softmax(expected, 1).numpy(), atol=1e-6)
    np.testing.assert_array_equal(prediction.predicted_class, expected.argmax(1).numpy())
    assert prediction.predicted_class.dtype == np.int64
    assert prediction.labels == [str(c) for c in expected.argmax(1).tolist()]
    assert prediction.std is None and prediction.seed is None and prediction.samples is None


@pytest.mark.parametrize(
    "overrides",
    [{"arch": "conv", "conv_channels": [4], "hidden": [8]}, {"flavour": "inverted", "activation": "maxout"}],
    ids=["conv-paper", "mlp-inverted-maxout"],
)
def test_other_architectures_match_torch_too(tmp_path: Path, overrides: dict) -> None:
    loaded = Predictor.load(make_package(tmp_path, **overrides))
    _, _, model = load_run(tmp_path / "tiny-digits")
    x = _rows(8)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(loaded.run_deterministic(x)["logits"] - expected)) <= 1e-5
    assert loaded.predict(x, mc_samples=5, seed=0).probabilities.shape == (8, 10)


def test_single_example_and_other_numeric_dtypes_are_accepted(predictor: Predictor) -> None:
    x = _rows(3)
    batched = predictor.predict(x).probabilities
    np.testing.assert_array_equal(predictor.predict(x[1]).probabilities, batched[1:2])
    np.testing.assert_array_equal(predictor.predict(x.astype(np.float64)).probabilities, batched)
    ints = np.rint(x).astype(np.int16)
    as_floats = predictor.predict(ints.astype(np.float32)).probabilities
    np.testing.assert_array_equal(predictor.predict(ints).probabilities, as_floats)
    np.testing.assert_array_equal(predictor.predict(x.tolist()).probabilities, batched)


# --- Monte-Carlo prediction ---------------------------------------------------------------------

def test_mc_outputs_have_the_promised_shapes_and_agree_with_their_samples(predictor: Predictor) -> None:
    x = _rows(5)
    prediction = predictor.predict(x, mc_samples=30, seed=11, return_samples=True)
    samples = prediction.samples
    assert samples.shape == (30, 5, 10)
    assert prediction.probabilities.shape == prediction.std.shape == (5, 10)
    assert prediction.predictive_entropy.shape == prediction.mutual_information.shape == (5,)
    assert prediction.seed == 11
    np.testing.assert_allclose(prediction.probabilities, samples.mean(0), atol=1e-6)
    np.testing.assert_allclose(prediction.std, samples.std(0), atol=1e-5)
    np.testing.assert_allclose(prediction.probabilities.sum(1), 1.0, atol=1e-5)
    entropy = -(prediction.probabilities * np.log(prediction.probabilities)).sum(1)
    np.testing.assert_allclose(prediction.predictive_entropy, entropy, atol=1e-5)
    expected_entropy = -(samples * np.log(samples)).sum(2).mean(0)
    np.testing.assert_allclose(prediction.mutual_information, entropy - expected_entropy, atol=1e-5)
    assert (prediction.mutual_information > 0).all()  # dropout masks really vary across samples
    np.testing.assert_array_equal(prediction.predicted_class, prediction.probabilities.argmax(1))
    assert predictor.predict(x, mc_samples=30, seed=11).samples is None


def test_mc_is_reproducible_by_seed_and_varies_across_seeds(predictor: Predictor) -> None:
    x = _rows(4)
    first = predictor.predict(x, mc_samples=20, seed=5, return_samples=True)
    again = predictor.predict(x, mc_samples=20, seed=5, return_samples=True)
    other = predictor.predict(x, mc_samples=20, seed=6, return_samples=True)
    np.testing.assert_array_equal(first.samples, again.samples)
    np.testing.assert_array_equal(first.mutual_information, again.mutual_information)
    assert not np.array_equal(first.samples, other.samples)


def test_unseeded_mc_reports_the_seed_it_drew(predictor: Predictor) -> None:
    x = _rows(2)
    drawn = predictor.predict(x, mc_samples=10)
    assert isinstance(drawn.seed, int) and 0 <= drawn.seed < 2**63
    replayed = predictor.predict(x, mc_samples=10, seed=drawn.seed)
    np.testing.assert_array_equal(replayed.probabilities, drawn.probabilities)


def test_one_batch_seed_equals_the_row_seeds_path(predictor: Predictor, tiny_package: Path) -> None:
    x = _rows(6)
    session = ort.InferenceSession(str(tiny_package / "mc.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"x": x, "num_samples": np.array(25, np.int64), "seed": np.array([123], np.int64)}
    scalar = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    via_predictor = predictor.predict(x, mc_samples=25, seed=123, return_samples=True)
    np.testing.assert_array_equal(scalar["samples"], via_predictor.samples)
    # the Predictor sums the samples on the host in float64; the graph's float32 mean of T=25 is off by at most (T + 2) ulp of 1
    np.testing.assert_allclose(scalar["probabilities"], via_predictor.probabilities, rtol=0, atol=(25 + 2) * 2**-24)


def test_rows_of_concatenated_requests_match_separate_requests(predictor: Predictor) -> None:
    xa, xb = _rows(3, seed=7), _rows(2, seed=8)
    joint = predictor.run_mc(
        np.concatenate([xa, xb]), 15, np.concatenate([row_seeds(1, 3), row_seeds(2, 2)]), ["probabilities", "samples"]
    )
    alone_a = predictor.predict(xa, mc_samples=15, seed=1, return_samples=True)
    alone_b = predictor.predict(xb, mc_samples=15, seed=2, return_samples=True)
    assert sorted(joint) == ["probabilities", "samples"]
    np.testing.assert_array_equal(joint["samples"], np.concatenate([alone_a.samples, alone_b.samples], axis=1))
    np.testing.assert_array_equal(
        joint["probabilities"], np.concatenate([alone_a.probabilities, alone_b.probabilities])
    )


# --- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((3, 63)), r"x has shape \(3, 63\); expected \(batch, 1, 8, 8\) or \(1, 8, 8\)"),
        (np.zeros((2, 8, 8)), r"x has shape \(2, 8, 8\); expected \(batch, 1, 8, 8\) or \(1, 8, 8\)"),
        (np.zeros((0, 1, 8, 8)), r"an empty batch; expected at least one row"),
        (np.full((1, 8, 8), "a"), r"x has dtype <U1; expected float or integer numbers"),
        (np.zeros((1, 8, 8), dtype=complex), r"x has dtype complex128; expected float or integer"),
        (np.zeros((1, 8, 8), dtype=bool), r"x has dtype bool; expected float or integer"),
        (np.array([{"a": 1}]), r"x has dtype object"),
        ([[1.0, 2.0], [3.0]], r"x is not a rectangular numeric array"),
        (np.full((2, 1, 8, 8), np.nan), r"x holds 128 non-finite value\(s\)"),
        (np.full((1, 8, 8), 1e39), r"x holds 64 non-finite value\(s\) \(NaN, inf, or beyond the float32 range\)"),
    ],
    ids=["flat", "missing-channel", "empty", "strings", "complex", "bool", "object", "ragged", "nan", "overflow"],
)
def test_invalid_inputs_are_refused_with_what_was_expected(predictor: Predictor, x: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        predictor.predict(x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mc_samples": 0}, r"mc_samples must be an integer in 1\.\.1000, got 0"),
        ({"mc_samples": 1001}, r"mc_samples must be an integer in 1\.\.1000, got 1001"),
        ({"mc_samples": 2.5}, r"mc_samples must be an integer in 1\.\.1000, got 2\.5 \(float\)"),
        ({"mc_samples": True}, r"mc_samples must be an integer .* got True \(bool\)"),
        ({"mc_samples": 5, "seed": 2**63}, rf"seed must be an integer in {-2**63}\.\.{2**63 - 1}, got {2**63}"),
        ({"mc_samples": 5, "seed": "7"}, r"seed must be an integer .* got '7' \(str\)"),
        ({"seed": 3}, r"seed and return_samples apply to Monte-Carlo prediction only"),
        ({"return_samples": True}, r"seed and return_samples apply to Monte-Carlo prediction only"),
    ],
    ids=["zero", "too-many", "float", "bool", "seed-range", "seed-str", "seed-without-mc", "samples-without-mc"],
)
def test_invalid_mc_arguments_are_refused(predictor: Predictor, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        predictor.predict(_rows(1), **kwargs)


def test_extreme_int64_seeds_are_accepted(predictor: Predictor) -> None:
    for seed in (-(2**63), 2**63 - 1, np.int64(9)):
        assert predictor.predict(_rows(1), mc_samples=3, seed=seed).probabilities.shape == (1, 10)


def test_max_mc_samples_bounds_requests_and_what_the_engine_runs_is_checked(tiny_package: Path) -> None:
    small = Predictor.load(tiny_package, max_mc_samples=8)
    with pytest.raises(InvalidInputError, match=r"mc_samples must be an integer in 1\.\.8, got 9"):
        small.predict(_rows(1), mc_samples=9)
    with pytest.raises(InvalidInputError, match=r"unknown output\(s\) \['logits'\] for mode 'mc'"):
        check_request(small, _rows(2), "mc", 4, 0, ("logits",))  # the one check the engine's outputs pass
    with pytest.raises(InvalidInputError, match=r"row_seeds has dtype int64 and shape \(3,\); expected int64 \(2,\)"):
        small.run_mc(_rows(2), 4, row_seeds(0, 3), ["probabilities"])


def test_the_package_can_lower_the_sample_bound(tiny_package: Path, tmp_path: Path) -> None:
    pkg = _copy(tiny_package, tmp_path)
    _edit_manifest(pkg, mc={"max_samples": 50, "rng": "any"})
    bounded = Predictor.load(pkg)
    assert bounded.max_mc_samples == 50
    with pytest.raises(InvalidInputError, match=r"mc_samples must be an integer in 1\.\.50, got 51"):
        bounded.predict(_rows(1), mc_samples=51)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "tpu"}, r"device must be one of \['auto', 'cpu', 'cuda'\], got 'tpu'"),
        ({"intra_op_threads": 0}, r"intra_op_threads must be a positive integer or None, got 0"),
        ({"max_mc_samples": 0}, r"max_mc_samples must be a positive integer, got 0"),
    ],
)
def test_invalid_load_options_are_refused(tiny_package: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Predictor.load(tiny_package, **kwargs)


# --- execution providers ------------------------------------------------------------------------

def test_probe_model_is_a_one_element_identity() -> None:
    model = onnx.load_from_string(providers.PROBE_MODEL)
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Identity"]
    session = ort.InferenceSession(providers.PROBE_MODEL, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": np.array([2.5], np.float32)})[0], [2.5])


@pytest.mark.skipif(providers.nvidia_driver_present(), reason="needs a machine without an NVIDIA driver")
def test_auto_picks_cpu_without_gpu_and_logs_nothing_from_onnxruntime(
    tiny_package: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    providers._probe_cuda.cache_clear()
    caplog.set_level(logging.DEBUG)
    assert Predictor.load(tiny_package, device="auto").provider == "CPUExecutionProvider"
    with pytest.raises(ConfigError, match="device 'cuda' was requested but CUDA is not usable: no NVIDIA driver"):
        Predictor.load(tiny_package, device="cuda")
    captured = capfd.readouterr()
    assert ORT_LOG_LINE not in captured.err + captured.out
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_cuda_probe_with_a_driver_but_no_usable_cuda_stays_quiet(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers() or providers._probe_cuda.__wrapped__()[0]:
        pytest.skip("needs an onnxruntime build with CUDA support on a machine where CUDA is not usable")
    monkeypatch.setattr(providers, "nvidia_driver_present", lambda: True)
    providers._probe_cuda.cache_clear()
    try:
        usable, reason = providers.cuda_status()
    finally:
        providers._probe_cuda.cache_clear()
    assert not usable and "could not start CUDAExecutionProvider" in reason
    assert providers.choose_provider("cpu") == "CPUExecutionProvider"
    captured = capfd.readouterr()
    assert ORT_LOG_LINE not in captured.err + captured.out


def test_concurrent_callers_share_one_cuda_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    probing = threading.Condition()
    probes: list[str] = []

    def available_providers() -> list[str]:  # the probe's first step
        with probing:
            probes.append(threading.current_thread().name)
            probing.notify_all()
            probing.wait_for(lambda: len(probes) > 1, timeout=0.5)  # a second probe would join here
        return ["CPUExecutionProvider"]

    monkeypatch.setattr(providers.ort, "get_available_providers", available_providers)
    providers._probe_cuda.cache_clear()
    try:
        callers = [threading.Thread(target=providers.cuda_status, name=f"caller-{i}") for i in range(4)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        status = providers.cuda_status()
    finally:
        providers._probe_cuda.cache_clear()
    assert len(probes) == 1
    assert status == (False, f"this onnxruntime {ort.__version__} build has no CUDAExecutionProvider")


def test_serving_imports_neither_torch_nor_grpc_nor_trainer() -> None:
    code = (
        "import sys, server.predictor, server.cli_predict; "
        "print(sorted(m for m in ('torch', 'grpc', 'trainer', 'onnx') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
