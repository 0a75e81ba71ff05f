"""``dropnet serve --workers N`` against one process, back to back, with a client of several connections.

    .venv/bin/python benchmarks/serve_workers.py [--workers 2] [--rounds 3] [--seconds 4] [--channels 8]
        [--concurrency 32] [--out PATH]

Model and input as in ``benchmarks/server_vs_mlserver.py`` (the paper's 784-1024-1024-1024-10 net,
B=1 FP32 deterministic requests). The load generator (``benchmarks/oip_load.py``) runs
``--concurrency`` coroutines over ``--channels`` channels, each its own TCP connection, since the
kernel spreads connections, not requests, across the workers. One process and ``--workers``
processes take turns in ``--rounds`` rounds, each started afresh; the figures are medians over
rounds: throughput, p50, and server CPU per request (the whole process tree, from /proc). Prints
the throughput ratio N workers / 1 process (what decides the default of ``--workers``) and writes
``benchmarks/results/serve_workers.json``. The load generator shares the machine's cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # ahead of benchmarks/, whose server.py would shadow the server package

from benchmarks._common import PAPER_NET_DESCRIPTION, paper_package  # noqa: E402
from benchmarks._measure import percentiles_ms, tree_cpu_seconds  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402
from benchmarks.oip_load import closed_loop, wait_ready  # noqa: E402
from dropnet.core.fileio import atomic_write_json  # noqa: E402
from dropnet.server.process import ServeProcess  # noqa: E402

MODEL = "paper-mlp"
RESULTS = REPO / "benchmarks" / "results" / "serve_workers.json"
READY_TIMEOUT_S = 180.0
WARMUP_S = 0.5


def measure(models: Path, workers: int, x: np.ndarray, args: argparse.Namespace) -> dict[str, float]:
    """One window against a fresh server of ``workers`` processes."""
    flags = ["--models", str(models), "--host", "127.0.0.1", "--port", "0", "--workers", str(workers)]
    with ServeProcess(flags) as server:
        target = server.wait_serving(READY_TIMEOUT_S)
        for index in range(workers if workers > 1 else 0):
            server.wait_for(rf"worker-{index} \S+: serving on", READY_TIMEOUT_S)
        wait_ready(target, MODEL, x, READY_TIMEOUT_S, alive=lambda: server.process.poll() is None)
        pid = server.process.pid
        window = closed_loop(target, MODEL, x, args.concurrency, args.seconds, WARMUP_S, lambda _: None,
                             lambda: {"server": tree_cpu_seconds(pid)}, channels=args.channels)
    if window.failed:
        raise RuntimeError(f"{window.failed} requests failed against {workers} worker(s): {window.first_error}")
    return {
        "throughput_rps": window.completed / args.seconds,
        "p50_ms": percentiles_ms(window.latencies_s)[0],
        "server_cpu_ms": window.increase["server"] / window.completed * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="processes compared with one (default: 2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per window")
    parser.add_argument("--channels", type=int, default=8, help="client connections (default: 8)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default: 32)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    x = np.random.default_rng(0).integers(0, 256, (1, 1, 28, 28)).astype(np.float32)
    runs: dict[int, list[dict[str, float]]] = {1: [], args.workers: []}
    with tempfile.TemporaryDirectory(prefix="dropnet-workers-") as tmp:
        work = Path(tmp)
        models = paper_package(work, work / "models" / MODEL / "1", name=MODEL).parents[1]
        for round_ in range(args.rounds):
            for workers in (1, args.workers) if round_ % 2 == 0 else (args.workers, 1):
                runs[workers].append(measure(models, workers, x, args))
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    summary = {
        str(workers): {key: statistics.median(run[key] for run in measured) for key in measured[0]}
        | {"throughput_range": [min(r["throughput_rps"] for r in measured), max(r["throughput_rps"] for r in measured)]}
        for workers, measured in runs.items()
    }
    ratio = summary[str(args.workers)]["throughput_rps"] / summary["1"]["throughput_rps"]
    result: dict[str, Any] = {
        "model": PAPER_NET_DESCRIPTION,
        "load": f"{args.concurrency} requests in flight over {args.channels} connections, B=1 FP32, deterministic",
        "rounds": args.rounds, "seconds": args.seconds, "summary": summary, "runs": {str(k): v for k, v in runs.items()},
        "throughput_ratio_workers_over_one": ratio,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "command": "python " + " ".join(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    for workers, figures in summary.items():
        print(f"{workers} process(es): {figures['throughput_rps']:.0f} req/s "
              f"({figures['throughput_range'][0]:.0f}-{figures['throughput_range'][1]:.0f}), p50 {figures['p50_ms']:.2f} ms, "
              f"server CPU {figures['server_cpu_ms']:.3f} ms/request")
    print(f"throughput ratio {args.workers} workers / 1 process = {ratio:.2f}x on {os.cpu_count()} cores")
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
