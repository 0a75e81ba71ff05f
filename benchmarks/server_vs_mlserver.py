"""``dropnet serve`` against Seldon MLServer and a minimal gRPC server, back to back in one run on this machine.

    .venv/bin/python benchmarks/server_vs_mlserver.py [--rounds 4] [--seconds 4] [--concurrency 1,8,32]
        [--servers mlserver,mlserver-batching,minimal,dropnet,dropnet-no-batching] [--smoke] [--out PATH]

Model: the paper's 784-1024-1024-1024-10 ReLU net (``benchmarks/_common.py``, seeded random
weights), exported once; every server runs its ``deterministic.onnx`` with onnxruntime, with the
intra-op threads ``dropnet serve`` picks by default on this machine and no spinning. Servers, one
at a time on 127.0.0.1:

- ``mlserver``: MLServer 1.7.1 as it ships (inference in its worker process pool), with a generated
  runtime (``benchmarks/mlserver_env.py``; its venv is installed once into a cache directory);
- ``mlserver-batching``: its best configuration here: in-process (``parallel_workers: 0``), adaptive
  batching, no access log and no metrics (:data:`MLSERVER_BEST`);
- ``minimal``: ``benchmarks/oip_floor_server.py``, the floor of a Python gRPC server;
- ``dropnet``: ``dropnet serve`` with its defaults; ``dropnet-no-batching``: with ``--no-batching``.

Load (``benchmarks/oip_load.py``): tritonclient.grpc.aio in this process, a closed loop of N
coroutines on one channel, B=1 FP32 requests, deterministic at each concurrency, and for the two
dropnet servers MC dropout (T=50, request parameters ``mc_samples`` and ``seed`` = the request's
sequence number) at the largest. Each cell has an unrecorded warm-up first. The servers take turns
in ``--rounds`` rounds, each server started afresh every round and the order rotated, and every
figure reported is the median over rounds (with its range). Server CPU per request is the user +
system CPU time of the server's whole process tree (/proc) over the window divided by the requests
it completed. The load generator shares the cores with the server (its CPU is reported too).

Prints the table and each of issue 9's targets as met or missed with its two numbers (all from this
run), and writes ``benchmarks/results/server_vs_mlserver.json``. The exit code does not depend on the
targets. ``--smoke``: dropnet only, a few seconds, no MLServer.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # ahead of benchmarks/, whose server.py would shadow the server package

from benchmarks import mlserver_env  # noqa: E402
from benchmarks._common import MNIST_SPEC, PAPER_NET_DESCRIPTION, paper_package  # noqa: E402
from benchmarks._measure import machine_cpu_seconds, percentiles_ms, tree_cpu_seconds  # noqa: E402
from benchmarks.machine import cpu_model, source_commit  # noqa: E402
from benchmarks.oip_load import Window, closed_loop, wait_ready  # noqa: E402
from dropnet.core.fileio import atomic_write_json  # noqa: E402
from dropnet.server.process import ServeProcess, serve_command  # noqa: E402
from dropnet.server.settings import ServerSettings  # noqa: E402

MODEL = "paper-mlp"
MC_SAMPLES = 50
INPUT_SEED = 0
"""Seed of the one input row every request sends (uniform in 0..255)."""
RESULTS = REPO / "benchmarks" / "results" / "server_vs_mlserver.json"
FLOOR_SERVER = REPO / "benchmarks" / "oip_floor_server.py"
WARMUP_S = 0.5
"""Unrecorded closed-loop time before every cell's window."""
READY_TIMEOUT_S = 180.0
MLSERVER_GRPC = re.compile(r"gRPC server running on http://(\S+:\d+)")
"""The line MLServer logs once its gRPC port is bound; group 1 is host:port."""
SERVERS = {
    "mlserver": f"MLServer {mlserver_env.MLSERVER} default (worker process)",
    "mlserver-batching": f"MLServer {mlserver_env.MLSERVER} in-process, adaptive batching, quiet",
    "minimal": "minimal grpc.aio OIP server",
    "dropnet": "dropnet serve (defaults)",
    "dropnet-no-batching": "dropnet serve --no-batching",
}
MLSERVERS = ("mlserver", "mlserver-batching")
MLSERVER_BEST = {"parallel_workers": 0, "debug": False, "metrics_endpoint": None}
"""``mlserver-batching``'s settings: inference in the server process, and neither the access log (one line per
request) nor the metrics interceptor that MLServer's default ``debug: true`` and ``metrics_endpoint`` turn on."""
MC_SERVERS = ("dropnet", "dropnet-no-batching")
START_S = {"mlserver": 6.0, "mlserver-batching": 4.0, "minimal": 2.0, "dropnet": 3.0, "dropnet-no-batching": 3.0}
"""Seconds to start, warm and stop each server on a 2-core machine (for the planned duration only)."""
SMOKE = {"servers": "dropnet", "rounds": 1, "seconds": 0.5, "concurrency": "1,4"}


