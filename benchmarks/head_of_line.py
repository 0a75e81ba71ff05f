"""Head-of-line blocking: a 1-row deterministic request's latency on an idle server, and while large MC requests run.

    .venv/bin/python benchmarks/head_of_line.py [--quick] [--rounds 3] [--idle-seconds 5] [--mc-requests 2]
        [--intra-op-threads N] [--inference-workers N] [--mc-workers N] [--max-queue-delay-ms MS] [--device cpu]

Model: the paper's 784-1024-1024-1024-10 ReLU net (``benchmarks/_common.py``) with seeded random
weights, served by one ``dropnet serve`` subprocess on 127.0.0.1 with the server's defaults (plus
the flags given), except the request cost limit: the default refuses the MC request measured
against, so it is raised (``--max-request-cost-bytes``, see :data:`COST_LIMIT_BYTES`).

Each round has two windows, in alternating order (idle first in even rounds, busy first in odd
ones), so drift on a busy machine hits both alike:

- idle: one client thread sends 1-row deterministic requests (KServe v2, tritonclient.grpc) back
  to back for ``--idle-seconds``;
- busy: two client threads send ``--mc-requests`` 128-row T=1000 MC requests back to back, so one
  runs while the next waits; once the server reports the first MC batch started (its
  ``dropnet_batch_rows`` metric), the deterministic client runs as in the idle window until the
  last MC response arrives; every deterministic request sent meanwhile counts.

Every window also reads the server's CPU time (Linux /proc): per deterministic request, and the
cores it kept busy (in the busy window, mostly the MC run's). The load generator shares the
machine's cores with the server; ``other`` is the cores everything else kept busy meanwhile.
Prints each window and the p99 difference and ratio with the issue's target, writes
``benchmarks/results/head_of_line.json``, and exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as triton

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import MNIST_SPEC, PAPER_NET_DESCRIPTION, paper_package  # noqa: E402
from benchmarks.server import (  # noqa: E402
    MODEL, Call, CpuTimes, Samples, batch_totals, closed_loop, kserve_call, machine_cpu_seconds,
    process_cpu_seconds, serve_flags, server_flags, summarise,
)
from dropnet.server.process import ServeProcess  # noqa: E402

MC_ROWS = 128
MC_SAMPLES = 1000
TARGET_MS = 3.0
"""The issue's "within a few ms of its p99 on an idle server", as a number: the busy p99 minus the idle p99."""
COST_LIMIT_BYTES = 64 * 1024**3
"""``--max-request-cost-bytes`` of the server. The default limit (2 GiB) refuses a 128-row T=1000 request of
this model (rows × T × its activation bytes per row and sample is about 12 GB); this one admits it."""
RESULTS = REPO / "benchmarks" / "results" / "head_of_line.json"
DET_KEY = ("kserve", "deterministic", True, 1)
"""The ``benchmarks.server.Cell`` key of every window: KServe v2, deterministic, batching on, one client."""
POLL_S = 0.005
"""Seconds between reads of the server's metrics while waiting for the MC run to start."""
WINDOWS = ("idle", "mc_running")
FULL = {"rounds": 3, "idle_seconds": 5.0, "mc_requests": 2}
"""Defaults of the rounds, the idle window and the MC requests per busy window."""
QUICK = {"rounds": 1, "idle_seconds": 2.0, "mc_requests": 1}
"""The same, with ``--quick``."""


