"""Train bundled MNIST presets and tabulate what they reach: test error, best epoch, wall time.

Each preset runs through the real CLI (``dropnet train --config NAME``) in a subprocess, one after
the other, into ``--runs-dir/NAME``; ``--epochs`` caps the preset's epochs (the paper's Table 2
rows train far longer than a 2-core CPU allows). The summary is printed and written as JSON.

    python benchmarks/mnist_presets.py mnist_cpu_budget mnist_cpu_budget_nodropout
    python benchmarks/mnist_presets.py --epochs 2 --out benchmarks/results/table2.json \\
        table2_relu_3x1024_maxnorm table2_relu_3x2048_maxnorm ...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_model  # noqa: E402  (after the path is set)
from dropnet.trainer.device import resolve_device  # noqa: E402


def train_preset(name: str, runs_dir: Path, data_dir: str, epochs: int | None) -> dict:
    """Train one preset with the CLI and return its summary (final metrics, wall time, target)."""
    run_dir = runs_dir / name
    command = [sys.executable, "-m", "dropnet.cli", "train", "--config", name, "--data-dir", data_dir,
               "--out", str(run_dir)]
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    config = json.loads((run_dir / "config.json").read_text())
    return {
        "preset": name,
        "target": config["config"]["target"],
        "command": " ".join(["dropnet", *command[3:]]),
        "epochs": config["final_metrics"]["epochs"],
        "best_epoch": config["final_metrics"]["best_epoch"],
        "val_error": config["final_metrics"]["val_error"],
        "test_error": config["final_metrics"]["test_error"],
        "training_seconds": config["final_metrics"]["seconds"],
        "wall_seconds": wall,
        "run_dir": str(run_dir),
        "device": str(resolve_device(config["config"]["device"])),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "versions": config["versions"],
        "created": config["created"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="+", help="bundled preset names")
    parser.add_argument("--epochs", type=int, default=None, help="cap on each preset's epochs")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "presets")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "mnist_presets.json")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.presets:
        rows.append(train_preset(name, args.runs_dir, args.data_dir, args.epochs))
        args.out.write_text(json.dumps(rows, indent=2) + "\n")  # after each preset: an interrupted run keeps its rows
    print(f"{'preset':<34} {'epochs':>6} {'best':>5} {'val err':>8} {'test err':>9} {'wall':>8}")
    for row in rows:
        print(f"{row['preset']:<34} {row['epochs']:>6} {row['best_epoch']:>5} {row['val_error']:>8.2%} "
              f"{row['test_error']:>9.2%} {row['wall_seconds']:>7.0f}s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
