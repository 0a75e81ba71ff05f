"""Write docs/RESULTS.md: the paper's Table 2 (MNIST) rows beside what dropnet's runs reached.

Every figure comes from the result files the training benchmarks wrote (``benchmarks/mnist_presets.py``
and ``benchmarks/dbn_preset.py``, under ``benchmarks/results/``); nothing in the page is typed by
hand except the paper's own figures and the reasons a row was not run. For a preset run several
times, the run with the most epochs is shown and the others are listed below it.

    .venv/bin/python benchmarks/results_md.py            # reads benchmarks/results/*.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
COMMAND = "python benchmarks/results_md.py"


@dataclass(frozen=True)
class PaperRow:
    """One MNIST row of the paper's Table 2 and the preset that implements it (None: not run, and why)."""

    method: str
    unit: str
    architecture: str
    paper_error: float
    preset: str | None
    missing: str = ""


TABLE2 = (
    PaperRow("Standard neural net (Simard et al., 2003)", "logistic", "2 layers, 800 units", 0.0160,
             "table2_baseline_nodropout"),
    PaperRow("SVM, Gaussian kernel", "—", "—", 0.0140, None, "not a neural network: outside what dropnet trains"),
    PaperRow("Dropout NN", "logistic", "3 layers, 1024 units", 0.0135, "table2_logistic_3x1024"),
    PaperRow("Dropout NN", "ReLU", "3 layers, 1024 units", 0.0125, None,
             "no preset yet: the max-norm row of the same net was run instead"),
    PaperRow("Dropout NN + max-norm", "ReLU", "3 layers, 1024 units", 0.0106, "table2_relu_3x1024_maxnorm"),
    PaperRow("Dropout NN + max-norm", "ReLU", "3 layers, 2048 units", 0.0104, "table2_relu_3x2048_maxnorm"),
    PaperRow("Dropout NN + max-norm", "ReLU", "2 layers, 4096 units", 0.0101, "table2_relu_2x4096_maxnorm"),
    PaperRow("Dropout NN + max-norm", "ReLU", "2 layers, 8192 units", 0.0095, "table2_relu_2x8192_maxnorm"),
    PaperRow("Dropout NN + max-norm (Goodfellow et al., 2013)", "maxout", "2 layers, (5 × 240) units", 0.0094,
             None, "no preset yet (the trainer has maxout units); not run in the CPU budget"),
    PaperRow("DBN + fine-tuning (Hinton and Salakhutdinov, 2006)", "logistic", "500-500-2000", 0.0118, None,
             "fine-tuning without dropout was not run; only the dropout row below"),
    PaperRow("DBM + fine-tuning (Salakhutdinov and Hinton, 2009)", "logistic", "500-500-2000", 0.0096, None,
             "dropnet pretrains DBN-style stacks of RBMs, not deep Boltzmann machines"),
    PaperRow("DBN + dropout fine-tuning", "logistic", "500-500-2000", 0.0092, "dbn_dropout_finetune"),
    PaperRow("DBM + dropout fine-tuning", "logistic", "500-500-2000", 0.0079, None,
             "dropnet pretrains DBN-style stacks of RBMs, not deep Boltzmann machines"),
)
BUDGET_PAIR = ("mnist_cpu_budget", "mnist_cpu_budget_nodropout")