def while_mc_runs(det: Call, mc: list[Call], requests: int, metrics_url: str,
                  cpu_probe: Callable[[], CpuTimes]) -> Samples:
    """Deterministic requests back to back while ``requests`` MC requests run, sent by one thread per ``mc`` call.

    The window opens when the server starts the first MC batch and closes when the last MC
    response arrives; every deterministic request sent inside it counts, however long it then
    waits (behind an MC run, if the server makes it wait).
    """
    errors: list[BaseException] = []

    def send(call: Call, count: int) -> None:
        try:
            for _ in range(count):
                call()
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)

    counts = [len(range(i, requests, len(mc))) for i in range(len(mc))]
    threads = [threading.Thread(target=send, args=(call, count)) for call, count in zip(mc, counts) if count]
    runs_before = batch_totals(metrics_url, "mc")[1]
    for thread in threads:
        thread.start()
    while batch_totals(metrics_url, "mc")[1] <= runs_before:  # until the first MC batch has started
        if errors:
            raise errors[0]
        time.sleep(POLL_S)
    samples = Samples()
    cpu_before = cpu_probe()
    opened = time.perf_counter()
    while any(thread.is_alive() for thread in threads) and not errors:
        started = time.perf_counter()
        det()
        samples.latencies.append(time.perf_counter() - started)
        samples.completed += 1
    samples.cpu = cpu_probe() - cpu_before
    samples.seconds = time.perf_counter() - opened
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return samples


