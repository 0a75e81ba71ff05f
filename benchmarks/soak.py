"""Soak test of ``dropnet serve``: many concurrent clients for a while, every answer checked, memory watched.

    .venv/bin/python benchmarks/soak.py [--clients 64] [--seconds 60] [--warmup-seconds 10]
        [--mc-samples 50] [--mc-fraction 0.3] [--invalid-fraction 0.02] [--device cpu]
        [--intra-op-threads N] [--max-queue-delay-ms MS] [--inference-workers N]

Model: the paper's 784-1024-1024-1024-10 ReLU net (``benchmarks/_common.py``) with seeded random
weights, exported into a temporary models directory and served by one ``dropnet serve`` child
process on 127.0.0.1 (``dropnet.server.process.ServeProcess``, flags as in ``benchmarks/server.py``).

Load: ``--clients`` threads of this process in a closed loop for ``--seconds``, each with its own
``DropnetClient`` (dropnet.v1) and ``tritonclient.grpc`` client (KServe v2 / OIP). Each request
picks an API at random and one of a fixed pool of inputs (1, 2 or 4 rows); it is deterministic or,
with probability ``--mc-fraction``, MC dropout with T = ``--mc-samples`` and the input's own seed;
with probability ``--invalid-fraction`` it is a client mistake instead (an input of the wrong
shape), which must be refused with INVALID_ARGUMENT. Every answer is compared with the in-process
``Predictor`` on the same package (deterministic: its prediction; MC: its prediction for that
seed), within ``tests.server.helpers.assert_outputs_match``'s tolerance.

Reports served requests, status codes, unexpected errors (any code a request should not get) and
wrong answers, p50/p99/p999 latency of the requests started after the warm-up, and the server's
resident memory (``VmRSS`` from /proc, sampled every 0.2 s) at start, at its peak during the
warm-up, as the warm-up ended, at its peak after the warm-up, and at the end. Floors: 0 unexpected
errors, 0 wrong answers, RSS growth after the warm-up at most 10%: the peak after the warm-up over
the peak during it, i.e. how far the warm working set grew (RSS swings with the MC batches in
flight, so a single sample is no baseline). Writes
``benchmarks/results/soak.json``; exit status 1 when a floor is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # ahead of benchmarks/, whose server.py would shadow the server package

from benchmarks._common import PAPER_NET_DESCRIPTION, paper_package  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402
from benchmarks.server import serve_flags, server_flags  # noqa: E402
from dropnet.server.client import DropnetClient  # noqa: E402
from dropnet.server.predictor import Predictor  # noqa: E402
from dropnet.server.process import ServeProcess  # noqa: E402
from tests.server.helpers import assert_outputs_match  # noqa: E402

MODEL = "paper-mlp"
RESULTS = REPO / "benchmarks" / "results" / "soak.json"
APIS = ("dropnet.v1", "oip")
ROWS = (1, 2, 4)
"""Rows of the pooled inputs."""
POOL = 24
"""Inputs in the pool (each with its own MC seed)."""
RSS_INTERVAL_S = 0.2
MAX_RSS_GROWTH = 0.10
"""Floor: the server's RSS after the warm-up may grow by at most this fraction."""
INVALID = "invalid"
"""The kind (mode) of a deliberately invalid request."""


@dataclass(frozen=True)
class SoakSettings:
    """What the soak runs."""

    clients: int = 64
    seconds: float = 60.0
    warmup_seconds: float = 10.0
    """Counted and checked like the rest, but not in the latency percentiles; RSS growth is measured from its end."""
    mc_samples: int = 50
    mc_fraction: float = 0.3
    invalid_fraction: float = 0.02
    seed: int = 0


@dataclass(frozen=True)
class Case:
    """A pooled request and the answers the Predictor gives for it."""

    x: np.ndarray
    seed: int
    """The MC seed of this input."""
    expected: dict[str, dict[str, np.ndarray]]
    """Mode ("deterministic", "mc") → output name → the Predictor's array."""


@dataclass
class Outcome:
    """One request: what was asked and what came back."""

    api: str
    mode: str
    started: float
    latency_s: float
    code: str
    """"OK", a gRPC status code name, or the class of an exception raised outside gRPC."""
    correct: bool
    """OK with the Predictor's answer (valid requests) or refused with INVALID_ARGUMENT (invalid ones)."""


