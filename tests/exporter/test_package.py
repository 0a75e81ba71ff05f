"""Model package export: manifest, ONNX metadata, onnxruntime parity, atomic writes, the CLI."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import dropnet
from dropnet.cli import main
from dropnet.core.errors import ModelPackageError
from dropnet.exporter import package as package_module
from dropnet.exporter.graphs import IR_VERSION, OPSET, RNG_SCHEME
from dropnet.exporter.package import export_package
from tests.factories import DIGITS_SPEC, make_run_dir
from dropnet.trainer.config import ModelConfig
from dropnet.trainer.rundir import load_run, read_config, update_config

TINY_MODEL = ModelConfig(hidden=[16, 16])


def _manifest(package: Path) -> dict:
    return json.loads((package / "manifest.json").read_text())


def _rows(n: int, seed: int = 1) -> np.ndarray:
    low, high = DIGITS_SPEC.value_range
    return np.random.default_rng(seed).uniform(low, high, size=(n, *DIGITS_SPEC.shape)).astype(np.float32)


def test_manifest_lists_everything_the_interface_promises(tiny_package: Path, tiny_run_dir: Path) -> None:
    manifest = _manifest(tiny_package)
    run = read_config(tiny_run_dir)
    assert manifest["format"] == "dropnet-model/2"
    assert manifest["task"] == "classification" and "targets" not in manifest
    assert (manifest["name"], manifest["version"]) == ("tiny-digits", "1")
    assert manifest["dropnet_version"] == dropnet.__version__
    assert manifest["versions"]["onnx"] == onnx.__version__
    assert manifest["versions"]["onnxruntime"] == ort.__version__
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["versions"]["dropnet"] == dropnet.__version__
    assert manifest["source_run"] == {"config": run["config"], "created": run["created"], "command": run["command"]}
    assert manifest["input"] == {
        "name": "x", "shape": [1, 8, 8], "dtype": "float32", "value_range": [0.0, 16.0],
        "normalisation": {"mean": 4.88, "std": 6.02, "in_graph": True},
    }
    assert manifest["classes"] == [str(d) for d in range(10)]
    assert manifest["architecture"] == run["config"]["model"]
    assert manifest["dropout"] == {
        "flavour": "paper",
        "retain": [0.8, 0.5, 0.5],
        "sites": [  # the Dropout modules of Standardize, Flatten, Dropout, (Linear, ReLU, Dropout) x 2, Linear
            {"path": "2", "kind": "paper", "retain": 0.8, "granularity": "element"},
            {"path": "5", "kind": "paper", "retain": 0.5, "granularity": "element"},
            {"path": "8", "kind": "paper", "retain": 0.5, "granularity": "element"},
        ],
    }
    assert manifest["max_norm"] == [3.5, 3.5, None]
    assert manifest["onnx"] == {"opset": OPSET, "ir_version": IR_VERSION}
    sample_bytes = manifest["mc"]["sample_bytes"]  # its value: tests/exporter/test_first_sample.py
    assert manifest["mc"] == {"max_samples": 1000, "rng": RNG_SCHEME, "sample_bytes": sample_bytes}
    assert isinstance(sample_bytes, int) and sample_bytes > 0
    assert manifest["metrics"] == {}
    for file_name in ("deterministic.onnx", "mc.onnx"):
        data = (tiny_package / file_name).read_bytes()
        assert manifest["files"][file_name] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert sorted(p.name for p in tiny_package.iterdir()) == ["deterministic.onnx", "manifest.json", "mc.onnx"]


def test_name_version_and_final_metrics_are_carried(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path / "run", TINY_MODEL)
    metrics = {"test_error": 0.031, "val_error": 0.027}
    update_config(run_dir, final_metrics=metrics)
    manifest = _manifest(export_package(run_dir, tmp_path / "pkg", name="digits-mlp", version="7"))
    assert (manifest["name"], manifest["version"], manifest["metrics"]) == ("digits-mlp", "7", metrics)


def test_bare_onnx_files_describe_themselves(tiny_package: Path) -> None:
    for graph in ("deterministic", "mc"):
        props = {p.key: p.value for p in onnx.load(tiny_package / f"{graph}.onnx").metadata_props}
        assert props["graph"] == graph
        assert (props["name"], props["version"], props["format"]) == ("tiny-digits", "1", "dropnet-model/2")
        assert props["task"] == "classification"
        assert props["flavour"] == "paper"
        assert json.loads(props["retain"]) == [0.8, 0.5, 0.5]
        assert json.loads(props["max_norm"]) == [3.5, 3.5, None]
        assert json.loads(props["classes"]) == [str(d) for d in range(10)]
        assert json.loads(props["input_shape"]) == [1, 8, 8]
        assert json.loads(props["value_range"]) == [0.0, 16.0]
        assert json.loads(props["normalisation"]) == {"mean": 4.88, "std": 6.02, "in_graph": True}
        assert props["dropnet_version"] == dropnet.__version__
        assert props.get("rng_scheme") == (RNG_SCHEME if graph == "mc" else None)


def test_graphs_load_in_the_installed_onnxruntime_at_the_declared_ir_and_opset(tiny_package: Path) -> None:
    manifest = _manifest(tiny_package)
    for file_name, inputs in (("deterministic.onnx", ["x"]), ("mc.onnx", ["x", "num_samples", "seed"])):
        proto = onnx.load(tiny_package / file_name)
        assert proto.ir_version == manifest["onnx"]["ir_version"]
        assert {o.domain: o.version for o in proto.opset_import}.get("", None) == manifest["onnx"]["opset"]
        session = ort.InferenceSession(str(tiny_package / file_name), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == inputs


def test_deterministic_graph_reproduces_the_torch_test_time_network(tiny_package: Path, tiny_run_dir: Path) -> None:
    _, _, model = load_run(tiny_run_dir)
    x = _rows(32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(tiny_package / "deterministic.onnx"), providers=["CPUExecutionProvider"])
    logits, probabilities = session.run(["logits", "probabilities"], {"x": x})
    assert np.max(np.abs(logits - expected)) <= 1e-5
    np.testing.assert_allclose(probabilities, torch.softmax(torch.from_numpy(expected), dim=1).numpy(), atol=1e-6)


def test_export_refuses_a_graph_that_does_not_match_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_build = package_module.build_deterministic

    def build_from_perturbed(model: torch.nn.Sequential, spec, metadata):  # type: ignore[no-untyped-def]
        perturbed = copy.deepcopy(model)
        with torch.no_grad():
            perturbed[-1].bias += 1e-3
        return real_build(perturbed, spec, metadata)

    monkeypatch.setattr(package_module, "build_deterministic", build_from_perturbed)
    run_dir = make_run_dir(tmp_path / "run", TINY_MODEL)
    message = r"deterministic\.onnx: logits .* max \|Δ\| = 0\.001.*expected ≤ 1e-05"
    with pytest.raises(ModelPackageError, match=message):
        export_package(run_dir, tmp_path / "pkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing written, no staging left


def test_existing_package_is_refused_then_replaced_with_force(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path / "run", TINY_MODEL)
    out = export_package(run_dir, tmp_path / "pkg", version="1")
    with pytest.raises(ModelPackageError, match="already holds a model package; pass --force"):
        export_package(run_dir, out, version="2")
    assert _manifest(out)["version"] == "1"
    export_package(run_dir, out, version="2", force=True)
    assert _manifest(out)["version"] == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg", "run"]  # no staging or retired dirs left


def test_empty_destination_is_used_and_foreign_directories_are_never_replaced(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path / "run", TINY_MODEL)
    (tmp_path / "empty").mkdir()
    assert (export_package(run_dir, tmp_path / "empty") / "manifest.json").is_file()
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("keep me")
    with pytest.raises(ModelPackageError, match="non-empty directory without manifest.json"):
        export_package(run_dir, foreign, force=True)
    assert (foreign / "todo.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelPackageError, match="is not a directory"):
        export_package(run_dir, tmp_path / "file")


def test_cli_export_writes_a_package_and_reports_refusals(
    tiny_run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli-pkg"
    assert main(["export", str(tiny_run_dir), "--out", str(out), "--name", "cli", "--version", "3"]) == 0
    assert (_manifest(out)["name"], _manifest(out)["version"]) == ("cli", "3")
    assert main(["export", str(tiny_run_dir), "--out", str(out)]) == 2
    assert "already holds a model package; pass --force" in capsys.readouterr().err
    assert main(["export", str(tiny_run_dir), "--out", str(out), "--force"]) == 0
    assert _manifest(out)["name"] == "tiny-digits"


def test_package_files_and_directory_are_synced_before_the_rename_and_the_parent_after(
    tiny_run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        real_fsync(fd)
        events.append(("fsync", os.fstat(fd).st_ino))

    def replace(src: str | Path, dst: str | Path) -> None:
        real_replace(src, dst)
        events.append(("replace", Path(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    out = export_package(tiny_run_dir, tmp_path / "pkg")
    rename = events.index(("replace", out))
    before = {inode for _, inode in events[:rename]}
    assert {p.stat().st_ino for p in [*out.iterdir(), out]} <= before
    assert events[rename + 1 :] == [("fsync", tmp_path.stat().st_ino)]


def test_cli_export_reports_unwritable_and_unreadable_paths_without_a_traceback(
    tiny_run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("x")
    assert main(["export", str(tiny_run_dir), "--out", str(tmp_path / "file" / "pkg")]) == 2
    err = capsys.readouterr().err
    assert f"dropnet export: error: cannot create the directory {tmp_path / 'file' / 'pkg'}: " in err
    assert "Traceback" not in err
    config_path = tiny_run_dir / "config.json"
    real_read_text = Path.read_text

    def unreadable(path: Path, *args: object, **kwargs: object) -> str:
        if path == config_path:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", unreadable)
    assert main(["export", str(tiny_run_dir), "--out", str(tmp_path / "pkg")]) == 2
    assert f"dropnet export: error: {config_path}: cannot be read (Permission denied)" in capsys.readouterr().err