# --- the servers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """What starting a server needs."""

    package: Path
    work: Path
    intra_op_threads: int
    mlserver_venv: Path | None
    mlserver_batch: dict[str, float]
    """``max_batch_size`` and ``max_batch_time`` (seconds) of ``mlserver-batching``."""

    @property
    def graph(self) -> Path:
        return self.package / "deterministic.onnx"


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 just now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def server_command(name: str, setup: Setup) -> tuple[list[str], list[str], Path | None]:
    """The command, flags and working directory that start server ``name`` (an MLServer repository is written)."""
    if name in ("dropnet", "dropnet-no-batching"):
        flags = ["--models", str(setup.package.parents[1]), "--host", "127.0.0.1", "--port", "0"]
        return serve_command(), flags + (["--no-batching"] if name == "dropnet-no-batching" else []), REPO
    if name == "minimal":
        return [sys.executable, str(FLOOR_SERVER)], [str(setup.graph), "--intra-op-threads",
                                                     str(setup.intra_op_threads)], REPO
    assert setup.mlserver_venv is not None
    folder = setup.work / name
    http, grpc_port, metrics = free_ports(3)
    settings: dict[str, Any] = {"host": "127.0.0.1", "http_port": http, "grpc_port": grpc_port, "metrics_port": metrics}
    if name == "mlserver-batching":
        settings.update(MLSERVER_BEST)
    mlserver_env.write_repository(folder, MODEL, setup.graph, setup.intra_op_threads, settings,
                                  setup.mlserver_batch if name == "mlserver-batching" else {})
    return [str(setup.mlserver_venv / "bin" / "mlserver")], ["start", str(folder)], folder


@contextmanager
def running(name: str, setup: Setup, x: np.ndarray) -> Iterator[tuple[ServeProcess, str]]:
    """Server ``name`` started and answering inferences: its process and ``host:port``; stopped on exit."""
    command, flags, cwd = server_command(name, setup)
    with ServeProcess(flags, command=command, cwd=cwd) as server:
        if name in MLSERVERS:
            target = server.wait_for(MLSERVER_GRPC, READY_TIMEOUT_S).group(1)
        else:
            target = server.wait_serving(READY_TIMEOUT_S)
        try:
            wait_ready(target, MODEL, x, READY_TIMEOUT_S, alive=lambda: server.process.poll() is None)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; its last output:\n" + "\n".join(server.lines[-40:])) from None
        yield server, target


# --- one cell ---------------------------------------------------------------------------------


@dataclass
class Measured:
    """One cell of one round."""

    round: int
    server: str
    mode: str
    concurrency: int
    requests: int
    """Successful requests started in the window (the latencies' count)."""
    completed: int
    failed: int
    first_error: str | None
    p50_ms: float
    p99_ms: float
    throughput_rps: float
    server_cpu_ms: float
    """User + system CPU of the server's process tree per completed request."""
    client_cpu_ms: float
    """CPU of this process (the load generator) per completed request."""
    other_cores: float
    """Cores kept busy meanwhile by everything else on the machine."""


def measure_cell(round_: int, name: str, mode: str, concurrency: int, pid: int, target: str, x: np.ndarray,
                 seconds: float) -> Measured:
    """One closed-loop window of ``concurrency`` coroutines against the server ``name`` (process ``pid``)."""
    def probe() -> dict[str, float]:
        return {"server": tree_cpu_seconds(pid), "client": time.process_time(), "machine": machine_cpu_seconds()}

    def parameters(sequence: int) -> dict[str, int] | None:
        return {"mc_samples": MC_SAMPLES, "seed": sequence} if mode == "mc" else None

    window: Window = closed_loop(target, MODEL, x, concurrency, seconds, WARMUP_S, parameters, probe)
    p50, p99 = percentiles_ms(window.latencies_s) if window.latencies_s else (float("nan"), float("nan"))
    per_request = 1e3 / max(window.completed, 1)
    cpu = window.increase
    return Measured(
        round=round_, server=name, mode=mode, concurrency=concurrency, requests=len(window.latencies_s),
        completed=window.completed, failed=window.failed, first_error=window.first_error, p50_ms=p50, p99_ms=p99,
        throughput_rps=round(window.completed / seconds, 1), server_cpu_ms=round(cpu["server"] * per_request, 3),
        client_cpu_ms=round(cpu["client"] * per_request, 3),
        other_cores=round((cpu["machine"] - cpu["server"] - cpu["client"]) / seconds, 2),
    )


