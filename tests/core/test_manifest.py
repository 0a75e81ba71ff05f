"""The typed manifest: parsing, refusals naming the key, formats 1 and 2, tasks, input dtypes, dropout sites."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dropnet.core.errors import ModelPackageError
from dropnet.core.manifest import (
    DETERMINISTIC_FILE,
    FORMAT,
    FORMAT_V1,
    MC_FILE,
    MIXED,
    DropoutSite,
    DropoutSpec,
    InputSpec,
    Manifest,
    Normalisation,
    OnnxVersions,
    build_manifest,
    onnx_metadata,
    seal_manifest,
)
from dropnet.core.outputs import Mode, Task

WHERE = "pkg/manifest.json"


def _draft(**overrides: Any) -> Manifest:
    fields: dict[str, Any] = {
        "name": "digits", "version": "3", "created": "2025-01-01T00:00:00+00:00", "dropnet_version": "0.1.0",
        "versions": {"dropnet": "0.1.0"}, "source_run": {"command": ["dropnet", "train"]},
        "input": InputSpec("x", (1, 8, 8), "float32", (0.0, 16.0), Normalisation(4.9, 6.0, in_graph=True)),
        "classes": tuple("0123456789"), "architecture": {"arch": "mlp"},
        "dropout": DropoutSpec((DropoutSite("2", "paper", 0.8), DropoutSite("5", "paper", 0.5))),
        "max_norm": (3.5, None), "onnx": OnnxVersions(18, 8), "rng": "philox", "metrics": {"test_error": 0.02},
        **overrides,
    }
    return build_manifest(**fields)


def _sealed(**overrides: Any) -> Manifest:
    return seal_manifest(_draft(**overrides), {DETERMINISTIC_FILE: b"det", MC_FILE: b"mc"}, rng_max_samples=400)


def _raw(**overrides: Any) -> dict[str, Any]:
    return _sealed(**overrides).to_dict()


def test_sealing_adds_digests_bounds_samples_and_round_trips() -> None:
    manifest = _sealed()
    assert manifest.format == FORMAT and manifest.task is Task.CLASSIFICATION
    assert manifest.files[MC_FILE].bytes == 2 and len(manifest.files[MC_FILE].sha256) == 64
    assert manifest.mc.max_samples == 400
    raw = manifest.to_dict()
    assert raw["dropout"] == {
        "flavour": "paper", "retain": [0.8, 0.5],
        "sites": [{"path": "2", "kind": "paper", "retain": 0.8, "granularity": "element"},
                  {"path": "5", "kind": "paper", "retain": 0.5, "granularity": "element"}],
    }
    assert "targets" not in raw and raw["task"] == "classification"
    assert Manifest.from_dict(raw, WHERE) == manifest
    assert Manifest.from_dict(raw, WHERE).to_dict() == raw


def test_the_manifest_is_read_only() -> None:
    manifest = _sealed()
    with pytest.raises(AttributeError):
        manifest.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        manifest.metrics["test_error"] = 1.0  # type: ignore[index]


def test_format_1_loads_as_classification_without_site_paths() -> None:
    raw = _raw()
    raw["format"] = FORMAT_V1
    del raw["task"], raw["dropout"]["sites"]
    manifest = Manifest.from_dict(raw, WHERE)
    assert manifest.task is Task.CLASSIFICATION and manifest.targets == ()
    assert manifest.dropout.sites == (DropoutSite(None, "paper", 0.8), DropoutSite(None, "paper", 0.5))
    assert manifest.to_dict() == raw  # written back in its own format
    with pytest.raises(ModelPackageError, match=r"has unknown key\(s\) \['task'\]"):
        Manifest.from_dict({**raw, "task": "classification"}, WHERE)


def test_a_missing_task_means_classification() -> None:
    raw = _raw()
    del raw["task"]
    assert Manifest.from_dict(raw, WHERE).task is Task.CLASSIFICATION


def test_regression_packages_name_their_targets_and_have_no_classes() -> None:
    manifest = _sealed(task=Task.REGRESSION, classes=(), targets=("price", "volume"))
    raw = manifest.to_dict()
    assert raw["task"] == "regression" and raw["targets"] == ["price", "volume"] and "classes" not in raw
    assert Manifest.from_dict(raw, WHERE) == manifest
    assert Manifest.from_dict({**raw, "classes": []}, WHERE) == manifest
    assert manifest.sizes() == {"D": 2} and manifest.labels_key == "targets"
    assert [spec.name for spec in manifest.outputs(Mode.MC)] == ["mean", "std", "samples"]
    assert onnx_metadata(manifest)["targets"] == '["price", "volume"]'
    with pytest.raises(ModelPackageError, match=r"classes must be absent or empty for a regression package"):
        Manifest.from_dict({**raw, "classes": ["a"]}, WHERE)
    with pytest.raises(ModelPackageError, match=r"targets is missing; expected a non-empty list"):
        Manifest.from_dict({key: value for key, value in raw.items() if key != "targets"}, WHERE)
    with pytest.raises(ModelPackageError, match=r"targets must be absent for a classification package"):
        Manifest.from_dict({**_raw(), "targets": ["y"]}, WHERE)


def test_integer_inputs_take_integer_value_ranges_and_need_no_normalisation() -> None:
    tokens = InputSpec("x", (12,), "int64", (0, 999))
    manifest = _sealed(input=tokens)
    raw = manifest.to_dict()
    assert raw["input"] == {"name": "x", "shape": [12], "dtype": "int64", "value_range": [0, 999]}
    parsed = Manifest.from_dict(raw, WHERE).input
    assert parsed == tokens and parsed.is_integer and parsed.normalisation is None
    raw["input"]["value_range"] = [0, 999.5]
    with pytest.raises(ModelPackageError, match=r"input\.value_range must be \[low, high\] with low <= high, "
                                                 r"integers for an integer input, within int64 \[-9223372036854775808, "
                                                 r"9223372036854775807\], got \[0, 999\.5\]"):
        Manifest.from_dict(raw, WHERE)


def test_an_integer_value_range_must_fit_the_input_dtype() -> None:
    raw = _sealed(input=InputSpec("x", (4,), "uint8", (0, 255))).to_dict()
    assert Manifest.from_dict(raw, WHERE).input.value_range == (0, 255)
    raw["input"]["value_range"] = [0, 1000]  # 1000 would wrap to 232 when cast to uint8
    with pytest.raises(ModelPackageError, match=r"input\.value_range must be .* within uint8 \[0, 255\], got \[0, 1000\]"):
        Manifest.from_dict(raw, WHERE)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("input", "dtype"), "bool", r"input\.dtype must be one of \['float32', .*'uint8'\], got 'bool'"),
        (("input", "name"), "tokens", r"input\.name must be 'x', got 'tokens'"),
        (("input", "value_range"), [16, 0], r"input\.value_range must be \[low, high\] with low <= high, got"),
        (("input", "normalisation", "std"), 0, r"input\.normalisation\.std must be a positive finite number, got 0"),
        (("input", "extra"), 1, r"input has unknown key\(s\) \['extra'\]"),
        (("classes",), [], r"classes must be a non-empty list of distinct non-empty strings, got \[\]"),
        (("task",), "ranking", r"task must be one of \['classification', 'regression'\], got 'ranking'"),
        (("dropout", "flavour"), "inverted", r"dropout\.flavour must be 'paper', the kind of every site, got 'inv"),
        (("dropout", "retain"), [0.8, 0.4], r"dropout\.retain must be \[0\.8, 0\.5\], each site's retain"),
        (("dropout", "sites", 1, "retain"), 0, r"dropout\.sites\[1\]\.retain must be a probability in \(0, 1\], got 0"),
        (("dropout", "sites", 0, "granularity"), "row", r"dropout\.sites\[0\]\.granularity must be one of"),
        (("files", MC_FILE, "sha256"), "abc", r"files\.mc\.onnx\.sha256 must be 64 lowercase hex digits, got 'abc'"),
        (("mc", "max_samples"), 0, r"mc\.max_samples must be an integer >= 1, got 0"),
        (("max_norm",), [3.5, -1], r"max_norm must be a list of positive numbers or nulls, got \[3\.5, -1\]"),
        (("versions",), {"torch": 2}, r"versions must be a JSON object of strings"),
        (("metrics",), [], r"metrics must be a JSON object, got \[\]"),
        (("clases",), ["a"], r"has unknown key\(s\) \['clases'\]"),
        (("format",), "dropnet-model/3", r"format must be 'dropnet-model/2' or 'dropnet-model/1', got '.*/3'"),
    ],
)
def test_bad_values_are_refused_naming_the_key(path: tuple, value: Any, message: str) -> None:
    raw = copy.deepcopy(_raw())
    parent = raw
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    with pytest.raises(ModelPackageError, match=rf"^{WHERE}: {message}"):
        Manifest.from_dict(raw, WHERE)


def test_sites_of_different_kinds_make_a_mixed_flavour() -> None:
    dropout = DropoutSpec((DropoutSite("a", "inverted", 0.9), DropoutSite("b", "gaussian", 0.5, "channel")))
    manifest = _sealed(dropout=dropout)
    assert manifest.to_dict()["dropout"]["flavour"] == MIXED
    assert Manifest.from_dict(manifest.to_dict(), WHERE).dropout == dropout


def test_a_draft_that_would_not_load_is_refused_when_sealed() -> None:
    with pytest.raises(ModelPackageError, match=r"the manifest of digits version 3: classes must be a non-empty list"):
        _sealed(classes=())


def test_class_labels_must_be_distinct() -> None:
    raw = _raw()
    raw["classes"] = [raw["classes"][0]] * len(raw["classes"])
    with pytest.raises(ModelPackageError, match=r"classes must be a non-empty list of distinct non-empty strings, got"):
        Manifest.from_dict(raw, WHERE)
