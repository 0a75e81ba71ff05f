"""``dropnet export --triton-repo``: configs read by Triton's own schema, checked against the graphs, run as the
onnxruntime backend would run them (its session options at each ``optimization { graph { level } }``).

No Triton server runs here; docs/triton.md says what that leaves untested.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format
from torch import nn
from tritonclient.grpc import model_config_pb2

from dropnet.cli import main
from dropnet.core.errors import ModelPackageError
from dropnet.core.manifest import FIRST_SAMPLE_INPUT, MANIFEST_FILE, Manifest
from dropnet.core.outputs import Mode
from dropnet.core.seeding import row_seeds
from dropnet.exporter.triton import (
    CONFIG_FILE,
    MAX_BATCH_SIZE,
    MODEL_FILE,
    PLATFORM,
    QUEUE_DELAY_US,
    check_name,
    triton_version,
    write_repository,
)
from dropnet.server.package import read_package
from dropnet.server.predictor import Predictor
from tests.exporter.helpers import mc_feeds, run, session

BACKEND_LEVELS = {
    "absent (default)": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "-1": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "1": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "2": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}
"""onnxruntime_backend (src/onnxruntime.cc): config ``optimization { graph { level } }`` → session's level."""
ONNX_TYPES = {"TYPE_FP32": "tensor(float)", "TYPE_INT64": "tensor(int64)"}
TOLERANCE = 1e-5
"""|Δ| allowed between a Triton graph under some level and the Predictor (float32 rounding of fused kernels)."""
SIGMAS = 5