@dataclass
class Rss:
    """The server's resident memory in MB."""

    start: float
    after_warmup: float
    """The sample taken as the warm-up ended (a single moment: MC batches in flight or not)."""
    peak_in_warmup: float
    """The working set the warm-up reached: the baseline of the growth."""
    peak_after_warmup: float
    end: float
    growth_after_warmup: float
    """peak_after_warmup / peak_in_warmup - 1: how far the working set grew once warm."""


@dataclass
class SoakReport:
    """What a soak measured."""

    served: int
    """Requests answered OK."""
    requests: int
    codes: dict[str, int]
    unexpected_errors: int
    """Valid requests not answered OK, and invalid ones not refused with INVALID_ARGUMENT."""
    wrong_answers: int
    """OK answers that differ from the Predictor's."""
    by_kind: dict[str, dict[str, Any]]
    """"api/mode" → requests, served, codes, latency percentiles."""
    latency_ms: dict[str, float]
    """p50, p99, p999 of every request started after the warm-up."""
    rss_mb: Rss
    floors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def floors_met(self) -> bool:
        return all(floor["met"] for floor in self.floors)


# --- requests ---------------------------------------------------------------------------------


def make_cases(predictor: Predictor, settings: SoakSettings) -> list[Case]:
    """:data:`POOL` seeded inputs of 1, 2 or 4 rows in the model's value range, each with its MC seed and answers."""
    rng = np.random.default_rng(settings.seed)
    low, high = predictor.manifest.input.value_range
    cases = []
    for _ in range(POOL):
        rows = int(rng.choice(ROWS))
        x = rng.uniform(low, high, size=(rows, *predictor.input_shape)).astype(np.float32)
        seed = int(rng.integers(0, 2**63 - 1))
        expected = {
            "deterministic": dict(predictor.predict(x).outputs),
            "mc": dict(predictor.predict(x, mc_samples=settings.mc_samples, seed=seed).outputs),
        }
        cases.append(Case(x, seed, expected))
    return cases


def _invalid_input(case: Case) -> np.ndarray:
    """The case's input with one more value in its last dimension: the wrong shape for the model."""
    return np.concatenate([case.x, case.x[..., :1]], axis=-1)


class SoakClient:
    """One client thread's connections: a dropnet.v1 and a KServe v2 client to the same server."""

    def __init__(self, target: str, model: str, mc_samples: int) -> None:
        self.model = model
        self.mc_samples = mc_samples
        self.v1 = DropnetClient(target)
        self.oip = triton.InferenceServerClient(target)

    def close(self) -> None:
        self.v1.close()
        self.oip.close()

    def call(self, api: str, x: np.ndarray, mc_seed: int | None, names: list[str]) -> dict[str, np.ndarray]:
        """Outputs ``names`` of one request (deterministic, or MC with ``mc_seed``); gRPC errors propagate."""
        if api == "dropnet.v1":
            mc = {} if mc_seed is None else {"mc_samples": self.mc_samples, "seed": mc_seed}
            return self.v1.predict(self.model, x, **mc)
        tensor = triton.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        parameters = None if mc_seed is None else {"mc_samples": self.mc_samples, "seed": mc_seed}
        result = self.oip.infer(self.model, [tensor], parameters=parameters, client_timeout=30.0)
        return {name: result.as_numpy(name) for name in names}


