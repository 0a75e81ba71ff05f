"""``dropnet calibrate MODEL_DIR``: temperature scaling fitted on the validation split, written as a new version.

    dropnet calibrate MODEL_DIR [--data NAME|PATH] [--data-dir DIR] [--mc-samples T] [--seed S] [--out DIR] [--force]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dropnet.core.outputs import Mode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register MODEL_DIR and the calibration flags."""
    parser.add_argument("model_dir", metavar="MODEL_DIR", type=Path,
                        help="classification model package (e.g. models/NAME/1)")
    parser.add_argument("--data", metavar="NAME|PATH",
                        help="dataset to take the validation split of: digits, mnist, or a .npz/.csv file as "
                             "`dropnet train --data` takes it (default: the data of the run the package was exported "
                             "from; required for a package without one)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="directory holding the four MNIST IDX .gz files (default: the run's, else a per-user "
                             "cache)")
    parser.add_argument("--mc-samples", type=int, default=50, metavar="T",
                        help="MC samples per example the MC temperature is fitted on (default: 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the MC dropout masks (default: 0)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="package directory to write (default: the next version beside MODEL_DIR, e.g. NAME/2 "
                             "from NAME/1)")
    parser.add_argument("--force", action="store_true", help="replace an existing package at --out")


def run(args: argparse.Namespace) -> int:
    """Calibrate, print the before/after table and the new package's path."""
    from dropnet.quality.calibrate import calibrate_package

    result = calibrate_package(
        args.model_dir, out_dir=args.out, data=args.data, data_dir=args.data_dir, mc_samples=args.mc_samples,
        seed=args.seed, force=args.force,
    )
    record = result.calibration
    lines = [
        f"{result.source} on {record.dataset} {record.split} ({record.examples} examples; MC: T = {record.mc_samples}, "
        f"seed {record.seed}; ECE over {record.ece_bins} bins)",
        f"{'mode':<14} {'τ':>7}  {'ECE before':>10} {'after':>7}  {'NLL before':>10} {'after':>7}",
    ]
    for mode in Mode:
        entry = record.of(mode)
        lines.append(
            f"{mode.value:<14} {entry.temperature:>7.4f}  {entry.ece_before:>10.2%} {entry.ece_after:>7.2%}  "
            f"{entry.nll_before:>10.4f} {entry.nll_after:>7.4f}"
        )
    print("\n".join(lines))
    print(f"wrote calibrated model package {result.package}")
    return 0
