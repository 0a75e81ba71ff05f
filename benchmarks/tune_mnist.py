"""A ``dropnet tune`` search on MNIST against the hand-set ``mnist_cpu_budget`` preset, at the same epoch budget.

1. ``dropnet tune --config mnist_cpu_budget --epochs E --trials N`` (a subprocess: the real CLI), on
   the validation split only (the last 10,000 training images);
2. the best config (``best.yaml``) and the preset, each trained for E epochs with the test split
   left alone (``train(..., evaluate_test=False)``), then each evaluated on the test split once,
   with its best-by-validation weights.

The summary is printed and written as JSON (both test errors, the best parameters, trial counts,
wall times, commands, seed, versions)::

    python benchmarks/tune_mnist.py                        # 20 trials of 10 epochs
    python benchmarks/tune_mnist.py --trials 2 --epochs 1  # a smoke run

A rerun with the same ``--runs-dir`` continues the search's study (trials already finished are
kept); the two final runs must go to new directories (remove ``tuned/`` and ``preset/`` first).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PRESET = "mnist_cpu_budget"


def search(out: Path, trials: int, epochs: int, data_dir: str, seed: int, timeout: float | None) -> dict[str, Any]:
    """Run the search with the CLI; return its tune.json, the command and the wall time."""
    command = [sys.executable, "-m", "dropnet.cli", "tune", "--config", PRESET, "--epochs", str(epochs),
               "--data-dir", data_dir, "--trials", str(trials), "--seed", str(seed), "--out", str(out)]
    if timeout is not None:
        command += ["--timeout", str(timeout)]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return {
        "tune": json.loads((out / "tune.json").read_text()),
        "command": " ".join(["dropnet", *command[3:]]),
        "wall_seconds": time.perf_counter() - started,
    }


def train_and_test(config_source: str, run_dir: Path, epochs: int, data_dir: str, seed: int) -> dict[str, Any]:
    """Train a preset (name or YAML file) for ``epochs`` without looking at the test split, then test it once."""
    import torch

    from dropnet.trainer.config import load_preset
    from dropnet.trainer.data import load_dataset
    from dropnet.trainer.loop import error_rate, train
    from dropnet.trainer.rundir import load_run

    config = load_preset(config_source)
    config.optim.epochs, config.data.data_dir, config.seed = epochs, data_dir, seed
    started = time.perf_counter()
    final = train(config, run_dir, evaluate_test=False)
    _, _, model = load_run(run_dir)
    test = load_dataset(config.data, config.seed).test
    test_error = error_rate(model, torch.from_numpy(test.x), torch.from_numpy(test.y))
    return {
        "config": config_source,
        "command": f"dropnet train --config {config_source} --epochs {epochs} --data-dir {data_dir} --seed {seed} "
        f"--out {run_dir}  (as train(..., evaluate_test=False), then one test evaluation of the best weights)",
        "val_error": final["val_error"],
        "test_error": test_error,
        "best_epoch": final["best_epoch"],
        "epochs": final["epochs"],
        "training_seconds": final["seconds"],
        "wall_seconds": time.perf_counter() - started,
        "run_dir": str(run_dir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10, help="epoch budget of every trial and of both final runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, help="start no trial after this many seconds of search")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "tune_mnist")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tune_mnist.json")
    args = parser.parse_args()
    started = time.perf_counter()
    found = search(args.runs_dir / "search", args.trials, args.epochs, args.data_dir, args.seed, args.timeout)
    tune = found["tune"]
    if tune["best"] is None:
        raise SystemExit(f"no trial completed: see {args.runs_dir / 'search' / 'tune.json'}")
    tuned = train_and_test(tune["best_preset"], args.runs_dir / "tuned", args.epochs, args.data_dir, args.seed)
    preset = train_and_test(PRESET, args.runs_dir / "preset", args.epochs, args.data_dir, args.seed)
    result = {
        "benchmark": "dropnet tune on MNIST vs the hand-set preset, same epoch budget",
        "preset": PRESET,
        "trials": args.trials,
        "epochs": args.epochs,
        "seed": args.seed,
        "search": {
            "command": found["command"],
            "wall_seconds": found["wall_seconds"],
            "counts": tune["counts"],
            "best_trial": tune["best"]["number"],
            "best_val_error": tune["best"]["value"],
            "best_params": tune["best"]["params"],
            "importances": tune["importances"],
        },
        "tuned": tuned,
        "hand_set": preset,
        "wall_seconds": time.perf_counter() - started,
        "versions": tune["versions"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    counts = tune["counts"]
    print(f"search: {args.trials} trials of {args.epochs} epochs ({counts['complete']} complete, "
          f"{counts['pruned']} pruned) in {found['wall_seconds']:.0f}s; best trial {tune['best']['number']}: "
          f"val error {tune['best']['value']:.2%}, {tune['best']['params']}")
    print(f"{'config':<12} {'val err':>8} {'test err':>9} {'best epoch':>10}")
    for name, row in (("tuned", tuned), ("hand-set", preset)):
        print(f"{name:<12} {row['val_error']:>8.2%} {row['test_error']:>9.2%} {row['best_epoch']:>10}")
    print(f"total wall time {result['wall_seconds']:.0f}s; wrote {args.out}")


if __name__ == "__main__":
    main()