def cells_of(name: str, concurrencies: list[int]) -> list[tuple[str, int]]:
    """The (mode, concurrency) cells measured on server ``name``: MC only on dropnet, at the largest concurrency."""
    cells = [("deterministic", c) for c in concurrencies]
    return cells + ([("mc", max(concurrencies))] if name in MC_SERVERS else [])


# --- summaries and targets ----------------------------------------------------------------------

METRICS = ("p50_ms", "p99_ms", "throughput_rps", "server_cpu_ms", "client_cpu_ms", "other_cores")


def summarise(measured: list[Measured]) -> list[dict[str, Any]]:
    """Per server and cell: the median over rounds of each metric, its range, and the request counts."""
    groups: dict[tuple[str, str, int], list[Measured]] = {}
    for m in measured:
        groups.setdefault((m.server, m.mode, m.concurrency), []).append(m)
    cells = []
    for (server, mode, concurrency), ms in groups.items():
        cell: dict[str, Any] = {"server": server, "mode": mode, "concurrency": concurrency, "rounds": len(ms),
                                "requests": sum(m.requests for m in ms), "failed": sum(m.failed for m in ms)}
        for metric in METRICS:
            values = [getattr(m, metric) for m in ms]
            cell[metric] = round(statistics.median(values), 3)
            cell[f"{metric}_range"] = [min(values), max(values)]
        cells.append(cell)
    order = list(SERVERS)
    return sorted(cells, key=lambda c: (order.index(c["server"]), c["mode"] != "deterministic", c["concurrency"]))


@dataclass
class Target:
    """One of issue 9's targets, as ``value`` (dropnet) against ``factor`` × ``reference`` (the other server)."""

    name: str
    server: str
    value: float
    reference_server: str
    reference: float
    factor: float
    below: bool
    """Whether dropnet's value must be at most (else at least) factor × reference."""
    met: bool = False

    def __post_init__(self) -> None:
        bound = self.factor * self.reference
        self.met = self.value <= bound if self.below else self.value >= bound

    def line(self) -> str:
        sign = "<=" if self.below else ">="
        return (f"{'met   ' if self.met else 'MISSED'}  {self.name}: {self.server} {self.value:g} {sign} "
                f"{self.factor:.3g} x {self.reference_server} {self.reference:g} = {self.factor * self.reference:.4g}")


@dataclass(frozen=True)
class TargetSpec:
    """How one target is worked out: dropnet's ``metric`` against ``factor`` × the best of ``references``."""

    name: str
    """With ``{top}`` for the largest concurrency."""
    metric: str
    mode: str
    at_top: bool
    """At the largest concurrency (else at 1)."""
    references: tuple[str, ...]
    """The servers compared with; the best of them (the lowest value where lower is better) counts."""
    factor: float
    below: bool


TARGETS = (
    TargetSpec("server CPU ms/request, c=1, vs minimal", "server_cpu_ms", "deterministic", False, ("minimal",), 1.25,
               True),
    TargetSpec("server CPU ms/request, c=1, vs MLServer default", "server_cpu_ms", "deterministic", False,
               ("mlserver",), 1 / 3, True),
    TargetSpec("p50 ms, c=1, vs minimal", "p50_ms", "deterministic", False, ("minimal",), 1.15, True),
    TargetSpec("p50 ms, c=1, vs MLServer default", "p50_ms", "deterministic", False, ("mlserver",), 1.0, True),
    TargetSpec("p99 ms, c=1, vs MLServer", "p99_ms", "deterministic", False, MLSERVERS, 1.0, True),
    TargetSpec("req/s, c={top}, vs MLServer", "throughput_rps", "deterministic", True, MLSERVERS, 2.0, False),
    TargetSpec("server CPU ms/request, c={top}, vs MLServer", "server_cpu_ms", "deterministic", True, MLSERVERS, 0.5,
               True),
    TargetSpec("batching gain (req/s), c={top}, deterministic", "throughput_rps", "deterministic", True,
               ("dropnet-no-batching",), 3.0, False),
    TargetSpec("batching gain (req/s), c={top}, mc", "throughput_rps", "mc", True, ("dropnet-no-batching",), 1.5, False),
)
"""Issue 9's targets; "dropnet" is ``dropnet serve`` with its defaults."""