def measure(args: argparse.Namespace, flags: list[str]) -> dict[str, list[Samples]]:
    """Export the model, start the server and measure every round's idle and busy windows; the samples by window."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(1, *MNIST_SPEC.shape)).astype(np.float32)
    x_mc = rng.uniform(0, 255, size=(MC_ROWS, *MNIST_SPEC.shape)).astype(np.float32)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        package = paper_package(Path(tmp), Path(tmp) / "models" / MODEL / "1", name=MODEL)
        server = stack.enter_context(ServeProcess(serve_flags(package.parents[1], flags), cwd=REPO))
        target = server.wait_serving()
        metrics_url = server.wait_for(r"metrics at (http://\S+/metrics)").group(1)
        clients = [stack.enter_context(triton.InferenceServerClient(target)) for _ in range(3)]
        det = kserve_call(clients[0], x, None)
        mc = [kserve_call(client, x_mc, MC_SAMPLES) for client in clients[1:]]

        def cpu_probe() -> CpuTimes:
            return CpuTimes(time.process_time(), (process_cpu_seconds(server.process.pid),), machine_cpu_seconds())

        runs = {"idle": lambda: closed_loop([det], args.idle_seconds, cpu_probe),
                "mc_running": lambda: while_mc_runs(det, mc, args.mc_requests, metrics_url, cpu_probe)}
        runs["idle"]()  # warm-up: the deterministic session, then the MC session on a small run
        kserve_call(clients[1], x_mc[:8], 10)()
        samples: dict[str, list[Samples]] = {window: [] for window in WINDOWS}
        for round_ in range(args.rounds):
            for window in WINDOWS if round_ % 2 == 0 else WINDOWS[::-1]:
                samples[window].append(runs[window]())
            print(f"round {round_ + 1}/{args.rounds} done after {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return samples


def row(window: str, round_: int | None, samples: Samples) -> dict[str, object]:
    """One window (``round_`` None: every round's requests together) as a results row."""
    assert samples.cpu is not None
    cell = asdict(summarise(DET_KEY, samples, 0))
    return {"window": window, "round": round_, "seconds": round(samples.seconds, 2),
            **{k: cell[k] for k in ("requests", "p50_ms", "p99_ms", "server_cpu_ms", "client_cpu_ms", "other_cores")},
            "server_cores": round(samples.cpu.servers[0] / samples.seconds, 2)}


def totals(windows: list[Samples]) -> Samples:
    """Every window's requests and CPU time together."""
    total = Samples()
    for samples in windows:
        total.add(samples)
    return total


def print_report(rows: list[dict[str, object]], comparison: dict[str, object], flags: list[str]) -> None:
    print(f"\nserver flags: {' '.join(flags)}")
    print(f"1-row deterministic requests, one client; busy = while {MC_ROWS}-row T={MC_SAMPLES} MC requests run. "
          "srv cpu = server CPU ms per deterministic request (busy: the MC run's included); "
          f"cores = server cores busy; other = cores busy with anything else (of {os.cpu_count()})\n")
    print(f"{'window':<11} {'round':>5} {'s':>6} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'srv cpu':>8} {'cores':>5} "
          f"{'other':>5}")
    for r in rows:
        print(f"{r['window']:<11} {'all' if r['round'] is None else r['round']:>5} {r['seconds']:6.1f} "
              f"{r['requests']:6d} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['server_cpu_ms']:8.3f} "
              f"{r['server_cores']:5.2f} {r['other_cores']:5.2f}")
    print(f"\np99 while MC runs - idle p99: {comparison['p99_difference_ms']:.3f} ms "
          f"(ratio {comparison['p99_ratio']:.2f}); target <= {TARGET_MS:g} ms: {comparison['result']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"a short check, not a figure to quote: defaults {QUICK} instead of {FULL}")
    parser.add_argument("--rounds", type=int, help="idle/busy window pairs")
    parser.add_argument("--idle-seconds", type=float, help="measured seconds per idle window")
    parser.add_argument("--mc-requests", type=int, help=f"{MC_ROWS}-row T={MC_SAMPLES} MC requests per busy window")
    parser.add_argument("--device", default="cpu", help="--device of the server (default: cpu)")
    parser.add_argument("--intra-op-threads", type=int, help="for the server (default: the server's)")
    parser.add_argument("--inference-workers", type=int, help="for the server (default: the server's)")
    parser.add_argument("--mc-workers", type=int, help="for the server (default: the server's)")
    parser.add_argument("--max-queue-delay-ms", type=float, help="for the server (default: the server's)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default: {RESULTS})")
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():  # what was not given explicitly
        if getattr(args, name) is None:
            setattr(args, name, value)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so the server is stopped
    flags = [*server_flags(args), "--max-request-cost-bytes", str(COST_LIMIT_BYTES)]
    if args.mc_workers is not None:
        flags += ["--mc-workers", str(args.mc_workers)]
    load_before = os.getloadavg()
    started = time.perf_counter()
    samples = measure(args, flags)

    rows = [row(window, i, s) for window in WINDOWS for i, s in enumerate(samples[window])]
    idle, busy = (row(window, None, totals(samples[window])) for window in WINDOWS)
    difference = round(busy["p99_ms"] - idle["p99_ms"], 3)
    comparison = {"p99_difference_ms": difference, "p99_ratio": round(busy["p99_ms"] / idle["p99_ms"], 2),
                  "target": f"p99 while MC runs <= idle p99 + {TARGET_MS:g} ms",
                  "result": "met" if difference <= TARGET_MS else "missed"}
    print_report([*rows, idle, busy], comparison, flags)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "network": PAPER_NET_DESCRIPTION,
        "requests": (f"1-row deterministic, KServe v2 (tritonclient.grpc), one client in a closed loop; "
                     f"busy windows: {args.mc_requests} {MC_ROWS}-row T={MC_SAMPLES} MC requests, two clients, "
                     "so one runs while the next waits"),
        "server_flags": flags,
        "cost_limit_note": (f"--max-request-cost-bytes {COST_LIMIT_BYTES}: the default limit (2 GiB) refuses a "
                            f"{MC_ROWS}-row T={MC_SAMPLES} request of this model; the limit is not what is measured"),
        "rounds": args.rounds,
        "idle_seconds": args.idle_seconds,
        "quick": args.quick,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "load_average": {"before": [round(v, 2) for v in load_before],
                         "after": [round(v, 2) for v in os.getloadavg()]},
        "cpu_count": os.cpu_count(),
        "versions": {"onnxruntime": ort.__version__, "grpcio": grpc.__version__, "python": platform.python_version()},
        "windows": rows,
        "idle": idle,
        "mc_running": busy,
        "comparison": comparison,
    }, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0 if comparison["result"] == "met" else 1


if __name__ == "__main__":
    sys.exit(main())
