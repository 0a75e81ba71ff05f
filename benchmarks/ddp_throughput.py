"""Data-parallel training throughput: 1 vs N torchrun processes on this machine, the same global work.

Each round runs ``torchrun --standalone --nproc-per-node P -m dropnet train`` on the bundled digits
(or ``--data``) with the same config and global batch, for P = 1 (``--threads`` intra-op threads)
and P = N (``--threads // N`` threads each, so both use the same cores); the two alternate
``--rounds`` times. Samples/s is the examples an epoch trains on over the epoch's wall time in
``metrics.jsonl`` (which includes rank 0's evaluation on val/test), epochs after the first only.
Process start-up is not counted.

    python benchmarks/ddp_throughput.py [--processes 2] [--threads 2] [--rounds 3] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["--hidden", "1024,1024", "--batch-size", "100", "--lr", "0.1", "--device", "cpu"]


def run_once(processes: int, threads: int, data: str, epochs: int, work: Path) -> float:
    """Samples/s of one torchrun job (epochs 2.. of its metrics)."""
    run_dir = work / f"p{processes}-{len(list(work.iterdir()))}"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
        "-m", "dropnet", "train", "--data", data, *TRAIN, "--epochs", str(epochs), "--out", str(run_dir),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
    config = json.loads((run_dir / "config.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1:]
    examples = config["dataset"]["train"]
    return examples * len(records) / sum(r["seconds"] for r in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="cores both setups share")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ddp_throughput.json"))
    args = parser.parse_args()

    setups = {1: args.threads, args.processes: max(1, args.threads // args.processes)}
    rates: dict[int, list[float]] = {p: [] for p in setups}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.rounds):
            for processes, threads in setups.items():
                rates[processes].append(run_once(processes, threads, args.data, args.epochs, Path(work)))
    median = {p: statistics.median(r) for p, r in rates.items()}
    ratio = median[args.processes] / median[1]
    result = {
        "what": "samples/s of torchrun -m dropnet train, epochs 2.. of each run (wall time incl. rank 0's evaluation)",
        "data": args.data,
        "flags": TRAIN,
        "epochs": args.epochs,
        "rounds": args.rounds,
        "cpu_count": os.cpu_count(),
        "setups": {f"{p} process(es) x {t} thread(s)": {"samples_per_s": rates[p], "median": median[p]}
                   for p, t in setups.items()},
        f"ratio_{args.processes}_over_1": ratio,
        "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for p, t in setups.items():
        print(f"{p} process(es) x {t} thread(s): {median[p]:.0f} samples/s (rounds: {', '.join(f'{r:.0f}' for r in rates[p])})")
    print(f"ratio {args.processes} processes / 1 process = {ratio:.2f}x; wrote {args.out}")


if __name__ == "__main__":
    main()