def _matches(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> bool:
    try:
        assert_outputs_match({name: actual.get(name) for name in expected}, expected)
    except (AssertionError, AttributeError, TypeError):
        return False
    return True


def _code(exc: Exception) -> str:
    """The gRPC status code name of a failed call (either client), else the exception's class name."""
    if isinstance(exc, grpc.RpcError):
        return exc.code().name
    if isinstance(exc, InferenceServerException) and exc.status():
        return exc.status().removeprefix("StatusCode.")
    return type(exc).__name__


def one_request(client: SoakClient, case: Case, api: str, mode: str) -> Outcome:
    """Send one request of ``mode`` ("deterministic", "mc" or :data:`INVALID`) and judge its answer."""
    mc_seed = case.seed if mode == "mc" else None
    x = _invalid_input(case) if mode == INVALID else case.x
    expected = case.expected.get(mode, case.expected["deterministic"])
    started = time.perf_counter()
    try:
        answer = client.call(api, x, mc_seed, list(expected))
    except Exception as exc:  # noqa: BLE001 - every failure is counted by its code, none ends the soak
        code = _code(exc)
        return Outcome(api, mode, started, time.perf_counter() - started, code,
                       mode == INVALID and code == grpc.StatusCode.INVALID_ARGUMENT.name)
    latency = time.perf_counter() - started
    return Outcome(api, mode, started, latency, "OK", mode != INVALID and _matches(answer, expected))


def client_loop(client: SoakClient, cases: list[Case], settings: SoakSettings, index: int, end: float,
                out: list[Outcome]) -> None:
    """Closed loop of random requests until ``end`` (perf_counter time)."""
    rng = np.random.default_rng([settings.seed, index])
    while time.perf_counter() < end:
        draw = rng.random()
        mode = INVALID if draw < settings.invalid_fraction else (
            "mc" if draw < settings.invalid_fraction + settings.mc_fraction else "deterministic")
        out.append(one_request(client, cases[int(rng.integers(len(cases)))], APIS[int(rng.integers(2))], mode))


# --- memory -----------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (``VmRSS`` of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


class RssSampler:
    """Samples a process's RSS every :data:`RSS_INTERVAL_S` in a background thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(RSS_INTERVAL_S):
            self.samples.append((time.perf_counter(), rss_mb(self.pid)))


# --- the soak ---------------------------------------------------------------------------------


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50": float("nan"), "p99": float("nan"), "p999": float("nan")}
    p50, p99, p999 = np.percentile(np.array(latencies) * 1e3, [50, 99, 99.9])
    return {"p50": round(float(p50), 2), "p99": round(float(p99), 2), "p999": round(float(p999), 2)}


def summarise(outcomes: list[Outcome], measured_from: float, rss: Rss) -> SoakReport:
    """Counts, codes, percentiles and floors of a finished soak."""
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in sorted({f"{o.api}/{o.mode}" for o in outcomes}):
        mine = [o for o in outcomes if f"{o.api}/{o.mode}" == kind]
        by_kind[kind] = {
            "requests": len(mine),
            "ok": sum(o.code == "OK" for o in mine),
            "codes": dict(Counter(o.code for o in mine)),
            "latency_ms": _percentiles([o.latency_s for o in mine if o.started >= measured_from]),
        }
    unexpected = sum(not o.correct and (o.mode == INVALID or o.code != "OK") for o in outcomes)
    wrong = sum(o.mode != INVALID and o.code == "OK" and not o.correct for o in outcomes)
    report = SoakReport(
        served=sum(o.code == "OK" for o in outcomes), requests=len(outcomes),
        codes=dict(Counter(o.code for o in outcomes)), unexpected_errors=unexpected, wrong_answers=wrong,
        by_kind=by_kind, latency_ms=_percentiles([o.latency_s for o in outcomes if o.started >= measured_from]),
        rss_mb=rss,
    )
    report.floors = [
        {"name": "unexpected errors", "value": unexpected, "floor": "== 0", "met": unexpected == 0},
        {"name": "wrong answers", "value": wrong, "floor": "== 0", "met": wrong == 0},
        {"name": "RSS growth after warm-up", "value": f"{rss.growth_after_warmup:.1%}",
         "floor": f"<= {MAX_RSS_GROWTH:.0%}", "met": rss.growth_after_warmup <= MAX_RSS_GROWTH},
    ]
    return report


def run_soak(models_dir: Path, model: str, settings: SoakSettings, flags: list[str],
             predictor: Predictor) -> SoakReport:
    """Serve ``models_dir`` with ``dropnet serve`` (``flags`` added) and soak it; the server is stopped on return."""
    cases = make_cases(predictor, settings)
    with ServeProcess(serve_flags(models_dir, flags), cwd=REPO) as server, ExitStack() as stack:
        target = server.wait_serving()
        clients = [SoakClient(target, model, settings.mc_samples) for _ in range(settings.clients)]
        for client in clients:
            stack.callback(client.close)
            client.v1.wait_ready()
        pid = server.process.pid
        start_rss = rss_mb(pid)
        outcomes: list[list[Outcome]] = [[] for _ in clients]
        begin = time.perf_counter()
        measured_from, end = begin + settings.warmup_seconds, begin + settings.seconds
        threads = [threading.Thread(target=client_loop, args=(client, cases, settings, i, end, outcomes[i]))
                   for i, client in enumerate(clients)]
        with RssSampler(pid) as sampler:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        end_rss = rss_mb(pid)
    after = [mb for at, mb in sampler.samples if at >= measured_from] + [end_rss]
    warm = next((mb for at, mb in sampler.samples if at >= measured_from), end_rss)
    warmup_peak = max([mb for at, mb in sampler.samples if at < measured_from] + [warm])
    rss = Rss(start=round(start_rss, 1), after_warmup=round(warm, 1), peak_in_warmup=round(warmup_peak, 1),
              peak_after_warmup=round(max(after), 1), end=round(end_rss, 1),
              growth_after_warmup=round(max(after) / warmup_peak - 1, 4))
    return summarise([o for per_client in outcomes for o in per_client], measured_from, rss)


def print_report(report: SoakReport, settings: SoakSettings) -> None:
    """Counts, codes, latencies, memory and the floors, one table each."""
    print(f"\n{settings.clients} clients, {settings.seconds:g} s ({settings.warmup_seconds:g} s warm-up): "
          f"{report.requests} requests, {report.served} served, codes {report.codes}")
    print(f"\n{'kind':<26} {'requests':>8} {'ok':>7} {'p50 ms':>8} {'p99 ms':>8} {'p999 ms':>8}  codes")
    for kind, row in {**report.by_kind, "all": {"requests": report.requests, "ok": report.served,
                                                 "latency_ms": report.latency_ms, "codes": report.codes}}.items():
        lat = row["latency_ms"]
        print(f"{kind:<26} {row['requests']:>8} {row['ok']:>7} {lat['p50']:>8} {lat['p99']:>8} {lat['p999']:>8}  "
              f"{row['codes']}")
    rss = report.rss_mb
    print(f"\nserver RSS MB: start {rss.start}, peak in warm-up {rss.peak_in_warmup}, at its end {rss.after_warmup}, "
          f"peak after warm-up {rss.peak_after_warmup}, end {rss.end}")
    print(f"\n{'floor':<26} {'value':>8}  {'bound':>8}  result")
    for floor in report.floors:
        print(f"{floor['name']:<26} {floor['value']!s:>8}  {floor['floor']:>8}  {'met' if floor['met'] else 'MISSED'}")


def machine() -> dict[str, Any]:
    """The machine the soak ran on."""
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1),
            "versions": {"onnxruntime": ort.__version__, "grpcio": grpc.__version__,
                         "python": platform.python_version()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = SoakSettings()
    parser.add_argument("--clients", type=int, default=defaults.clients, help="concurrent clients (default: 64)")
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="length of the soak (default: 60)")
    parser.add_argument("--warmup-seconds", type=float, default=defaults.warmup_seconds,
                        help="first part of the soak left out of the latencies and the RSS baseline (default: 10)")
    parser.add_argument("--mc-samples", type=int, default=defaults.mc_samples, help="T of MC requests (default: 50)")
    parser.add_argument("--mc-fraction", type=float, default=defaults.mc_fraction,
                        help="share of MC dropout requests (default: 0.3)")
    parser.add_argument("--invalid-fraction", type=float, default=defaults.invalid_fraction,
                        help="share of deliberately invalid requests, which must get INVALID_ARGUMENT (default: 0.02)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of inputs and request mix (default: 0)")
    parser.add_argument("--device", default="cpu", help="--device of the server and the Predictor (default: cpu)")
    parser.add_argument("--intra-op-threads", type=int, help="for the server (default: the server's)")
    parser.add_argument("--max-queue-delay-ms", type=float, help="for the server (default: the server's)")
    parser.add_argument("--inference-workers", type=int, help="for the server (default: the server's)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default: {RESULTS})")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so the server is stopped
    settings = SoakSettings(clients=args.clients, seconds=args.seconds, warmup_seconds=args.warmup_seconds,
                            mc_samples=args.mc_samples, mc_fraction=args.mc_fraction,
                            invalid_fraction=args.invalid_fraction, seed=args.seed)
    flags = server_flags(args)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        package = paper_package(Path(tmp), Path(tmp) / "models" / MODEL / "1", name=MODEL)
        predictor = Predictor.load(package, device=args.device)
        report = run_soak(package.parents[1], MODEL, settings, flags, predictor)
    print_report(report, settings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": shlex.join([".venv/bin/python", "benchmarks/soak.py", *sys.argv[1:]]),
        "network": PAPER_NET_DESCRIPTION,
        "settings": asdict(settings),
        "server_flags": flags,
        "requests": (f"each client: random API (dropnet.v1 / OIP), one of {POOL} seeded inputs of {ROWS} rows; MC "
                     "with the input's seed; invalid = input of the wrong shape (INVALID_ARGUMENT expected)"),
        "machine": machine(),
        "load_average": {"before": [round(v, 2) for v in load_before],
                         "after": [round(v, 2) for v in os.getloadavg()]},
        "results": {**asdict(report), "floors_met": report.floors_met},
    }, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0 if report.floors_met else 1


if __name__ == "__main__":
    sys.exit(main())
