"""The text of a report (:mod:`dropnet.quality.render` blocks), written from report.json's content alone."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from dropnet.quality.figures import MODE_TITLES
from dropnet.quality.render import Block, Code, Heading, Image, Paragraph, Table
from dropnet.quality.report_data import SCORE_TITLES, SCORES

METRIC_ROWS = (
    ("error", "error", True), ("nll", "NLL (nats)", False), ("brier", "Brier score", False),
    ("ece", "ECE, 15 equal-width bins", True), ("ece_adaptive", "ECE, 15 equal-mass bins", True),
    ("mce", "MCE, 15 equal-width bins", True),
)
"""(key, row title, shown as a percentage) of the classification metrics table."""
REGRESSION_ROWS = (
    ("deterministic", "rmse", "RMSE"), ("mc", "rmse", "RMSE"), ("mc", "gaussian_nll", "Gaussian NLL (nats)"),
    ("mc", "coverage_1sigma", "coverage of μ ± 1σ (68.3% if Gaussian)"),
    ("mc", "coverage_2sigma", "coverage of μ ± 2σ (95.4% if Gaussian)"),
)


def _number(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.2f}%" if percent else f"{value:.4f}"


def document(report: Mapping[str, Any]) -> list[Block]:
    """Every section of the report, in order."""
    package = report["package"]
    state = "calibrated" if package["calibrated"] else "not calibrated"
    blocks: list[Block] = [
        Heading(f"Uncertainty report: {package['name']} version {package['version']}", 1),
        Paragraph(
            f"Package {package['path']} ({package['task']}, {state}), "
            f"measured on {_data_text(report['data'])} with T = {report['mc_samples']} MC samples per row, seed "
            f"{report['seed']}. Every number and every figure's data is in report.json."
        ),
    ]
    if report["task"] == "classification":
        blocks += _calibration(report) + _averaging(report) + _ood(report) + _selective(report)
    else:
        blocks += _regression(report)
    return blocks + _provenance(report)


def _data_text(data: Mapping[str, Any]) -> str:
    split = f" {data['split']} split" if "split" in data else ""
    rows = data.get(data.get("split", ""), data.get("rows"))
    return f"{data.get('name', '?')}{split}" + (f" ({rows} rows)" if isinstance(rows, int) else "")


def _calibration(report: Mapping[str, Any]) -> list[Block]:
    calibration, metrics = report["calibration"], report["metrics"]
    taus = calibration["temperature"]
    fitted = (f"on the {calibration['split']} split of {calibration['dataset']} ({calibration['examples']} rows, "
              f"MC T = {calibration['mc_samples']}, seed {calibration['seed']})")
    if calibration["source"] == "package":
        text = (f"The package is calibrated: its graphs divide the logits (MC: each sample's logits) by τ = "
                f"{taus['deterministic']:.4g} (weight scaling) and τ = {taus['mc']:.4g} (MC), fitted {fitted} by "
                "dropnet calibrate. \"After\" is the package as it is; \"before\" undoes τ (logits × τ).")
    else:
        text = (f"The package is not calibrated: τ = {taus['deterministic']:.4g} (weight scaling) and τ = "
                f"{taus['mc']:.4g} (MC) were fitted here {fitted}, minimising the NLL. \"Before\" is the package as "
                "it is; \"after\" divides its logits by τ (dropnet calibrate writes such a version).")
    header = ("metric", "weight scaling, before", "weight scaling, after", "MC, before", "MC, after")
    rows = tuple(
        (title, *(_number(metrics[mode][when][key], percent) for mode in ("deterministic", "mc")
                  for when in ("before", "after")))
        for key, title, percent in METRIC_ROWS
    )
    return [
        Heading("Calibration"), Paragraph(text), Table(header, rows),
        Paragraph("Reliability diagrams: the accuracy of each equal-width confidence bin against its mean confidence "
                  "(the diagonal is perfect calibration), and the rows per bin."),
        Image("reliability_deterministic.png", "reliability diagram, weight scaling"),
        Image("reliability_mc.png", "reliability diagram, MC dropout"),
    ]


def _averaging(report: Mapping[str, Any]) -> list[Block]:
    entry = report["mc_vs_weight_scaling"]
    return [
        Heading("MC averaging vs weight scaling"),
        Table(("", "test error"), (
            (f"MC model averaging, T = {entry['mc_samples']}", _number(entry["mc_error"], True)),
            ("weight scaling (one deterministic pass)", _number(entry["weight_scaling_error"], True)),
            ("difference (MC − weight scaling)", f"{100 * entry['difference']:+.2f} pp"),
        )),
        Paragraph("Both as served (the package's own outputs). Figure 11 of the paper draws this against T: "
                  "dropnet evaluate RUN_DIR --mc-samples 1..100 --repeats 5 --figure figure11.png."),
    ]


def _ood(report: Mapping[str, Any]) -> list[Block]:
    ood = report["ood"]
    blocks: list[Block] = [Heading("Out-of-distribution detection")]
    if not ood["sets"]:
        return blocks + [Paragraph("No OOD set: --shifts none and no --ood.")] + [
            Paragraph(f"Skipped: {line}.") for line in ood["skipped"]]
    limit = ood["rows_limit"]
    blocks += [
        Paragraph(
            "How well each score tells an OOD set (positive) from the test inputs, for the package as served: "
            "1 − max probability, the predictive entropy, and the mutual information between the prediction and the "
            "dropout masks (MC only: the deterministic network is one network, so it has no mutual information). "
            "FPR95: the fraction of test inputs flagged when 95% of the OOD inputs are. "
            + (f"Each OOD set is a seeded random subset of at most {limit} rows; shifts shift one such subset of the "
               "test inputs." if limit is not None else "Every row of each OOD set is used.")
        ),
        Table(("OOD set", "kind", "rows", "what"),
              tuple((s["name"], s["kind"], str(s["rows"]), s["description"]) for s in ood["sets"]), align="llrl"),
    ]
    blocks += [Paragraph(f"Skipped: {line}.") for line in ood["skipped"]]
    rows = []
    for name, modes in ood["scores"].items():
        for mode in ("deterministic", "mc"):
            rows.append((name, MODE_TITLES[mode], *(_detection(modes[mode][score]) for score in SCORES)))
    blocks += [
        Paragraph("AUROC / AUPR / FPR95 of each score:"),
        Table(("OOD set", "mode", *(SCORE_TITLES[score] for score in SCORES)), tuple(rows), align="llrrr"),
        Image("uncertainty_histograms.png", "histograms of predictive entropy and mutual information"),
    ]
    return blocks


def _detection(values: Mapping[str, float] | None) -> str:
    """AUROC / AUPR / FPR95 in one cell ("n/a" for a score the mode lacks)."""
    if values is None:
        return "n/a"
    return f"{values['auroc']:.4f} / {values['aupr']:.4f} / {_number(values['fpr95'], True)}"


def _selective(report: Mapping[str, Any]) -> list[Block]:
    return [
        Heading("Selective prediction"),
        Paragraph("Keep the most confident rows (max probability) and predict only those: the error among the rows "
                  "kept against the fraction kept. AURC is the area under that curve (lower is better)."),
        Table(("mode", "AURC"), tuple((MODE_TITLES[mode], _number(entry["aurc"], True))
                                       for mode, entry in report["selective"].items())),
        Image("risk_coverage.png", "risk-coverage curves"),
    ]


def _regression(report: Mapping[str, Any]) -> list[Block]:
    metrics = report["metrics"]
    rows = tuple((MODE_TITLES[mode], title, _number(metrics[mode][key], key.startswith("coverage")))
                 for mode, key, title in REGRESSION_ROWS)
    return [
        Heading("Regression metrics"),
        Table(("mode", "metric", "value"), rows, align="llr"),
        Paragraph("The Gaussian NLL and the interval coverage use the MC mean and standard deviation; "
                  "calibration, OOD detection and selective prediction apply to classification packages."),
    ]


def _sources(data: Mapping[str, Any]) -> str:
    """The data's files with their SHA-256, or its origin (bundled data has no file)."""
    files = [f"{source['path']} (SHA-256 {source['sha256']})" for source in data.get("sources", [])]
    return "; ".join(files) or str(data.get("origin", data.get("name", "?")))


def _provenance(report: Mapping[str, Any]) -> list[Block]:
    package = report["package"]
    seconds = report["seconds"]
    return [
        Heading("How this report was made"),
        Code(shlex.join(report["command"])),
        Table(("", ""), align="ll", rows=(
            ("package", f"{package['name']} version {package['version']} at {package['path']}"),
            ("manifest.json SHA-256", package["manifest_sha256"]),
            ("data", _sources(report["data"])),
            ("MC samples T, seed", f"{report['mc_samples']}, {report['seed']}"),
            ("created", report["created"]),
            ("versions", ", ".join(f"{name} {version}" for name, version in report["versions"].items())),
            ("seconds", ", ".join(f"{name} {value:.1f}" for name, value in seconds.items())),
        )),
    ]
