"""``dropnet report``: one self-contained directory on how far a package's uncertainty can be trusted.

For a classification package, on its test split (:func:`dropnet.quality.datasets.package_split`):
the metrics of both modes before and after temperature scaling (a calibrated package's τ undone for
"before"; an uncalibrated package gets τ fitted here on its validation split), a reliability diagram
per mode, how well 1 − max p, the predictive entropy and the mutual information tell each OOD set
(``--ood`` files and built-in shifts of the test inputs) from the test inputs, the selective-prediction
curve, and MC averaging against weight scaling. For a regression package: Gaussian NLL, RMSE and
±1σ/±2σ coverage. Written as report.json (every number and every figure's data), report.md or
report.html, and the PNGs, staged in a temporary sibling directory renamed into place.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import re
import sys
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import dropnet
from dropnet.core.errors import ConfigError
from dropnet.core.fileio import json_bytes
from dropnet.core.manifest import MANIFEST_FILE, Manifest
from dropnet.core.outputs import Task
from dropnet.exporter.write import check_destination, write_directory
from dropnet.quality import figures
from dropnet.quality.datasets import package_split
from dropnet.quality.document import document
from dropnet.quality.ood_sources import read_ood_sets
from dropnet.quality.predictions import Predictions, predict_package, predict_regression
from dropnet.quality.regression_data import read_regression_data
from dropnet.quality.render import FORMATS, render
from dropnet.quality.report_data import (
    RowScores, classification_metrics, histogram_panel, ood_scores, regression_metrics, reliability_curve,
    row_scores, selective_curve,
)
from dropnet.quality.shifts import DEFAULT_SHIFTS, Shift, parse_shifts, shifted_sets
from dropnet.quality.temperature import fit_temperature
from dropnet.server.package import read_package

log = logging.getLogger(__name__)

REPORT_FORMAT = "dropnet-report/1"
REPORT_JSON = "report.json"
DEFAULT_OOD_ROWS = 2000
"""Rows of each OOD set predicted (a seeded random subset of larger sets; the shifts shift one subset of the test
inputs): enough for AUROC to ±0.01 while MNIST's report stays within minutes on 2 cores."""
MODES = ("deterministic", "mc")
IN_DISTRIBUTION = "in-distribution (test)"
FIGURE_DRAWERS = {
    "reliability": figures.reliability_figure,
    "histograms": figures.histograms_figure,
    "risk_coverage": figures.risk_coverage_figure,
}


