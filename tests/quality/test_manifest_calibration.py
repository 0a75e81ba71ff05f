"""The manifest's optional ``calibration`` field: typed, checked by from_dict key by key, written by to_dict."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from dropnet.core.errors import ModelPackageError
from dropnet.core.manifest import FORMAT_V1, MANIFEST_FILE, Calibration, Manifest, ModeCalibration

WHERE = "pkg/manifest.json"
DIGEST = {"sha256": "ab" * 32, "bytes": 12}
CALIBRATION = {
    "method": "temperature",
    "deterministic": {"temperature": 1.25, "ece_before": 0.03, "ece_after": 0.01, "nll_before": 0.2,
                      "nll_after": 0.18},
    "mc": {"temperature": 0.65, "ece_before": 0.021, "ece_after": 0.01, "nll_before": 0.074, "nll_after": 0.069},
    "split": "val",
    "examples": 10000,
    "dataset": "mnist",
    "data_files": [DIGEST, {"sha256": "cd" * 32, "bytes": 7}],
    "mc_samples": 50,
    "seed": 0,
    "ece_bins": 15,
    "source": {"version": "1", "files": {"deterministic.onnx": DIGEST, "mc.onnx": DIGEST}},
}


@pytest.fixture(scope="module")
def raw(tiny_package: Path) -> dict[str, Any]:
    """A real package's manifest with :data:`CALIBRATION` added."""
    return {**json.loads((tiny_package / MANIFEST_FILE).read_text()), "calibration": copy.deepcopy(CALIBRATION)}


def test_the_field_round_trips_typed(raw: dict[str, Any]) -> None:
    manifest = Manifest.from_dict(raw, WHERE)
    record = manifest.calibration
    assert isinstance(record, Calibration)
    assert record.mc == ModeCalibration(0.65, 0.021, 0.01, 0.074, 0.069)
    assert record.of("deterministic").temperature == 1.25
    assert [d.bytes for d in record.data_files] == [12, 7] and record.source_files["mc.onnx"].sha256 == "ab" * 32
    assert manifest.to_dict() == raw


def test_packages_without_it_load_and_write_none(tiny_package: Path) -> None:
    raw = json.loads((tiny_package / MANIFEST_FILE).read_text())
    manifest = Manifest.from_dict(raw, WHERE)
    assert manifest.calibration is None and "calibration" not in manifest.to_dict()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["mc"].update(temperature=0), "calibration.mc.temperature must be a positive finite number, got 0"),
        (lambda c: c["deterministic"].update(ece_after=1.5),
         "calibration.deterministic.ece_after must be a number in [0, 1], got 1.5"),
        (lambda c: c["mc"].update(nll_before=-0.1), "calibration.mc.nll_before must be a finite number >= 0"),
        (lambda c: c["mc"].pop("nll_after"), "calibration.mc.nll_after is missing"),
        (lambda c: c.update(method="platt"), "calibration.method must be one of ['temperature'], got 'platt'"),
        (lambda c: c.update(examples=0), "calibration.examples must be an integer >= 1, got 0"),
        (lambda c: c.update(seed=-1), "calibration.seed must be an integer >= 0, got -1"),
        (lambda c: c.update(data_files=[{"sha256": "x", "bytes": 1}]),
         "calibration.data_files[0].sha256 must be 64 lowercase hex digits, got 'x'"),
        (lambda c: c.update(data_files={}), "calibration.data_files must be a list of {sha256, bytes} objects"),
        (lambda c: c["source"].pop("version"), "calibration.source.version is missing"),
        (lambda c: c.update(tau=1.0), "calibration has unknown key(s) ['tau']"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(raw: dict[str, Any], change, message: str) -> None:
    bad = copy.deepcopy(raw)
    change(bad["calibration"])
    with pytest.raises(ModelPackageError) as error:
        Manifest.from_dict(bad, WHERE)
    assert str(error.value).startswith(f"{WHERE}: ") and message in str(error.value)


def test_regression_and_format_1_manifests_cannot_carry_it(raw: dict[str, Any]) -> None:
    regression = {**copy.deepcopy(raw), "task": "regression", "targets": raw["classes"]}
    del regression["classes"]
    with pytest.raises(ModelPackageError, match="calibration must be absent for a regression package"):
        Manifest.from_dict(regression, WHERE)
    v1 = {**copy.deepcopy(raw), "format": FORMAT_V1}
    del v1["task"]
    with pytest.raises(ModelPackageError, match=r"unknown key\(s\) \['calibration'\]"):
        Manifest.from_dict(v1, WHERE)