def load_runs(results_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every training result in ``results_dir``, by preset, the run with the most epochs first (among equals, the
    most recent by ``created``; results that predate that field come last).

    A result file is a JSON list of rows with at least ``preset``, ``epochs``, ``test_error`` and
    ``command``; files of other shapes (the other benchmarks' results) are skipped.
    """
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(results_dir.glob("*.json")):
        rows = json.loads(path.read_text())
        if not isinstance(rows, list) or not all(isinstance(r, dict) and {"preset", "test_error"} <= r.keys()
                                                 for r in rows):
            continue
        for row in rows:
            runs.setdefault(row["preset"], []).append({**row, "file": path.relative_to(REPO).as_posix()})
    for rows in runs.values():
        rows.sort(key=lambda r: (r["epochs"], r.get("created", "")), reverse=True)
    return runs


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def _wall(row: dict[str, Any]) -> str:
    seconds = row.get("wall_seconds")
    if seconds is None:
        return "—"
    return f"{seconds / 60:.0f} min" if seconds >= 600 else f"{seconds:.0f} s"


def _device(row: dict[str, Any]) -> str:
    device = row.get("device")
    machine = row.get("machine")
    if device is None:
        return "not recorded"
    return f"{device} ({machine})" if machine else device


def _run_cells(row: dict[str, Any]) -> str:
    return (f"**{_percent(row['test_error'])}** | {row['epochs']} | {_wall(row)} | {_device(row)} | "
            f"`{row['command']}` |")


def table2_section(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The Table 2 rows: the paper's figure and, where a run exists, its longest run; a run's ``note`` (what the
    figures alone do not say, e.g. a pause) is listed below the table."""
    lines = [
        "| paper's row | unit | architecture | paper | dropnet | epochs | wall time | device | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    missing, shorter = [], []
    for row in TABLE2:
        head = f"| {row.method} | {row.unit} | {row.architecture} | {_percent(row.paper_error)} |"
        ran = runs.get(row.preset or "", [])
        if not ran:
            reason = row.missing or f"preset `{row.preset}` has not been run yet"
            lines.append(f"{head} not run | | | | |")
            missing.append(f"- {row.method}, {row.unit}, {row.architecture}: {reason}.")
            continue
        lines.append(f"{head} {_run_cells(ran[0])}")
        shorter += [f"- `{row.preset}`: {r['epochs']} epochs, {_percent(r['test_error'])} ({r['file']})"
                    for r in ran[1:]]
    notes = [f"- `{r['preset']}`, {r['epochs']} epochs: {r['note']}." for row in TABLE2 for r in runs.get(row.preset or "", [])
             if r.get("note")]
    if notes:
        lines += ["", "Notes on these runs:", "", *notes]
    lines += ["", "Rows not run, and why:", "", *missing]
    if shorter:
        lines += ["", "Shorter runs of the same presets:", "", *shorter]
    return lines


def closest_section(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """How far the longest 3×1024 ReLU + max-norm run stands from the paper's 1.06%."""
    row = next(r for r in TABLE2 if r.preset == "table2_relu_3x1024_maxnorm")
    ran = runs.get(row.preset or "")
    if not ran:
        return ["The 3×1024 ReLU + max-norm preset has not been run."]
    best = ran[0]
    gap = best["test_error"] - row.paper_error
    return [
        f"The 3×1024 ReLU + max-norm net (`{row.preset}`, 200 epochs in the preset) reached "
        f"**{_percent(best['test_error'])}** after {best['epochs']} epochs (best validation epoch "
        f"{best.get('best_epoch', '—')}), {gap * 100:+.2f} percentage points from the paper's "
        f"{_percent(row.paper_error)}.",
    ]


def budget_section(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The CPU-budget pair: the same net with and without dropout, same optimiser and epochs, from the most
    recent result file that holds both (so the two ran with the same code, one after the other)."""
    files = [{r["file"] for r in runs.get(preset, [])} for preset in BUDGET_PAIR]
    together = sorted(set.intersection(*files))
    if not together:
        return ["The CPU-budget pair has not been run together (`benchmarks/mnist_presets.py "
                + " ".join(BUDGET_PAIR) + "`)."]
    latest = max(together, key=lambda f: max(r.get("created", "") for p in BUDGET_PAIR for r in runs[p]
                                              if r["file"] == f))
    lines = [f"From `{latest}`:", "", "| preset | test error | epochs | wall time | device | command |",
             "|---|---|---|---|---|---|"]
    for preset in BUDGET_PAIR:
        row = next(r for r in runs[preset] if r["file"] == latest)
        lines.append(f"| `{preset}` | {_run_cells(row)}")
    return lines


def render(runs: dict[str, list[dict[str, Any]]]) -> str:
    """The whole page."""
    return "\n".join([
        "# Results: the paper's Table 2 (MNIST) and dropnet's runs",
        "",
        f"Generated by `{COMMAND}` from the result files in `benchmarks/results/`; do not edit by hand.",
        "Each row's command is the one that made it; the paper trained for far longer than a 2-core CPU",
        "allows, so most rows ran for a fraction of their preset's epochs. Wall times were taken on a machine",
        "shared with other jobs: they are upper bounds.",
        "",
        "## Table 2 rows",
        "",
        *table2_section(runs),
        "",
        "## How close the 3×1024 max-norm net came",
        "",
        *closest_section(runs),
        "",
        "## The CPU-budget pair",
        "",
        "The paper's recipe on a 784-1024-1024-10 ReLU net, and the same net, optimiser and epochs without",
        "dropout:",
        "",
        *budget_section(runs),
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of result JSON files")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "RESULTS.md")
    args = parser.parse_args()
    args.out.write_text(render(load_runs(args.results)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
