"""Serving latency and throughput of ``dropnet serve`` over gRPC, with the in-process Predictor as the floor.

    .venv/bin/python benchmarks/server.py [--seconds 6] [--rounds 4] [--concurrency 1,8,32]
        [--intra-op-threads 1] [--max-queue-delay-ms MS] [--inference-workers N] [--device cpu]

Model: the paper's 784-1024-1024-1024-10 ReLU net (``benchmarks/_common.py``) with seeded random
weights, exported into a temporary models directory. Two ``dropnet serve`` subprocesses on
127.0.0.1 (port 0, read from their log) serve it at once: one with dynamic batching, one with
``--no-batching``; both get the same tuning flags, and the in-process Predictor the same intra-op
threads. The one flag tuned by default is ``--intra-op-threads 1``: on a small CPU box that also
runs the load generator (and other jobs), onnxruntime's default pool spins a second thread that
burns the CPU the event loop needs (``--intra-op-threads 0`` keeps onnxruntime's default). The
batcher keeps the server's defaults unless told otherwise (``--max-queue-delay-ms 0``: no wait for
batch-mates, batches form only from requests that arrive while the worker is busy).

Load: N threads of this process, each with its own tritonclient.grpc (KServe v2) client, in a
closed loop of B=1 requests, deterministic or MC dropout (T=50); plus a dropnet.v1
(``DropnetClient``) cell at concurrency 1. Each cell's ``--seconds`` are split over ``--rounds``
segments; within a round the two servers take turns cell by cell (who goes first alternates) and
in-process ``Predictor`` blocks run after every cell, so drift on a busy machine hits every
candidate alike. The load generator runs on the same cores as the servers, so every served number
pays for the client's CPU too; each cell reports the CPU time per request of server and client
(Linux /proc) and how many cores other processes kept busy meanwhile.

Prints every cell (p50, p99, req/s) and the derived comparisons with issue 4's targets (and floor, where
it gave one), and writes ``benchmarks/results/server.json``. The exit status does not depend on them.
The comparison with MLServer is ``benchmarks/server_vs_mlserver.py``, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as triton

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # ahead of benchmarks/, whose server.py would shadow the server package

from benchmarks._common import MNIST_SPEC, PAPER_NET_DESCRIPTION, paper_package  # noqa: E402
from benchmarks._measure import machine_cpu_seconds, percentiles_ms, process_cpu_seconds  # noqa: E402
from dropnet.server.client import DropnetClient  # noqa: E402
from dropnet.server.predictor import Predictor  # noqa: E402
from dropnet.server.process import ServeProcess  # noqa: E402

MODEL = "paper-mlp"
MC_SAMPLES = 50
MODES = ("deterministic", "mc")
RESULTS = REPO / "benchmarks" / "results" / "server.json"
WARMUP_S = 0.2
"""Unrecorded closed-loop time at the start of every segment, so queues and sessions are in steady state."""

Call = Callable[[], object]


# --- the servers ------------------------------------------------------------------------------


def serve_flags(models_dir: Path, flags: list[str]) -> list[str]:
    """The flags of a ``dropnet serve`` on 127.0.0.1 port 0 (metrics too), ``flags`` last."""
    return ["--models", str(models_dir), "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
            "--reload-interval", "0", *flags]


def batch_totals(metrics_url: str, mode: str) -> tuple[float, float]:
    """Rows and onnxruntime runs in ``mode`` so far, from a server's ``dropnet_batch_rows`` histogram."""
    with urllib.request.urlopen(metrics_url, timeout=30) as response:
        text = response.read().decode()

    def total(suffix: str) -> float:
        pattern = rf'^dropnet_batch_rows_{suffix}{{[^}}]*\bmode="{mode}"[^}}]*}} (\S+)$'
        return sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))
    return total("sum"), total("count")


# --- load -------------------------------------------------------------------------------------


