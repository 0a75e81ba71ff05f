"""`dropnet calibrate`: over- and under-confident toy packages move toward ECE 0, and the calibrated version
serves unchanged in the Predictor and a server's repository."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

from dropnet.cli import main
from dropnet.core.errors import DataError
from dropnet.core.manifest import MANIFEST_FILE, data_digest
from dropnet.core.outputs import Mode
from dropnet.quality.calibrate import CalibrationResult, calibrate_package
from dropnet.quality.datasets import package_split
from dropnet.quality.metrics import TINY, ece, nll
from dropnet.server.predictor import Predictor
from dropnet.server.repository import ModelRef, ModelRepository
from tests.quality.conftest import BLOB_ROWS
from tests.server.helpers import make_settings

MC_SAMPLES = 50
VAL_ROWS = 800
"""The blobs' validation split: 1/6 of the 4,800 rows left after the 20% test split."""


def copy_model(package: Path, models: Path) -> Path:
    """``package`` (``<name>/1``) copied to ``models/<name>/1``."""
    target = models / package.parent.name / package.name
    shutil.copytree(package, target)
    return target


@pytest.fixture(scope="module")
def calibrated(blob_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, CalibrationResult]:
    """Each toy model calibrated into version 2 of a copy of its model directory."""
    models = tmp_path_factory.mktemp("calibrated-models")
    return {name: calibrate_package(copy_model(path, models)) for name, path in blob_models.items()}


@pytest.mark.parametrize(("name", "direction"), [("over", 1), ("under", -1)])
def test_over_and_under_confident_packages_move_toward_ece_zero(
    calibrated: dict[str, CalibrationResult], name: str, direction: int
) -> None:
    record = calibrated[name].calibration
    for mode in Mode:
        entry = record.of(mode)
        assert np.sign(np.log(entry.temperature)) == direction, (mode, entry)
        assert entry.ece_after < entry.ece_before / 2, (mode, entry)
        assert entry.nll_after < entry.nll_before, (mode, entry)


def test_the_new_version_and_its_manifest_record_the_calibration(
    calibrated: dict[str, CalibrationResult], blob_models: dict[str, Path], blobs: Path
) -> None:
    result = calibrated["over"]
    source = Predictor.load(result.source, device="cpu").manifest
    manifest = result.manifest
    assert result.package == result.source.parent / "2"
    assert (manifest.name, manifest.version) == ("over", "2")
    record = manifest.calibration
    assert record is not None
    assert (record.method, record.split, record.examples, record.dataset) == ("temperature", "val", VAL_ROWS,
                                                                              "blobs.npz")
    assert record.data_files == (data_digest(blobs.read_bytes()),)
    assert (record.mc_samples, record.seed, record.ece_bins) == (MC_SAMPLES, 0, 15)
    assert (record.source_version, record.source_files) == ("1", source.files)
    assert manifest.source_run["config"] == source.source_run["config"]
    provenance = manifest.source_run["calibration"]
    assert provenance["data"]["split"] == "val" and provenance["data"]["sources"][0]["path"] == str(blobs)
    assert len(provenance["command"]) >= 1
    written = json.loads((result.package / MANIFEST_FILE).read_text())
    assert written["calibration"]["deterministic"]["temperature"] == record.deterministic.temperature
    assert written["calibration"]["source"]["version"] == "1"


def test_the_recorded_figures_are_those_of_the_calibrated_package(calibrated: dict[str, CalibrationResult]) -> None:
    """ECE and NLL after calibration, as recorded, are what the new package answers on the split (float32)."""
    result = calibrated["under"]
    x, y, _ = package_split(result.manifest, "val")
    predictor = Predictor.load(result.package, device="cpu")
    record = result.calibration
    deterministic = predictor.predict(x).probabilities.astype(np.float64)
    mc = predictor.predict(x, mc_samples=MC_SAMPLES, seed=0).probabilities.astype(np.float64)
    for mode, probabilities in ((Mode.DETERMINISTIC, deterministic), (Mode.MC, mc)):
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        assert nll(probabilities, y) == pytest.approx(record.of(mode).nll_after, rel=1e-4)
        assert ece(probabilities, y) == pytest.approx(record.of(mode).ece_after, abs=2 / len(y))


def test_the_calibrated_predictor_answers_softmax_of_the_logits_over_tau(
    calibrated: dict[str, CalibrationResult],
) -> None:
    result = calibrated["over"]
    before, after = (Predictor.load(path, device="cpu") for path in (result.source, result.package))
    x = np.random.default_rng(1).normal(0.0, 2.0, size=(16, 16)).astype(np.float32)
    tau = result.calibration.deterministic.temperature
    logits = before.predict(x).logits.astype(np.float64)
    np.testing.assert_allclose(after.predict(x).logits, logits / tau, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after.predict(x).probabilities, softmax(logits / tau, axis=1), atol=1e-6)
    tau = result.calibration.mc.temperature
    samples = before.predict(x, mc_samples=8, seed=5, return_samples=True).samples.astype(np.float64)
    calibrated_samples = after.predict(x, mc_samples=8, seed=5, return_samples=True).samples
    expected = softmax(np.log(np.maximum(samples, TINY)) / tau, axis=-1)
    np.testing.assert_allclose(calibrated_samples, expected, atol=2e-6)