@pytest.fixture(scope="module")
def repo(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Triton repository of the tiny package."""
    repo_dir = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(tiny_package, repo_dir)
    return repo_dir


def config(model_dir: Path) -> model_config_pb2.ModelConfig:
    """``model_dir``'s config.pbtxt, parsed with Triton's model-config schema."""
    return text_format.Parse((model_dir / CONFIG_FILE).read_text(), model_config_pb2.ModelConfig())


def rows(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 16, size=(count, 1, 8, 8)).astype(np.float32)


def test_repository_layout_and_provenance(repo: Path, tiny_package: Path) -> None:
    package = read_package(tiny_package)
    sha = hashlib.sha256((tiny_package / MANIFEST_FILE).read_bytes()).hexdigest()
    assert sorted(path.name for path in repo.iterdir()) == ["tiny-digits", "tiny-digits_mc"]
    for mode, name in ((Mode.DETERMINISTIC, "tiny-digits"), (Mode.MC, "tiny-digits_mc")):
        assert sorted(str(p.relative_to(repo / name)) for p in (repo / name).rglob("*")) == [
            "1", f"1/{MODEL_FILE}", CONFIG_FILE
        ]
        assert (repo / name / "1" / MODEL_FILE).read_bytes() == package.graphs[mode]
        parsed = config(repo / name)
        params = {key: value.string_value for key, value in parsed.parameters.items()}
        assert params["dropnet_manifest_sha256"] == sha
        assert (params["dropnet_model"], params["dropnet_version"], params["dropnet_mode"]) == (
            "tiny-digits", "1", mode.value
        )
        assert sha in (repo / name / CONFIG_FILE).read_text().splitlines()[1]


def test_configs_have_the_chosen_scheduling(repo: Path) -> None:
    det, mc = config(repo / "tiny-digits"), config(repo / "tiny-digits_mc")
    for parsed, name in ((det, "tiny-digits"), (mc, "tiny-digits_mc")):
        assert (parsed.name, parsed.platform) == (name, PLATFORM)
        assert [(group.count, group.kind) for group in parsed.instance_group] == [
            (1, model_config_pb2.ModelInstanceGroup.KIND_AUTO)
        ]
        assert not parsed.HasField("optimization")  # the backend's default level: ORT_ENABLE_ALL
    assert det.max_batch_size == MAX_BATCH_SIZE > 0
    assert det.dynamic_batching.max_queue_delay_microseconds == QUEUE_DELAY_US
    assert mc.max_batch_size == 0 and not mc.HasField("dynamic_batching")
    assert {i.name: i.optional for i in mc.input} == {"x": False, "num_samples": False, "seed": False,
                                                      FIRST_SAMPLE_INPUT: True}


@pytest.mark.parametrize("name", ["tiny-digits", "tiny-digits_mc"])
def test_config_matches_the_onnx_graph(repo: Path, name: str) -> None:
    """Names, types and dims, checked as onnxruntime_backend's ValidateInputs/ValidateOutputs check them."""
    parsed = config(repo / name)
    sess = session(repo / name / "1" / MODEL_FILE)
    graph_inputs = {i.name: i for i in sess.get_inputs()}
    overridable = {i.name: i for i in sess.get_overridable_initializers()}
    assert {i.name for i in parsed.input if not i.optional} == set(graph_inputs)
    assert {i.name for i in parsed.input if i.optional} == set(overridable)
    graph_outputs = {o.name: o for o in sess.get_outputs()}
    assert [o.name for o in parsed.output] == list(graph_outputs)
    for entry, graph in [(i, {**graph_inputs, **overridable}[i.name]) for i in parsed.input] + [
        (o, graph_outputs[o.name]) for o in parsed.output
    ]:
        assert ONNX_TYPES[model_config_pb2.DataType.Name(entry.data_type)] == graph.type, entry.name
        dims = list(entry.reshape.shape) if entry.HasField("reshape") else list(entry.dims)
        if not graph.shape:  # a scalar: the backend wants every configured dim to be 1
            assert set(entry.dims) == {1}, entry.name
            continue
        graph_dims = [-1 if isinstance(d, str) or d is None else d for d in graph.shape]
        expected = graph_dims[1:] if parsed.max_batch_size > 0 else graph_dims
        if parsed.max_batch_size > 0:
            assert graph_dims[0] == -1, f"{entry.name}: a batched model needs a variable first dim"
        assert dims == expected, entry.name


@pytest.mark.parametrize("level", BACKEND_LEVELS)
def test_graphs_answer_as_the_predictor_at_every_backend_level(repo: Path, tiny_package: Path, level: str) -> None:
    predictor = Predictor.load(tiny_package, device="cpu")
    x, samples, seed = rows(5), 40, 11
    det = run(session(repo / "tiny-digits" / "1" / MODEL_FILE, BACKEND_LEVELS[level]), x=x)
    expected = predictor.run_deterministic(x)
    for name, value in expected.items():
        np.testing.assert_allclose(det[name], value, rtol=0, atol=TOLERANCE, err_msg=f"{level} {name}")
    mc = run(session(repo / "tiny-digits_mc" / "1" / MODEL_FILE, BACKEND_LEVELS[level]), **mc_feeds(x, samples, seed))
    expected = predictor.run_mc(x, samples, row_seeds(seed, len(x)))
    for name, value in expected.items():
        np.testing.assert_allclose(mc[name], value, rtol=0, atol=TOLERANCE, err_msg=f"{level} {name}")


@pytest.mark.parametrize("level", BACKEND_LEVELS)
def test_mc_graph_stays_seeded_and_stochastic_at_every_backend_level(repo: Path, level: str) -> None:
    sess = session(repo / "tiny-digits_mc" / "1" / MODEL_FILE, BACKEND_LEVELS[level])
    x = rows(3)
    first, again, other = (run(sess, **mc_feeds(x, 20, seed)) for seed in (1, 1, 2))
    for name in first:
        np.testing.assert_array_equal(first[name], again[name], err_msg=f"{level} {name}")
    assert np.abs(first["samples"] - other["samples"]).max() > 1e-3, f"{level}: seeds 1 and 2 agree"
    assert np.abs(np.diff(first["samples"], axis=0)).max() > 1e-3, f"{level}: all samples alike"
    tail = run(sess, **mc_feeds(x, 8, 1), **{FIRST_SAMPLE_INPUT: np.array(12, np.int64)})  # the optional input
    np.testing.assert_array_equal(tail["samples"], first["samples"][12:], err_msg=level)


def _mask_net(units: int) -> nn.Module:
    """Dropout(0.3) then an identity Linear: each MC sample of a row of ones is its mask / retain."""
    torch.manual_seed(0)
    linear = nn.Linear(units, units, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(units))
    return nn.Sequential(nn.Dropout(0.3), linear)


def test_masks_have_the_manifests_keep_rate_at_every_backend_level(tmp_path: Path) -> None:
    """Keep rate within 5σ of the site's retain p, and no correlation between consecutive samples (5σ)."""
    import dropnet

    units, batch, samples = 32, 4, 200
    package = dropnet.export_module(_mask_net(units), torch.ones(2, units), tmp_path / "pkg", name="masks",
                                    task="regression")
    models = write_repository(package, tmp_path / "repo")
    retain = Manifest.from_dict(json.loads((package / MANIFEST_FILE).read_text()), "manifest").dropout.retain[0]
    assert [list(o.dims) for o in config(models[Mode.MC]).output] == [[-1, units], [-1, units], [-1, -1, units]]
    x = np.ones((batch, units), np.float32)
    for level, ort_level in BACKEND_LEVELS.items():
        sess = session(models[Mode.MC] / "1" / MODEL_FILE, ort_level)
        kept = run(sess, **mc_feeds(x, samples, 5))["samples"] > 0.5 / retain
        count = kept.size
        assert abs(kept.mean() - retain) < SIGMAS * math.sqrt(retain * (1 - retain) / count), level
        a, b = kept[:-1].astype(float).ravel(), kept[1:].astype(float).ravel()
        assert abs(np.corrcoef(a, b)[0, 1]) < SIGMAS / math.sqrt(a.size), level
        values = np.unique(run(sess, **mc_feeds(x, samples, 5))["samples"])
        np.testing.assert_allclose(values, [0.0, 1 / retain], rtol=1e-6, err_msg=level)


@pytest.mark.parametrize(
    ("version", "directory"), [("1", 1), ("7", 7), ("12", 12), ("0", 1), ("007", 1), ("1.2", 1), ("v3", 1)]
)
def test_version_directory(version: str, directory: int) -> None:
    assert triton_version(version) == directory


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "a\\b", 'say "hi"', "tab\there"])
def test_names_that_cannot_be_model_directories_are_refused(name: str) -> None:
    with pytest.raises(ModelPackageError, match="cannot name a Triton model directory"):
        check_name(name)