@dataclass
class CpuTimes:
    """CPU seconds used so far: by this process, by each server process, and by the whole machine."""

    client: float
    servers: tuple[float, ...]
    machine: float

    def __sub__(self, other: "CpuTimes") -> "CpuTimes":
        return CpuTimes(self.client - other.client, tuple(a - b for a, b in zip(self.servers, other.servers)),
                        self.machine - other.machine)

    def __add__(self, other: "CpuTimes") -> "CpuTimes":
        return CpuTimes(self.client + other.client, tuple(a + b for a, b in zip(self.servers, other.servers)),
                        self.machine + other.machine)


@dataclass
class Samples:
    """Latencies (seconds) of requests started in measurement windows, completions and CPU time within them."""

    latencies: list[float] = field(default_factory=list)
    completed: int = 0
    seconds: float = 0.0
    cpu: CpuTimes | None = None
    """CPU used during the windows (None before the first window is added)."""
    rows: float = 0.0
    """Rows the server ran meanwhile (warm-ups included; 0 in-process)."""
    runs: float = 0.0
    """onnxruntime runs of the server meanwhile."""

    def add(self, other: "Samples") -> None:
        self.latencies += other.latencies
        self.completed += other.completed
        self.seconds += other.seconds
        self.rows += other.rows
        self.runs += other.runs
        if other.cpu is not None:
            self.cpu = other.cpu if self.cpu is None else self.cpu + other.cpu


def closed_loop(calls: list[Call], seconds: float, cpu_probe: Callable[[], CpuTimes]) -> Samples:
    """Run each call in its own thread, back to back; measure the ``seconds`` after :data:`WARMUP_S`.

    A request counts towards the latencies when it starts inside the window and towards throughput
    when it completes inside it; ``cpu_probe`` is read at both ends of the window.
    """
    barrier = threading.Barrier(len(calls) + 1)
    window: list[float] = []
    per_thread = [Samples() for _ in calls]
    errors: list[BaseException] = []

    def worker(call: Call, samples: Samples) -> None:
        barrier.wait()
        begin, end = window
        try:
            while (started := time.perf_counter()) < end:
                call()
                done = time.perf_counter()
                if started >= begin:
                    samples.latencies.append(done - started)
                if begin <= done <= end:
                    samples.completed += 1
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(call, samples)) for call, samples in zip(calls, per_thread)]
    for thread in threads:
        thread.start()
    now = time.perf_counter()
    begin, end = now + WARMUP_S, now + WARMUP_S + seconds
    window.extend((begin, end))
    barrier.wait()
    time.sleep(max(0.0, begin - time.perf_counter()))
    cpu_before = cpu_probe()
    time.sleep(max(0.0, end - time.perf_counter()))
    cpu = cpu_probe() - cpu_before
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    total = Samples(seconds=seconds, cpu=cpu)
    for samples in per_thread:
        total.latencies += samples.latencies
        total.completed += samples.completed
    return total


def kserve_call(client: triton.InferenceServerClient, x: np.ndarray, mc_samples: int | None) -> Call:
    """One KServe v2 ModelInfer of ``x`` (raw FP32), reading the probabilities back."""
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    parameters = {"mc_samples": mc_samples} if mc_samples else None

    def call() -> object:
        return client.infer(MODEL, [tensor], parameters=parameters).as_numpy("probabilities")
    return call


def v1_call(client: DropnetClient, x: np.ndarray, mc_samples: int | None) -> Call:
    """One dropnet.v1 Predict of ``x``."""
    return lambda: client.predict(MODEL, x, mc_samples=mc_samples)["probabilities"]


def in_process_call(predictor: Predictor, x: np.ndarray, mc_samples: int | None) -> Call:
    """One in-process prediction, as an embedding application would make it."""
    return lambda: predictor.predict(x, mc_samples=mc_samples).probabilities


# --- results ----------------------------------------------------------------------------------

Key = tuple[str, str, bool | None, int]
"""A cell: (api, mode, batching (None in-process), concurrency)."""


