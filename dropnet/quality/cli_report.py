"""``dropnet report MODEL_DIR``: the uncertainty report of a package (calibration, OOD detection, selective prediction).

    dropnet report MODEL_DIR [--data NAME|PATH] [--data-dir DIR] [--ood PATH ...] [--shifts LIST|none]
                   [--ood-rows N|all] [--mc-samples 50] [--seed 0] [--out DIR] [--format md|html] [--force]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dropnet.quality.shifts import DEFAULT_SHIFTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register MODEL_DIR and the report flags."""
    parser.add_argument("model_dir", metavar="MODEL_DIR", type=Path, help="model package (e.g. models/NAME/1)")
    parser.add_argument(
        "--data", metavar="NAME|PATH",
        help="classification: the dataset whose test split is measured (digits, mnist, or a .npz/.csv file as "
             "`dropnet train --data` takes it; default: the data of the run the package was exported from); "
             "regression: a .npz with arrays x and y (required)",
    )
    parser.add_argument("--data-dir", metavar="DIR", help="directory holding the four MNIST IDX .gz files")
    parser.add_argument(
        "--ood", metavar="PATH", nargs="+", action="extend", default=[], type=Path,
        help="out-of-distribution sets: a directory of gzipped IDX image files, a .npz with an array x of input "
             "rows, or a directory of grayscale .png images; each named by its path's stem",
    )
    parser.add_argument(
        "--shifts", metavar="LIST|none",
        help=f"built-in shifts of the test inputs used as OOD sets, comma-separated from rotate:DEGREES, "
             f"noise:SIGMA (a fraction of the value range), invert, permute (default for a classification package: "
             f"{DEFAULT_SHIFTS}; rotations only for image inputs)",
    )
    parser.add_argument(
        "--ood-rows", metavar="N|all", type=_rows, default=2000,
        help="rows predicted per OOD set: a seeded random subset of larger sets (default: 2000)",
    )
    parser.add_argument("--mc-samples", type=int, default=50, metavar="T", help="MC samples per row (default: 50)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the MC dropout masks, the random shifts and the OOD subsets (default: 0)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="report directory to write, new or empty (default: ./report-NAME-VERSION)")
    parser.add_argument("--format", choices=("md", "html"), default="md", help="report.md or report.html (default: md)")
    parser.add_argument("--force", action="store_true", help="replace the report already at --out")


def _rows(text: str) -> int | None:
    if text.strip().lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of rows or 'all', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of rows >= 1 or 'all', got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Write the report and print where it is, with its headline numbers."""
    from dropnet.quality.report import ReportOptions, default_out_dir, make_report
    from dropnet.quality.shifts import parse_shifts

    options = ReportOptions(
        data=args.data, data_dir=args.data_dir, ood=tuple(args.ood),
        shifts=None if args.shifts is None else parse_shifts(args.shifts), mc_samples=args.mc_samples,
        seed=args.seed, ood_rows=args.ood_rows, fmt=args.format,
    )
    out = args.out or default_out_dir(args.model_dir)
    report = make_report(args.model_dir, out, options, force=args.force)
    print("\n".join(summary(report)))
    print(f"report: {out / f'report.{args.format}'}")
    return 0


def summary(report: dict[str, Any]) -> list[str]:
    """A few lines of the report's headline numbers."""
    metrics = report["metrics"]
    if report["task"] != "classification":
        mc = metrics["mc"]
        return [f"RMSE: deterministic {metrics['deterministic']['rmse']:.4g}, MC {mc['rmse']:.4g}; "
                f"MC ±1σ coverage {mc['coverage_1sigma']:.1%}, ±2σ {mc['coverage_2sigma']:.1%}"]
    taus = report["calibration"]["temperature"]
    lines = [f"{'mode':<14} {'τ':>7}  {'ECE before':>10} {'after':>7}  {'NLL before':>10} {'after':>7}  {'error':>6}"]
    for mode in ("deterministic", "mc"):
        before, after = metrics[mode]["before"], metrics[mode]["after"]
        lines.append(f"{mode:<14} {taus[mode]:>7.4f}  {before['ece']:>10.2%} {after['ece']:>7.2%}  "
                     f"{before['nll']:>10.4f} {after['nll']:>7.4f}  {before['error']:>6.2%}")
    versus = report["mc_vs_weight_scaling"]
    lines.append(f"MC (T = {versus['mc_samples']}) error {versus['mc_error']:.2%} vs weight scaling "
                 f"{versus['weight_scaling_error']:.2%}")
    for name, modes in report["ood"]["scores"].items():
        lines.append(f"OOD {name}: AUROC of MC mutual information {modes['mc']['mutual_information']['auroc']:.4f}, "
                     f"of MC entropy {modes['mc']['entropy']['auroc']:.4f}")
    return lines
