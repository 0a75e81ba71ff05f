"""CPU time of MC dropout per sample-row against the activation budget of one run (``--mc-chunk-bytes``).

    .venv/bin/python benchmarks/mc_chunk_size.py [--rounds 4] [--budgets-mib 32,64,128,256] [--out PATH]

Model: the paper's 784-1024-1024-1024-10 ReLU net (``benchmarks/_common.py``), one onnxruntime
thread, the embedded Predictor. For each request shape (rows B × samples T) and each budget, one
``Predictor.run_mc`` call, alternating budgets in ``--rounds`` rounds; the figure is the median
process CPU time per sample-row (B × T). The budget decides how many sample-rows one onnxruntime
run holds; past what the caches hold, a run gets slower per row. The answer does not depend on the
budget (the summaries combine exactly), so this is only a question of speed and peak memory.
Writes ``benchmarks/results/mc_chunk_size.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # ahead of benchmarks/, whose server.py would shadow the server package

from benchmarks._common import PAPER_NET_DESCRIPTION, paper_package  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402
from dropnet.core.fileio import atomic_write_json  # noqa: E402
from dropnet.server.predictor import DEFAULT_MC_CHUNK_BYTES, Predictor  # noqa: E402
from dropnet.server.request import check_request  # noqa: E402

SHAPES = ((1, 50), (32, 50), (8, 200), (1, 1000))
"""(rows, T) of the requests measured: a lone request, a batch the server forms at concurrency 32, and longer T."""
MIB = 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--budgets-mib", default="32,64,128,256", help="activation budgets compared, in MiB")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "mc_chunk_size.json")
    args = parser.parse_args()
    budgets = [int(value) for value in args.budgets_mib.split(",")]
    rng = np.random.default_rng(0)
    cpu_us: dict[str, dict[int, list[float]]] = {f"B={b} T={t}": {mib: [] for mib in budgets} for b, t in SHAPES}
    with tempfile.TemporaryDirectory(prefix="dropnet-mc-chunks-") as tmp:
        package = paper_package(Path(tmp), Path(tmp) / "package")
        predictor = Predictor.load(package, device="cpu", intra_op_threads=1)
        for _ in range(args.rounds):
            for rows, samples in SHAPES:
                x = check_request(predictor, rng.integers(0, 256, (rows, 1, 28, 28)).astype(np.float32)).x
                seeds = np.arange(rows, dtype=np.int64)
                for mib in budgets:
                    predictor.mc_chunk_bytes = mib * MIB
                    started = time.process_time()
                    predictor.run_mc(x, samples, seeds, ("probabilities",))
                    cpu_us[f"B={rows} T={samples}"][mib].append((time.process_time() - started) / (rows * samples) * 1e6)
        sample_bytes = predictor.sample_bytes
    medians = {shape: {str(mib): statistics.median(v) for mib, v in by_budget.items()} for shape, by_budget in cpu_us.items()}
    print(f"CPU µs per sample-row (median of {args.rounds} rounds); budget in MiB of activations per run")
    print(f"{'request':<14}" + "".join(f"{mib:>10}" for mib in budgets))
    for shape, by_budget in medians.items():
        print(f"{shape:<14}" + "".join(f"{by_budget[str(mib)]:>10.1f}" for mib in budgets))
    atomic_write_json(args.out, {
        "model": PAPER_NET_DESCRIPTION, "sample_bytes": sample_bytes, "intra_op_threads": 1, "rounds": args.rounds,
        "budgets_mib": budgets, "default_mib": DEFAULT_MC_CHUNK_BYTES // MIB, "cpu_us_per_sample_row": medians,
        "runs": {shape: {str(mib): v for mib, v in by_budget.items()} for shape, by_budget in cpu_us.items()},
        "cpu": cpu_model(), "command": "python " + " ".join(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