@dataclass
class Cell:
    """One measured configuration."""

    api: str
    """"kserve" (tritonclient.grpc), "dropnet.v1" (DropnetClient) or "in-process" (Predictor.predict)."""
    mode: str
    batching: bool | None
    concurrency: int
    requests: int
    p50_ms: float
    p99_ms: float
    throughput_rps: float
    server_cpu_ms: float | None
    """CPU time of the server under load per completed request (None in-process)."""
    client_cpu_ms: float
    """CPU time of this process (load generator, or the in-process Predictor) per completed request."""
    other_cores: float
    """Cores kept busy meanwhile by everything else on the machine (the idle server, other jobs)."""
    rows_per_run: float | None
    """Mean rows per onnxruntime run of the server (how well requests were batched); None in-process."""


@dataclass
class Comparison:
    """A derived number with its target and, where the issue gave one, its floor."""

    name: str
    value: float
    unit: str
    target: float
    floor: float | None
    below: bool
    """Whether smaller is better."""
    result: str = ""
    """"pass" (meets the target), "floor" (meets the floor only) or "FAIL"."""

    def __post_init__(self) -> None:
        def meets(bound: float | None) -> bool:
            return bound is not None and (self.value <= bound if self.below else self.value >= bound)
        self.result = "pass" if meets(self.target) else "floor" if meets(self.floor) else "FAIL"


def summarise(key: Key, samples: Samples, server_index: int | None) -> Cell:
    """A cell's percentiles, throughput and CPU use from its samples."""
    assert samples.cpu is not None
    p50, p99 = percentiles_ms(samples.latencies)
    per_request = 1e3 / max(samples.completed, 1)
    cpu = samples.cpu
    return Cell(
        *key, requests=len(samples.latencies), p50_ms=p50, p99_ms=p99,
        throughput_rps=round(samples.completed / samples.seconds, 1),
        server_cpu_ms=None if server_index is None else round(cpu.servers[server_index] * per_request, 3),
        client_cpu_ms=round(cpu.client * per_request, 3),
        other_cores=round((cpu.machine - cpu.client - sum(cpu.servers)) / samples.seconds, 2),
        rows_per_run=round(samples.rows / samples.runs, 2) if samples.runs else None,
    )


def compare(cells: dict[Key, Cell], top: int) -> list[Comparison]:
    """Overhead over in-process at concurrency 1 and batching speedup at concurrency ``top``: issue 4's targets.

    Peers are compared in ``benchmarks/server_vs_mlserver.py``, measured in the same run; figures a peer
    measured elsewhere are no baseline.
    """
    comparisons = [
        Comparison(
            f"p50 overhead over in-process, c=1, {_label(mode)}, batching {_on(batching)}",
            round(cells[("kserve", mode, batching, 1)].p50_ms - cells[("in-process", mode, None, 1)].p50_ms, 3),
            "ms", target=1.0, floor=None, below=True,
        )
        for mode in MODES for batching in (False, True)
    ]
    on, off = (cells[("kserve", "deterministic", batching, top)].throughput_rps for batching in (True, False))
    comparisons.append(Comparison(f"throughput batching on / off, c={top}, deterministic", round(on / off, 2), "x",
                                  target=3.0, floor=2.0, below=False))
    return comparisons


def _label(mode: str) -> str:
    return f"mc T={MC_SAMPLES}" if mode == "mc" else mode


def _on(batching: bool | None) -> str:
    return "-" if batching is None else "on" if batching else "off"


