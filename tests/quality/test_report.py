"""``dropnet report`` end to end on a small trained package: its files, its numbers recomputed from the package's
own predictions, before/after calibration, the figures' data, and refusals that leave nothing behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import softmax
from sklearn.metrics import roc_auc_score

from dropnet.cli import main
from dropnet.core.manifest import MANIFEST_FILE
from dropnet.quality import metrics
from dropnet.quality.datasets import package_split
from dropnet.quality.figures import reliability_figure, risk_coverage_figure
from dropnet.quality.predictions import predict_package
from dropnet.quality.report import ReportOptions, make_report
from dropnet.quality.shifts import parse_shifts
from dropnet.quality.temperature import calibrated_probabilities, fit_temperature
from dropnet.server.package import read_package
from dropnet.server.predictor import Predictor

T = 5
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = {"reliability_deterministic.png", "reliability_mc.png", "uncertainty_histograms.png", "risk_coverage.png"}
OOD_ROWS = 40


@pytest.fixture(scope="module")
def ood_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 rows of uniform noise over the digits' value range, as a .npz OOD set named "static"."""
    path = tmp_path_factory.mktemp("ood") / "static.npz"
    np.savez(path, x=np.random.default_rng(1).uniform(0, 16, (OOD_ROWS, 1, 8, 8)).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def plain(toy_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy net trained on the digits (conftest's ``toy_run``), exported as ``plain/1``: not calibrated."""
    from dropnet.exporter.package import export_package

    return export_package(toy_run, tmp_path_factory.mktemp("report-models") / "plain" / "1", name="plain")


@pytest.fixture(scope="module")
def plain_report(plain: Path, ood_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the uncalibrated toy package, made through the CLI."""
    out = tmp_path_factory.mktemp("reports") / "plain"
    argv = ["report", str(plain), "--out", str(out), "--mc-samples", str(T), "--shifts",
            "rotate:90,invert", "--ood", str(ood_file), "--ood-rows", "60"]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def calibrated(plain: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``plain`` calibrated by dropnet calibrate (T = 5)."""
    from dropnet.quality.calibrate import calibrate_package

    return calibrate_package(plain, tmp_path_factory.mktemp("calibrated") / "plain" / "2",
                             mc_samples=T).package


def _read(out: Path) -> dict:
    """report.json, which must be strict JSON (no NaN or Infinity)."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"report.json holds {constant}")

    return json.loads((out / "report.json").read_text(), parse_constant=refuse)


def _test_split(package: Path) -> tuple[np.ndarray, np.ndarray]:
    x, y, _ = package_split(read_package(package).manifest, "test")
    return x, y


def test_every_file_is_written_and_says_how_it_was_made(plain_report: Path, plain: Path) -> None:
    assert {p.name for p in plain_report.iterdir()} == {"report.md", "report.json", *FIGURES}
    for name in FIGURES:
        assert (plain_report / name).read_bytes().startswith(PNG_SIGNATURE)
    report, text = _read(plain_report), (plain_report / "report.md").read_text()
    assert set(report["figures"]) == FIGURES and all(f"]({name})" in text for name in FIGURES)
    digest = hashlib.sha256((plain / MANIFEST_FILE).read_bytes()).hexdigest()
    assert report["package"]["manifest_sha256"] == digest and digest in text
    assert report["package"]["name"] == "plain" and report["package"]["version"] == "1"
    assert report["format"] == "dropnet-report/1" and report["seed"] == 0 and report["mc_samples"] == T
    assert {"dropnet", "numpy", "onnxruntime", "scikit-learn", "matplotlib"} <= set(report["versions"])
    assert report["data"]["name"] == "digits" and report["data"]["split"] == "test"
    assert [s["name"] for s in report["ood"]["sets"]] == ["rotate-90", "invert", "static"]
    assert [s["rows"] for s in report["ood"]["sets"]] == [60, 60, OOD_ROWS]
    assert report["seconds"]["total"] > 0 and "test predictions" in report["seconds"]


def test_the_numbers_are_those_of_the_package_own_predictions(
    plain_report: Path, plain: Path, ood_file: Path
) -> None:
    report, package = _read(plain_report), plain
    x, y = _test_split(package)
    predicted = predict_package(package, x, y, T, seed=0)
    manifest = read_package(package).manifest
    val_x, val_y, _ = package_split(manifest, "val")
    val = predict_package(package, val_x, val_y, T, seed=0)
    taus = {"deterministic": fit_temperature(val.det_logits, val_y), "mc": fit_temperature(val.mc_log_samples, val_y)}
    assert report["calibration"]["source"] == "fitted here"
    assert report["calibration"]["temperature"] == pytest.approx(taus, rel=1e-9)
    for mode, log_probs in (("deterministic", predicted.det_logits), ("mc", predicted.mc_log_samples)):
        for when, tau in (("before", 1.0), ("after", taus[mode])):
            probs = calibrated_probabilities(log_probs, tau)
            expected = {
                "error": metrics.error_rate(probs, y), "nll": metrics.nll(probs, y), "brier": metrics.brier(probs, y),
                "ece": metrics.ece(probs, y, 15), "ece_adaptive": metrics.ece(probs, y, 15, adaptive=True),
                "mce": metrics.mce(probs, y, 15),
            }
            assert report["metrics"][mode][when] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    served = {"deterministic": softmax(predicted.det_logits.astype(np.float64), axis=1),
              "mc": calibrated_probabilities(predicted.mc_log_samples, 1.0)}
    for mode, probs in served.items():
        confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == y
        assert report["selective"][mode]["aurc"] == pytest.approx(metrics.aurc(confidence, correct), rel=1e-9)
    versus = report["mc_vs_weight_scaling"]
    assert versus["mc_error"] == metrics.error_rate(served["mc"], y)
    assert versus["weight_scaling_error"] == metrics.error_rate(served["deterministic"], y)

    # OOD scores against the engine's own MC outputs (mc.onnx's statistics, summarised by the Predictor)
    predictor = Predictor.load(package, device="cpu")
    inside = predictor.predict(x, mc_samples=T, seed=0)
    outside = predictor.predict(np.load(ood_file)["x"], mc_samples=T, seed=0)
    labels = np.r_[np.zeros(len(x)), np.ones(OOD_ROWS)]
    scores = report["ood"]["scores"]["static"]["mc"]
    for name in ("mutual_information", "predictive_entropy"):
        key = "entropy" if name == "predictive_entropy" else name
        expected = roc_auc_score(labels, np.r_[inside.outputs[name], outside.outputs[name]])
        assert scores[key]["auroc"] == pytest.approx(expected, abs=2e-3)
    assert report["ood"]["scores"]["static"]["deterministic"]["mutual_information"] is None
    for panel in report["figures"]["uncertainty_histograms.png"]["data"]["panels"]:
        assert set(panel["fractions"]) == {"in-distribution (test)", "rotate-90", "invert", "static"}
        assert all(sum(fractions) == pytest.approx(1.0) for fractions in panel["fractions"].values())


def test_the_figures_draw_the_json_values(plain_report: Path) -> None:
    figures = _read(plain_report)["figures"]
    data = figures["reliability_mc.png"]["data"]
    axes = reliability_figure(data).axes
    for line, curve in zip(axes[0].lines[1:], data["curves"].values()):
        drawn = np.asarray(line.get_ydata(), dtype=np.float64)
        np.testing.assert_array_equal(drawn, [np.nan if a is None else a for a in curve["accuracy"]])
    curves = figures["risk_coverage.png"]["data"]["curves"]
    for line, curve in zip(risk_coverage_figure({"curves": curves}).axes[0].lines, curves.values()):
        np.testing.assert_allclose(line.get_xdata(), curve["coverage"])
        np.testing.assert_allclose(line.get_ydata(), 100 * np.asarray(curve["risk"]))
        assert curve["coverage"][-1] == 1.0


def test_a_calibrated_package_is_measured_as_it_is_after_and_with_tau_undone_before(
    calibrated: Path, plain_report: Path, tmp_path: Path
) -> None:
    report = make_report(calibrated, tmp_path / "out", ReportOptions(mc_samples=T, shifts=()))
    manifest = read_package(calibrated).manifest
    taus = {mode: manifest.calibration.of(mode).temperature for mode in ("deterministic", "mc")}
    assert report["calibration"]["source"] == "package" and report["calibration"]["temperature"] == taus
    x, y = _test_split(calibrated)
    own = predict_package(calibrated, x, y, T, seed=0)
    for mode, log_probs in (("deterministic", own.det_logits), ("mc", own.mc_log_samples)):
        after = calibrated_probabilities(log_probs, 1.0)
        before = calibrated_probabilities(log_probs.astype(np.float64) * taus[mode], 1.0)
        assert report["metrics"][mode]["after"]["nll"] == pytest.approx(metrics.nll(after, y), rel=1e-9)
        assert report["metrics"][mode]["before"]["nll"] == pytest.approx(metrics.nll(before, y), rel=1e-9)
        assert report["metrics"][mode]["before"]["ece"] == pytest.approx(metrics.ece(before, y), rel=1e-9)
    # undoing τ gives back the uncalibrated package's weight-scaling numbers (up to float32 rounding)
    plain = _read(plain_report)["metrics"]["deterministic"]["before"]
    assert report["metrics"]["deterministic"]["before"] == pytest.approx(plain, rel=1e-4, abs=1e-6)
    assert report["ood"]["sets"] == [] and "No OOD set" in (tmp_path / "out" / "report.md").read_text()


def test_html_reports_and_force_replaces_an_existing_report(
    plain: Path, plain_report: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    shutil.copytree(plain_report, out)
    argv = ["report", str(plain), "--out", str(out), "--mc-samples", "2", "--shifts", "none"]
    assert main([*argv, "--format", "html", "--force"]) == 0
    page = (out / "report.html").read_text()
    assert not (out / "report.md").exists() and '<img src="reliability_mc.png"' in page and "</html>" in page
    assert _read(out)["mc_samples"] == 2 and [p.name for p in tmp_path.iterdir()] == ["report"]


def test_a_bad_out_or_ood_is_refused_in_one_line_leaving_nothing(
    plain: Path, tmp_path: Path, capsys
) -> None:
    base = ["report", str(plain), "--mc-samples", "2", "--shifts", "none"]
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "report.json").write_text("{}")
    for out, extra, message in [
        ("file", [], "file exists and is not a directory; expected a new or empty directory"),
        ("full", ["--force"], "full is a non-empty directory without report.json; expected a new or empty directory"),
        ("old", [], "old already holds a report; pass --force to replace it"),
        ("new", ["--ood", str(tmp_path / "missing.npz")], "missing.npz: file not found"),
        ("new", ["--ood", str(tmp_path / "full")], "full holds no IDX image file"),
        ("new", ["--shifts", "blur"], "unknown shift 'blur'"),
        ("new", ["--mc-samples", "0"], "mc_samples must be an integer >= 1, got 0"),
    ]:
        assert main([*base, "--out", str(tmp_path / out), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("dropnet report: error: ") and message in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "full", "old"]
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "old" / "report.json").read_text() == "{}"


def test_a_failed_write_keeps_the_previous_report_and_leaves_no_temporary(
    plain: Path, plain_report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "report"
    shutil.copytree(plain_report, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full_disk(path: object) -> None:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr("dropnet.exporter.write.fsync_tree", full_disk)
    with pytest.raises(OSError, match="No space left"):
        make_report(plain, out, ReportOptions(mc_samples=2, shifts=()), force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert os.listdir(tmp_path) == ["report"]


@pytest.mark.slow
def test_a_regression_package_gets_its_own_metrics(tmp_path: Path) -> None:
    from dropnet import export_module

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                 torch.nn.Linear(16, 2)).eval()
    package = export_module(module, torch.randn(4, 5), tmp_path / "reg" / "1", name="reg", task="regression")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (50, 5)).astype(np.float32)
    y = module(torch.from_numpy(x)).detach().numpy() + rng.normal(0, 0.1, (50, 2))
    np.savez(tmp_path / "rows.npz", x=x, y=y)
    report = make_report(package, tmp_path / "out", ReportOptions(data=str(tmp_path / "rows.npz"), mc_samples=20))
    mc = Predictor.load(package, device="cpu").predict(x, mc_samples=20, seed=0)
    assert report["task"] == "regression" and report["figures"] == {}
    assert report["metrics"]["mc"]["rmse"] == pytest.approx(metrics.rmse(mc.mean, y), rel=1e-6)
    assert report["metrics"]["mc"]["coverage_2sigma"] == metrics.interval_coverage(mc.mean, mc.std, y, 2)
    assert report["metrics"]["mc"]["gaussian_nll"] == pytest.approx(metrics.gaussian_nll(mc.mean, mc.std, y), rel=1e-6)
    assert "Regression metrics" in (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(Exception, match="regression package; OOD detection"):
        make_report(package, tmp_path / "again", ReportOptions(data=str(tmp_path / "rows.npz"),
                                                               shifts=parse_shifts("invert")))