def targets(cells: list[dict[str, Any]], top: int) -> list[Target]:
    """The :data:`TARGETS` whose servers and cells this run measured, from its medians."""
    table = {(c["server"], c["mode"], c["concurrency"]): c for c in cells}
    found = []
    for spec in TARGETS:
        key = (spec.mode, top if spec.at_top else 1)
        ours = table.get(("dropnet", *key))
        theirs = [(table[(s, *key)][spec.metric], s) for s in spec.references if (s, *key) in table]
        if ours is None or not theirs:
            continue
        reference, server = (min if spec.below else max)(theirs)
        label = f"{server} (MLServer's best)" if len(spec.references) > 1 else server
        found.append(Target(spec.name.format(top=top), "dropnet", ours[spec.metric], label, reference, spec.factor,
                            spec.below))
    return found


# --- output -------------------------------------------------------------------------------------


def print_table(cells: list[dict[str, Any]]) -> None:
    """Medians over rounds, with the range over rounds of throughput and server CPU."""
    width = max(len(SERVERS[c["server"]]) for c in cells)
    print(f"\n{'server':<{width}} {'mode':<13} {'c':>3} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7} {'(range)':>15} "
          f"{'srv CPU':>7} {'(range)':>13} {'cli CPU':>7} {'other':>5}")
    for c in cells:
        mode = f"mc T={MC_SAMPLES}" if c["mode"] == "mc" else c["mode"]
        rps, cpu = c["throughput_rps_range"], c["server_cpu_ms_range"]
        print(f"{SERVERS[c['server']]:<{width}} {mode:<13} {c['concurrency']:>3} {c['p50_ms']:7.2f} {c['p99_ms']:7.2f} "
              f"{c['throughput_rps']:7.0f} {f'{rps[0]:.0f}-{rps[1]:.0f}':>15} {c['server_cpu_ms']:7.3f} "
              f"{f'{cpu[0]:.2f}-{cpu[1]:.2f}':>13} {c['client_cpu_ms']:7.3f} {c['other_cores']:5.2f}")
    print("ms per request; CPU = user+system CPU ms per completed request (srv: the server's process tree, "
          "cli: this load generator); other = cores busy with anything else")


def versions(mlserver: dict[str, Any] | None) -> dict[str, Any]:
    """The versions behind the figures: this interpreter's packages, and the MLServer venv's."""
    ours = {name: importlib.metadata.version(name) for name in ("dropnet", "grpcio", "tritonclient", "numpy")}
    return {"python": platform.python_version(), "onnxruntime": ort.__version__, **ours,
            "source_commit": source_commit(REPO), "mlserver_venv": mlserver}


# --- the run ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated, of {', '.join(SERVERS)} (default: all)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (default: 4)")
    parser.add_argument("--seconds", type=float, default=4.0,
                        help=f"measured seconds per cell and round, after {WARMUP_S:g} s of warm-up (default: 4)")
    parser.add_argument("--concurrency", default="1,8,32",
                        help="coroutines per cell, comma-separated; MC runs at the largest (default: 1,8,32)")
    parser.add_argument("--mlserver-max-batch-size", type=int, default=32,
                        help="max_batch_size of mlserver-batching (default: 32, the largest concurrency)")
    parser.add_argument("--mlserver-max-batch-time-ms", type=float, default=2.0,
                        help="max_batch_time of mlserver-batching (default: 2, dropnet's --max-queue-delay-ms)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"a few seconds, dropnet only, no MLServer: {SMOKE} unless given")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default: {RESULTS})")
    args = parser.parse_args()
    if args.smoke:
        given = {a.split("=", 1)[0] for a in sys.argv[1:]}
        for key, value in SMOKE.items():
            if f"--{key}" not in given:
                setattr(args, key, value)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in args.servers if s not in SERVERS]
    if unknown or not args.servers:
        parser.error(f"--servers: unknown {unknown}; expected some of {', '.join(SERVERS)}")
    try:
        args.concurrency = sorted({int(c) for c in args.concurrency.split(",")})
    except ValueError:
        parser.error(f"--concurrency: expected comma-separated integers, got {args.concurrency!r}")
    if args.rounds < 1 or args.seconds <= 0 or min(args.concurrency) < 1:
        parser.error("--rounds and --concurrency must be at least 1 and --seconds above 0")
    return args