def print_report(cells: list[Cell], comparisons: list[Comparison], flags: dict[str, list[str]]) -> None:
    """The cells table and the comparisons table."""
    print(f"\nserver flags, batching on: {' '.join(flags['on'])}; batching off: {' '.join(flags['off'])}")
    print(f"load generator: client threads in this process, on the same {os.cpu_count()} cores as both servers; "
          "cpu ms = CPU time per request; other = cores busy with anything else; rows/run = batch size\n")
    print(f"{'api':<10} {'mode':<13} {'batch':>5} {'conc':>4} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} "
          f"{'srv cpu':>7} {'cli cpu':>7} {'other':>5} {'rows/run':>8}")
    for c in cells:
        server_cpu = "-" if c.server_cpu_ms is None else f"{c.server_cpu_ms:.3f}"
        rows = "-" if c.rows_per_run is None else f"{c.rows_per_run:.2f}"
        print(f"{c.api:<10} {_label(c.mode):<13} {_on(c.batching):>5} {c.concurrency:>4} {c.requests:>6} "
              f"{c.p50_ms:8.3f} {c.p99_ms:8.3f} {c.throughput_rps:7.1f} {server_cpu:>7} {c.client_cpu_ms:7.3f} "
              f"{c.other_cores:5.2f} {rows:>8}")
    width = max(len(c.name) for c in comparisons)
    print(f"\n{'comparison'.ljust(width)}  {'value':>8}  {'target':>13}  {'floor':>13}  result")
    for c in comparisons:
        sign = "<=" if c.below else ">="
        target, floor = ("-" if bound is None else f"{sign} {bound:g} {c.unit}" for bound in (c.target, c.floor))
        print(f"{c.name.ljust(width)}  {c.value:8.3f}  {target:>13}  {floor:>13}  {c.result}")


# --- the run ----------------------------------------------------------------------------------


def server_flags(args: argparse.Namespace) -> list[str]:
    """The ``dropnet serve`` tuning flags both servers get."""
    flags = ["--device", args.device]
    if args.max_queue_delay_ms is not None:
        flags += ["--max-queue-delay-ms", f"{args.max_queue_delay_ms:g}"]
    if args.intra_op_threads:
        flags += ["--intra-op-threads", str(args.intra_op_threads)]
    if args.inference_workers is not None:
        flags += ["--inference-workers", str(args.inference_workers)]
    return flags


