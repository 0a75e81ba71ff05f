"""ECE and NLL of a package's MC predictions against the temperature τ, on its validation and test splits.

Shows where the NLL-minimising τ lies on each split (``dropnet calibrate`` fits it on validation) and
which τ would bring the MC ECE below the weight-scaling ECE. Prints a table and writes JSON.

    python benchmarks/temperature_scan.py runs/quality/models/mnist/1 --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TAUS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5)


def main() -> None:
    from dropnet.quality import metrics
    from dropnet.quality.datasets import package_split
    from dropnet.quality.predictions import predict_package
    from dropnet.quality.temperature import calibrated_probabilities, fit_temperature
    from dropnet.server.package import read_package

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path, help="an uncalibrated classification package")
    parser.add_argument("--data-dir", help="directory of the MNIST IDX files (default: the run's)")
    parser.add_argument("--mc-samples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "temperature_scan.json")
    args = parser.parse_args()
    manifest = read_package(args.package).manifest
    result = {"command": sys.argv, "package": str(args.package), "mc_samples": args.mc_samples, "seed": args.seed,
              "splits": {}}
    for split in ("val", "test"):
        x, y, _ = package_split(manifest, split, data_dir=args.data_dir)
        predictions = predict_package(args.package, x, y, mc_samples=args.mc_samples, seed=args.seed)
        rows = []
        for tau in TAUS:
            probabilities = calibrated_probabilities(predictions.mc_log_samples, tau)
            rows.append({"tau": tau, "mc_ece": metrics.ece(probabilities, y), "mc_nll": metrics.nll(probabilities, y)})
        result["splits"][split] = {
            "weight_scaling_ece": metrics.ece(calibrated_probabilities(predictions.det_logits, 1.0), y),
            "nll_minimising_tau": fit_temperature(predictions.mc_log_samples, y),
            "scan": rows,
        }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for split, entry in result["splits"].items():
        print(f"{split}: weight-scaling ECE {entry['weight_scaling_ece']:.2%}, NLL-minimising MC tau "
              f"{entry['nll_minimising_tau']:.3f}")
        print("  " + "  ".join(f"tau {r['tau']}: ECE {r['mc_ece']:.2%} NLL {r['mc_nll']:.4f}" for r in entry["scan"]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