@dataclass(frozen=True)
class ReportOptions:
    """What a report measures, and how (the flags of ``dropnet report``)."""

    data: str | None = None
    data_dir: str | None = None
    ood: tuple[str | Path, ...] = ()
    shifts: tuple[Shift, ...] | None = None
    """None: :data:`~dropnet.quality.shifts.DEFAULT_SHIFTS` for a classification package, none for regression."""
    mc_samples: int = 50
    seed: int = 0
    ood_rows: int | None = DEFAULT_OOD_ROWS
    """Most rows predicted per OOD set; None for all."""
    fmt: str = "md"

    def check(self) -> None:
        """ConfigError naming the first option out of range."""
        for name, value, low in (("mc_samples", self.mc_samples, 1), ("seed", self.seed, 0),
                                 ("ood_rows", 1 if self.ood_rows is None else self.ood_rows, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.fmt not in FORMATS:
            raise ConfigError(f"format must be one of {list(FORMATS)}, got {self.fmt!r}")


class Stages:
    """Numbered progress lines, one per stage, with each stage's seconds kept for the report."""

    def __init__(self) -> None:
        self.total = 0
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        number = len(self.seconds) + 1
        log.info("report stage %d/%d: %s%s", number, max(self.total, number), name, f" ({detail})" if detail else "")
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 3)
        log.info("report stage %d/%d: %s done in %.1f s", number, max(self.total, number), name, self.seconds[name])


def make_report(
    model_dir: str | Path, out_dir: str | Path, options: ReportOptions = ReportOptions(), force: bool = False,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Measure the package in ``model_dir`` and write the report directory ``out_dir``; return report.json's content.

    ``out_dir`` must be new or empty, or (with ``force``) hold a report, which is then replaced.
    """
    options.check()
    out = Path(os.path.abspath(out_dir))
    check_report_dir(out, force)
    started = time.perf_counter()
    stages = Stages()
    package = read_package(model_dir)
    manifest = package.manifest
    if manifest.task is Task.CLASSIFICATION:
        sections, drawn = _classification(Path(model_dir), manifest, options, stages)
    else:
        sections, drawn = _regression(Path(model_dir), manifest, options, stages)
    report = {
        "format": REPORT_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": list(sys.argv if command is None else command),
        "versions": _versions(),
        "package": _package_record(Path(model_dir), manifest),
        "mc_samples": options.mc_samples,
        "seed": options.seed,
        **sections,
        "figures": drawn,
        "seconds": stages.seconds,
    }
    with stages.stage("figures and report files", str(out)):
        files = {name: figures.png_bytes(FIGURE_DRAWERS[entry["kind"]](entry["data"])) for name, entry in drawn.items()}
        report["seconds"] = {**stages.seconds, "total": round(time.perf_counter() - started, 3)}
        title = f"Uncertainty report: {manifest.name} version {manifest.version}"
        files[f"report.{options.fmt}"] = render(document(report), options.fmt, title).encode()
        files[REPORT_JSON] = json_bytes(report)
        write_directory(out, files, lambda destination: check_report_dir(destination, force))
    log.info("report written to %s in %.1f s", out, time.perf_counter() - started)
    return report


def check_report_dir(out: Path, force: bool) -> None:
    """Refuse an ``--out`` that is a file, a non-empty directory without report.json, or a report without ``force``."""
    check_destination(out, force, marker=REPORT_JSON, holds="a report", expected="a new or empty directory")


def default_out_dir(model_dir: str | Path) -> Path:
    """``report-NAME-VERSION`` in the working directory, from the package's manifest."""
    manifest = read_package(model_dir).manifest
    return Path(re.sub(r"[^\w.-]", "_", f"report-{manifest.name}-{manifest.version}"))


def _classification(
    model_dir: Path, manifest: Manifest, options: ReportOptions, stages: Stages
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report's sections and figures for a classification package."""
    shifts = parse_shifts(DEFAULT_SHIFTS) if options.shifts is None else options.shifts
    calibrated = manifest.calibration is not None
    stages.total = 4 + (not calibrated) + len(options.ood) + len(shifts)
    with stages.stage("test split and OOD sets"):
        x, y, test_data = package_split(manifest, "test", options.data, options.data_dir)
        files = read_ood_sets(options.ood, manifest.input, taken=[IN_DISTRIBUTION, *(s.name for s in shifts)])
        picked = _subset(len(x), options.ood_rows, options.seed, "shifts")
        shifted, skipped = shifted_sets(x[picked], manifest.input, shifts, options.seed)
        stages.total -= len(skipped)
    ood_sets = [  # (record, rows predicted)
        ({"name": s.name, "kind": "shift", "description": s.description, "rows": len(s.x), "rows_available": len(x)},
         s.x) for s in shifted
    ]
    for found in files:
        rows = found.x[_subset(len(found.x), options.ood_rows, options.seed, found.name)]
        ood_sets.append(({"name": found.name, "kind": "file", "description": found.description, "rows": len(rows),
                          "rows_available": len(found.x), "source": found.source}, rows))
    if calibrated:
        taus = {mode: manifest.calibration.of(mode).temperature for mode in MODES}
        calibration = _package_calibration(manifest)
    else:
        taus, calibration = _fitted_temperatures(model_dir, manifest, options, stages)
    predict = functools.partial(predict_package, model_dir, mc_samples=options.mc_samples, seed=options.seed)
    with stages.stage("test predictions", f"{len(x)} rows, T = {options.mc_samples}"):
        test = predict(x, y)
    ood_predictions = {}
    for record, rows in ood_sets:
        with stages.stage(f"OOD predictions: {record['name']}", f"{len(rows)} rows"):
            ood_predictions[record["name"]] = predict(rows, np.zeros(len(rows), np.int64))
    with stages.stage("metrics"):
        sections, drawn = _classification_sections(test, taus, calibrated, ood_predictions)
    ood = {"rows_limit": options.ood_rows, "sets": [record for record, _ in ood_sets], "skipped": skipped,
           **sections.pop("ood")}
    return {"task": manifest.task.value, "data": test_data, "calibration": calibration, **sections, "ood": ood}, drawn


def _classification_sections(
    test: Predictions, taus: Mapping[str, float], calibrated: bool, ood: Mapping[str, Predictions]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics before/after τ, MC vs weight scaling, OOD scores, selective prediction and the figures' data.

    "As served" is the package's own output (τ = 1 on its graphs' outputs): after calibration for a calibrated
    package, before it otherwise. OOD detection and selective prediction measure it.
    """
    y = test.labels
    metrics: dict[str, Any] = {}
    served: dict[str, RowScores] = {}
    drawn: dict[str, Any] = {}
    for mode in MODES:
        log_probs = test.det_logits if mode == "deterministic" else test.mc_log_samples
        tau = taus[mode]
        package = row_scores(log_probs)
        other = row_scores(log_probs, 1 / tau if calibrated else tau)
        before, after = (other, package) if calibrated else (package, other)
        served[mode] = package
        metrics[mode] = {"before": classification_metrics(before.probabilities, y),
                         "after": classification_metrics(after.probabilities, y)}
        before_label = "before calibration (τ undone)" if calibrated else "before calibration"
        drawn[f"reliability_{mode}.png"] = {"kind": "reliability", "data": {"mode": mode, "curves": {
            "before": reliability_curve(before.probabilities, y, before_label),
            "after": reliability_curve(after.probabilities, y, f"after calibration (τ = {tau:.4g})"),
        }}}
    ood_served = {name: {mode: row_scores(p.det_logits if mode == "deterministic" else p.mc_log_samples)
                         for mode in MODES} for name, p in ood.items()}
    scores = {name: {mode: ood_scores(served[mode], sets[mode]) for mode in MODES} for name, sets in ood_served.items()}
    selective = {mode: selective_curve(served[mode].probabilities, y) for mode in MODES}
    drawn["uncertainty_histograms.png"] = {"kind": "histograms", "data": {"panels": _panels(served, ood_served)}}
    drawn["risk_coverage.png"] = {"kind": "risk_coverage", "data": {"curves": selective}}
    errors = {mode: metrics[mode]["after" if calibrated else "before"]["error"] for mode in MODES}  # as served
    sections = {
        "metrics": metrics,
        "mc_vs_weight_scaling": {
            "mc_samples": test.mc_samples, "mc_error": errors["mc"], "weight_scaling_error": errors["deterministic"],
            "difference": errors["mc"] - errors["deterministic"],
        },
        "ood": {"scores": scores},
        "selective": {mode: {"aurc": curve["aurc"]} for mode, curve in selective.items()},
    }
    return sections, drawn


def _panels(served: Mapping[str, RowScores], ood: Mapping[str, Mapping[str, RowScores]]) -> list[dict[str, Any]]:
    """Histogram panels: predictive entropy of each mode and the MC mutual information, for every set."""
    classes = served["deterministic"].probabilities.shape[1]
    panels = []
    for mode, score in (("deterministic", "entropy"), ("mc", "entropy"), ("mc", "mutual_information")):
        sets = {IN_DISTRIBUTION: served[mode].scores[score]}
        sets.update({name: modes[mode].scores[score] for name, modes in ood.items()})
        highest = max(float(values.max()) for values in sets.values())
        high = np.log(classes) if score == "entropy" or highest <= 0 else highest
        title = f"{figures.MODE_TITLES[mode]}: {'predictive entropy' if score == 'entropy' else 'mutual information'}"
        panels.append(histogram_panel(title, f"{score.replace('_', ' ')} (nats)", sets, float(high)))
    return panels


def _fitted_temperatures(
    model_dir: Path, manifest: Manifest, options: ReportOptions, stages: Stages
) -> tuple[dict[str, float], dict[str, Any]]:
    """τ per mode fitted on the validation split (the package is not calibrated), and its record."""
    with stages.stage("validation predictions for τ", f"T = {options.mc_samples}"):
        x, y, data = package_split(manifest, "val", options.data, options.data_dir)
        predictions = predict_package(model_dir, x, y, options.mc_samples, options.seed)
        taus = {"deterministic": fit_temperature(predictions.det_logits, y),
                "mc": fit_temperature(predictions.mc_log_samples, y)}
    return taus, {
        "source": "fitted here", "method": "temperature", "temperature": taus, "split": "val",
        "dataset": data.get("name"), "examples": len(y), "mc_samples": options.mc_samples, "seed": options.seed,
    }


def _package_calibration(manifest: Manifest) -> dict[str, Any]:
    """The calibration the package records (its graphs apply τ)."""
    calibration = manifest.calibration
    return {
        "source": "package", "method": calibration.method,
        "temperature": {mode: calibration.of(mode).temperature for mode in MODES},
        "split": calibration.split, "dataset": calibration.dataset, "examples": calibration.examples,
        "mc_samples": calibration.mc_samples, "seed": calibration.seed,
    }


def _regression(
    model_dir: Path, manifest: Manifest, options: ReportOptions, stages: Stages
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report's sections for a regression package (no calibration, OOD or figures: those are for classifiers)."""
    if options.ood or options.shifts:
        raise ConfigError(
            f"{manifest.name} version {manifest.version} is a regression package; OOD detection (--ood, --shifts) "
            "scores class probabilities, expected a classification package (or --shifts none without --ood)"
        )
    stages.total = 3
    with stages.stage("data"):
        x, y, data = read_regression_data(manifest, options.data)
    with stages.stage("predictions", f"{len(x)} rows, T = {options.mc_samples}"):
        predictions = predict_regression(model_dir, x, options.mc_samples, options.seed)
    return {"task": manifest.task.value, "data": data, "metrics": regression_metrics(
        predictions.prediction, predictions.mean, predictions.std, y)}, {}


def _subset(rows: int, limit: int | None, seed: int, name: str) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``limit`` of ``rows`` rows (all of them when fewer)."""
    if limit is None or rows <= limit:
        return np.arange(rows)
    return np.sort(np.random.default_rng([seed, zlib.crc32(name.encode())]).choice(rows, limit, replace=False))


def _package_record(model_dir: Path, manifest: Manifest) -> dict[str, Any]:
    """Which package the report measured: path, name, version, and the digests of its manifest and graphs."""
    return {
        "path": str(model_dir), "name": manifest.name, "version": manifest.version, "task": manifest.task.value,
        "manifest_sha256": hashlib.sha256((model_dir / MANIFEST_FILE).read_bytes()).hexdigest(),
        "files": {name: {"sha256": d.sha256, "bytes": d.bytes} for name, d in manifest.files.items()},
        "calibrated": manifest.calibration is not None,
    }


def _versions() -> dict[str, str]:
    import matplotlib
    import onnxruntime
    import scipy
    import sklearn

    return {
        "dropnet": dropnet.__version__, "python": platform.python_version(), "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
        "matplotlib": matplotlib.__version__,
    }