def planned_seconds(args: argparse.Namespace) -> float:
    """Roughly how long the rounds take: starts and stops, and every cell's warm-up and window."""
    per_round = sum(START_S[s] + len(cells_of(s, args.concurrency)) * (WARMUP_S + args.seconds + 0.2)
                    for s in args.servers)
    return args.rounds * per_round


def run_rounds(args: argparse.Namespace, setup: Setup, started: float) -> tuple[list[Measured], list[dict[str, Any]]]:
    """Every cell of every server in each round (order rotated per round); and per server start, the seconds
    until it answered, the seconds it took to stop and the lines it logged."""
    x = np.random.default_rng(INPUT_SEED).uniform(0, 255, size=(1, *MNIST_SPEC.shape)).astype(np.float32)
    measured: list[Measured] = []
    lifecycle: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        shift = round_ % len(args.servers)
        for name in args.servers[shift:] + args.servers[:shift]:
            begin = time.perf_counter()
            with running(name, setup, x) as (server, target):
                ready = time.perf_counter()
                for mode, concurrency in cells_of(name, args.concurrency):
                    measured.append(measure_cell(round_ + 1, name, mode, concurrency, server.process.pid, target, x,
                                                 args.seconds))
                measured_until = time.perf_counter()
            lifecycle.append({"round": round_ + 1, "server": name, "ready_s": round(ready - begin, 2),
                              "stop_s": round(time.perf_counter() - measured_until, 2), "output_lines": len(server.lines)})
        print(f"round {round_ + 1}/{args.rounds} done after {time.perf_counter() - started:.0f} s", flush=True)
    return measured, lifecycle


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so the running server is stopped
    started, load_before = time.perf_counter(), os.getloadavg()
    venv_dir, mlserver = (mlserver_env.ensure_venv(ort.__version__) if any(s in MLSERVERS for s in args.servers)
                          else (None, None))
    print(f"planned: {len(args.servers)} servers x {args.rounds} rounds, {args.seconds:g} s per cell, about "
          f"{planned_seconds(args) / 60:.1f} min", flush=True)
    with tempfile.TemporaryDirectory(prefix="dropnet-vs-mlserver-") as tmp:
        work = Path(tmp)
        setup = Setup(paper_package(work, work / "models" / MODEL / "1", name=MODEL), work,
                      ServerSettings(models_dir=work / "models").session_threads, venv_dir,
                      {"max_batch_size": args.mlserver_max_batch_size,
                       "max_batch_time": args.mlserver_max_batch_time_ms / 1e3})
        measured, lifecycle = run_rounds(args, setup, started)

    cells = summarise(measured)
    found = targets(cells, max(args.concurrency))
    print_table(cells)
    print(f"\ntargets (issue 9; medians over {args.rounds} rounds of this run):")
    for target in found:
        print("  " + target.line())
    atomic_write_json(args.out, {
        "command": shlex.join([".venv/bin/python", "benchmarks/server_vs_mlserver.py", *sys.argv[1:]]),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average": {"before": [round(v, 2) for v in load_before],
                                     "after": [round(v, 2) for v in os.getloadavg()]}},
        "versions": versions(mlserver),
        "network": PAPER_NET_DESCRIPTION,
        "request": (f"B=1 FP32 {[1, *MNIST_SPEC.shape]} (784 values, uniform 0..255 from numpy default_rng("
                    f"{INPUT_SEED})), output probabilities; deterministic, or "
                    f"MC dropout T={MC_SAMPLES} with seed = the request's sequence number in its cell"),
        "load_generator": (f"tritonclient.grpc.aio {importlib.metadata.version('tritonclient')}, closed loop, N "
                           f"coroutines on one channel, in the benchmark process, on the same {os.cpu_count()} cores"),
        "servers": {name: SERVERS[name] for name in args.servers},
        "onnxruntime_intra_op_threads": setup.intra_op_threads,
        "mlserver_batching": {**setup.mlserver_batch, **MLSERVER_BEST},
        "rounds": args.rounds,
        "seconds_per_cell": args.seconds,
        "warmup_seconds": WARMUP_S,
        "concurrency": args.concurrency,
        "mc_samples": MC_SAMPLES,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cells": cells,
        "targets": [asdict(t) for t in found],
        "per_round": [asdict(m) for m in measured],
        "starts": lifecycle,
    })
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