def _export(run_dir: Path, out: Path, repo: Path, *extra: str) -> int:
    return main(["export", str(run_dir), "--out", str(out), "--name", "digits", "--triton-repo", str(repo), *extra])


def test_cli_writes_the_package_and_the_repository(
    tiny_run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _export(tiny_run_dir, tmp_path / "pkg", tmp_path / "repo", "--version", "3") == 0
    out = capsys.readouterr().out
    assert f"wrote Triton models {tmp_path / 'repo' / 'digits'}, {tmp_path / 'repo' / 'digits_mc'}" in out
    for name in ("digits", "digits_mc"):
        assert (tmp_path / "repo" / name / "3" / MODEL_FILE).is_file()
        assert config(tmp_path / "repo" / name).name == name
    assert [p.name for p in (tmp_path / "repo").iterdir() if p.name.startswith(".")] == []


def test_cli_refuses_a_repository_path_that_is_a_file(
    tiny_run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "repo").write_text("not a directory")
    assert _export(tiny_run_dir, tmp_path / "pkg", tmp_path / "repo") == 2
    assert f"--triton-repo {tmp_path / 'repo'} exists and is not a directory" in capsys.readouterr().err
    assert not (tmp_path / "pkg").exists()  # refused before anything was exported


def test_cli_refuses_a_non_empty_directory_that_is_not_a_triton_model_even_with_force(
    tiny_run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "repo" / "digits_mc").mkdir(parents=True)
    (tmp_path / "repo" / "digits_mc" / "notes.txt").write_text("mine")
    assert _export(tiny_run_dir, tmp_path / "pkg", tmp_path / "repo", "--force") == 2
    foreign = tmp_path / "repo" / "digits_mc"
    assert f"{foreign} is a non-empty directory without {CONFIG_FILE}" in capsys.readouterr().err
    assert (tmp_path / "repo" / "digits_mc" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "pkg").exists() and not (tmp_path / "repo" / "digits").exists()


def test_cli_replaces_existing_triton_models_only_with_force(
    tiny_run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    assert _export(tiny_run_dir, tmp_path / "pkg", repo, "--version", "2") == 0
    assert _export(tiny_run_dir, tmp_path / "pkg2", repo) == 2
    assert f"{repo / 'digits'} already holds a Triton model; pass --force to replace it" in capsys.readouterr().err
    assert not (tmp_path / "pkg2").exists()
    assert _export(tiny_run_dir, tmp_path / "pkg", repo, "--force") == 0
    for name in ("digits", "digits_mc"):  # replaced as a whole: version 2 is gone
        assert sorted(p.name for p in (repo / name).iterdir()) == ["1", CONFIG_FILE]
    assert sorted(p.name for p in repo.iterdir()) == ["digits", "digits_mc"]


def test_a_package_without_first_sample_gets_no_optional_input(tiny_package: Path, tmp_path: Path) -> None:
    """Graphs exported before first_sample: the MC config lists x, num_samples and seed only."""
    import onnx

    package = tmp_path / "old"
    shutil.copytree(tiny_package, package)
    mc = onnx.load(package / "mc.onnx")
    kept = [i for i in mc.graph.input if i.name != FIRST_SAMPLE_INPUT]
    del mc.graph.input[:]
    mc.graph.input.extend(kept)  # first_sample stays an initializer: a constant 0, as before the input existed
    data = mc.SerializeToString()
    (package / "mc.onnx").write_bytes(data)
    raw = json.loads((package / MANIFEST_FILE).read_text())
    raw["files"]["mc.onnx"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (package / MANIFEST_FILE).write_text(json.dumps(raw))
    models = write_repository(package, tmp_path / "repo")
    assert [i.name for i in config(models[Mode.MC]).input] == ["x", "num_samples", "seed"]
    assert session(models[Mode.MC] / "1" / MODEL_FILE).get_overridable_initializers() == []