def measure(args: argparse.Namespace, concurrencies: list[int],
            flags: dict[bool, list[str]]) -> dict[Key, Cell]:
    """Export the model, start both servers and measure every cell; the servers are stopped on return."""
    segment = args.seconds / args.rounds
    x = np.random.default_rng(0).uniform(0, 255, size=(1, *MNIST_SPEC.shape)).astype(np.float32)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        package = paper_package(Path(tmp), Path(tmp) / "models" / MODEL / "1", name=MODEL)
        predictor = Predictor.load(package, device=args.device, intra_op_threads=args.intra_op_threads or None)
        servers = {batching: stack.enter_context(ServeProcess(serve_flags(package.parents[1], flags[batching]), cwd=REPO))
                   for batching in (True, False)}
        targets = {batching: server.wait_serving() for batching, server in servers.items()}
        metrics_urls = {batching: server.wait_for(r"metrics at (http://\S+/metrics)").group(1)
                        for batching, server in servers.items()}
        kserve = {batching: [stack.enter_context(triton.InferenceServerClient(target))
                             for _ in range(max(concurrencies))] for batching, target in targets.items()}
        v1 = {batching: stack.enter_context(DropnetClient(target)) for batching, target in targets.items()}
        for client in v1.values():
            client.wait_ready()

        def cpu_probe() -> CpuTimes:
            return CpuTimes(time.process_time(), tuple(process_cpu_seconds(server.process.pid)
                                                       for server in servers.values()), machine_cpu_seconds())

        def run(key: Key, seconds: float) -> Samples:
            api, mode, batching, concurrency = key
            mc = MC_SAMPLES if mode == "mc" else None
            if batching is None:
                return closed_loop([in_process_call(predictor, x, mc)], seconds, cpu_probe)
            if api == "dropnet.v1":
                calls = [v1_call(v1[batching], x, mc)]
            else:
                calls = [kserve_call(client, x, mc) for client in kserve[batching][:concurrency]]
            rows, runs = batch_totals(metrics_urls[batching], mode)
            samples = closed_loop(calls, seconds, cpu_probe)
            rows_after, runs_after = batch_totals(metrics_urls[batching], mode)
            samples.rows, samples.runs = rows_after - rows, runs_after - runs
            return samples

        for mode in MODES:  # warm every session up at every batch size it will see
            run(("in-process", mode, None, 1), 0.3)
            for batching in servers:
                run(("kserve", mode, batching, max(concurrencies)), 0.5)

        served = [("kserve", mode, c) for mode in MODES for c in concurrencies] + [("dropnet.v1", m, 1) for m in MODES]
        samples: dict[Key, Samples] = {}
        for round_ in range(args.rounds):
            for index, (api, mode, concurrency) in enumerate(served):
                for batching in (True, False) if (round_ + index) % 2 == 0 else (False, True):
                    key = (api, mode, batching, concurrency)
                    samples.setdefault(key, Samples()).add(run(key, segment))
                for floor_mode in MODES:
                    key = ("in-process", floor_mode, None, 1)
                    samples.setdefault(key, Samples()).add(run(key, segment / 4))
            print(f"round {round_ + 1}/{args.rounds} done after {time.perf_counter() - started:.0f} s", file=sys.stderr)
    order = list(servers)
    return {key: summarise(key, value, None if key[2] is None else order.index(key[2]))
            for key, value in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per cell (default: 6)")
    parser.add_argument("--rounds", type=int, default=4, help="segments each cell's time is split into (default: 4)")
    parser.add_argument("--concurrency", default="1,8,32", help="client threads per cell, comma-separated; 1 is "
                        "always measured and the largest is compared (default: 1,8,32)")
    parser.add_argument("--device", default="cpu", help="--device of the servers and the Predictor (default: cpu)")
    parser.add_argument("--intra-op-threads", type=int, default=1,
                        help="for the servers and the Predictor; 0: onnxruntime's default (default: 1)")
    parser.add_argument("--max-queue-delay-ms", type=float, help="for the servers (default: the server's)")
    parser.add_argument("--inference-workers", type=int, help="for the servers (default: the server's)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default: {RESULTS})")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so both servers are stopped
    concurrencies = sorted({1, *(int(c) for c in args.concurrency.split(","))})
    flags = {True: server_flags(args), False: [*server_flags(args), "--no-batching"]}
    load_before = os.getloadavg()
    started = time.perf_counter()
    cells = measure(args, concurrencies, flags)

    comparisons = compare(cells, max(concurrencies))
    table = sorted(cells.values(), key=lambda c: (["in-process", "kserve", "dropnet.v1"].index(c.api), c.mode,
                                                  c.concurrency, c.batching is False))
    print_report(table, comparisons, {"on": flags[True], "off": flags[False]})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "network": PAPER_NET_DESCRIPTION,
        "requests": f"B=1 MNIST-shaped rows; deterministic, or MC dropout with T={MC_SAMPLES} (server-drawn seeds)",
        "server_flags": {"batching_on": flags[True], "batching_off": flags[False]},
        "predictor": {"device": args.device, "intra_op_threads": args.intra_op_threads or None},
        "load_generator": (f"closed loop, one tritonclient.grpc client per thread (dropnet.v1 cells: DropnetClient), "
                           f"in the benchmark process, on the same {os.cpu_count()} cores as both servers"),
        "seconds_per_cell": args.seconds,
        "rounds": args.rounds,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "load_average": {"before": [round(v, 2) for v in load_before],
                         "after": [round(v, 2) for v in os.getloadavg()]},
        "cpu_count": os.cpu_count(),
        "versions": {"onnxruntime": ort.__version__, "grpcio": grpc.__version__, "python": platform.python_version()},
        "cells": [asdict(c) for c in table],
        "comparisons": [asdict(c) for c in comparisons],
    }, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