def test_a_server_repository_scan_serves_the_calibrated_version(calibrated: dict[str, CalibrationResult]) -> None:
    models = calibrated["plain"].package.parent.parent
    repository = ModelRepository(make_settings(models))
    asyncio.run(repository.start())
    try:
        assert ModelRef("plain", ("1", "2"), "2", True) in repository.list_models()
        served = repository.get("plain", None)
        assert served.version == "2" and served.predictor.manifest.calibration == calibrated["plain"].calibration
    finally:
        asyncio.run(repository.stop())


def test_calibrating_a_calibrated_package_is_refused(
    calibrated: dict[str, CalibrationResult], capsys: pytest.CaptureFixture[str]
) -> None:
    package = calibrated["plain"].package
    assert main(["calibrate", str(package)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"dropnet calibrate: error: {package} is already calibrated (τ deterministic ")
    assert "calibrate version 1 again instead" in error and error.count("\n") == 1


def test_the_cli_prints_the_table_and_the_new_package(
    blob_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "calibrated"
    assert main(["calibrate", str(blob_models["under"]), "--out", str(out), "--mc-samples", "10", "--seed", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    heading = f"{blob_models['under']} on blobs.npz val ({VAL_ROWS} examples; MC: T = 10, seed 3; ECE over 15 bins)"
    assert printed[0] == heading
    assert printed[1].split() == ["mode", "τ", "ECE", "before", "after", "NLL", "before", "after"]
    assert [line.split()[0] for line in printed[2:4]] == ["deterministic", "mc"]
    assert printed[-1] == f"wrote calibrated model package {out}"
    manifest = Predictor.load(out, device="cpu").manifest
    assert manifest.version == "1-calibrated" and manifest.calibration.mc_samples == 10
    assert main(["calibrate", str(blob_models["under"]), "--out", str(out)]) == 2
    assert f"{out} already holds a model package; pass --force to replace it" in capsys.readouterr().err


def test_cli_refusals_are_one_line(
    blob_models: dict[str, Path], tiny_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unnumbered = tmp_path / "unnumbered"
    shutil.copytree(blob_models["plain"], unnumbered)
    regression = tmp_path / "regression" / "1"
    shutil.copytree(tiny_package, regression)
    raw = json.loads((regression / MANIFEST_FILE).read_text())
    raw.update(task="regression", targets=raw.pop("classes"))
    (regression / MANIFEST_FILE).write_text(json.dumps(raw))
    cases = [
        ([str(unnumbered)], f"{unnumbered} is not a numbered version of a model directory (NAME/1, NAME/2, ...), so "
                            "the calibrated package has no default place; expected --out DIR"),
        ([str(regression)], f"{regression} is a regression package; temperature scaling is for classifiers"),
        ([str(blob_models["plain"]), "--out", str(blob_models["plain"])], "is the package being calibrated"),
        ([str(blob_models["plain"]), "--out", str(tmp_path / "x"), "--data", str(tmp_path / "missing.npz")],
         "missing.npz"),
        ([str(tmp_path / "nowhere" / "1")], "is not a model package"),
    ]
    for argv, expected in cases:
        assert main(["calibrate", *argv]) == 2, argv
        error = capsys.readouterr().err
        assert error.startswith("dropnet calibrate: error: ") and expected in error and error.count("\n") == 1, error


@pytest.mark.slow
def test_an_own_model_package_is_calibrated_on_the_data_given(own_package: Path, blobs: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="records no training run .* expected --data NAME|PATH"):
        calibrate_package(own_package, out_dir=tmp_path / "a")
    with pytest.raises(DataError, match=r"has examples of shape \[16\] in 4 classes; mlp version 1 takes shape \[20\] "
                                        "with 5 classes"):
        calibrate_package(own_package, out_dir=tmp_path / "a", data=str(blobs))
    # Labels that follow the module's own argmax 60% of the time, else drawn at random.
    predictor = Predictor.load(own_package, device="cpu")
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, size=(BLOB_ROWS // 4, 20)).astype(np.float32)
    y = np.where(rng.random(len(x)) < 0.6, predictor.predict(x).predicted_class, rng.integers(0, 5, len(x)))
    np.savez(tmp_path / "own.npz", x=x, y=y)
    result = calibrate_package(own_package, out_dir=tmp_path / "own", data=str(tmp_path / "own.npz"), mc_samples=20)
    for mode in Mode:
        entry = result.calibration.of(mode)
        assert entry.ece_after < entry.ece_before and entry.nll_after < entry.nll_before, (mode, entry)
    assert Predictor.load(tmp_path / "own", device="cpu").manifest.calibration == result.calibration
