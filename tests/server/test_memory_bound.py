"""A request at the cost limit, run with a small MC chunk budget, stays within a memory bound derived
from the settings, and gives the memory back afterwards. Measured in a child process from /proc
(VmHWM, the peak resident set, reset just before the request; VmRSS), the request running in a
worker thread as the server runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dropnet.server.predictor import HOST_BYTES_PER_VALUE, Predictor

MiB = 1024**2
MAX_REQUEST_COST_BYTES = 256 * MiB
MC_CHUNK_BYTES = 4 * MiB
MC_SAMPLES = 1000
SLACK = 8 * MiB
"""What the bound does not model: allocator and interpreter granularity (glibc grows its heaps in
steps, a thread's first allocations create an arena), onnxruntime's per-run bookkeeping, and the
tensors that do not grow with rows × samples (the layers before the first dropout site, [B, n],
and the noise counters, [T, 1, W]: well under 1 MiB here)."""

CHILD = """
import gc, json, sys, threading
from dropnet.server.predictor import Predictor
from dropnet.server.request import check_request
from tests.server.helpers import digits_rows

def status(key):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(key + ":"))

package, chunk_bytes, limit, samples = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
predictor = Predictor.load(package, device="cpu", intra_op_threads=1, spin_wait=False, mc_chunk_bytes=chunk_bytes)
rows = limit // (samples * predictor.sample_bytes)
outputs = ("probabilities", "std", "predictive_entropy", "mutual_information", "samples")
request = check_request(predictor, digits_rows(rows, 0), "mc", samples, 7, outputs, max_cost_bytes=limit)
report = {"rows": rows}

def work():
    predictor.run(check_request(predictor, digits_rows(1, 1), "mc", samples, 1, outputs))  # warm-up
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # VmHWM := VmRSS
    before = status("VmRSS")
    answer = predictor.run(request)
    report.update(growth=status("VmHWM") - before, response=sum(value.nbytes for value in answer.values()))
    del answer
    gc.collect()
    report["retained"] = status("VmRSS") - before

worker = threading.Thread(target=work)
worker.start()
worker.join()
print(json.dumps(report))
"""


def _measure(package: Path, chunk_bytes: int) -> dict[str, int]:
    """Peak RSS growth, response bytes and RSS kept after the request at the cost limit, in a fresh process."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(package), str(chunk_bytes), str(MAX_REQUEST_COST_BYTES), str(MC_SAMPLES)],
        cwd=root, capture_output=True, text=True, timeout=120, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_request_at_the_cost_limit_stays_within_the_chunk_budget(tiny_package: Path) -> None:
    predictor = Predictor.load(tiny_package, device="cpu")
    classes = len(predictor.manifest.classes)
    # A run's activations: rows × chunk × sample_bytes <= MC_CHUNK_BYTES, sample_bytes counting every
    # T·B-sized tensor of the graph as if all were alive at once (onnxruntime frees or reuses them as
    # the run goes): factor 1. The host summaries hold HOST_BYTES_PER_VALUE per value of a chunk's
    # samples, C values per row and sample: a factor 1 + HOST_BYTES_PER_VALUE·C / sample_bytes.
    factor = 1 + HOST_BYTES_PER_VALUE * classes / predictor.sample_bytes
    chunked = _measure(tiny_package, MC_CHUNK_BYTES)
    assert chunked["rows"] == MAX_REQUEST_COST_BYTES // (MC_SAMPLES * predictor.sample_bytes) > 1
    bound = MC_CHUNK_BYTES * factor + chunked["response"] + SLACK
    assert chunked["growth"] <= bound, chunked
    # What stays: glibc keeps freed memory at the top of a heap up to its trim threshold, which it
    # raises to twice the largest block freed; onnxruntime's largest block in a run holds at most
    # the run's activations, <= MC_CHUNK_BYTES.
    assert chunked["retained"] <= 2 * MC_CHUNK_BYTES + SLACK, chunked
    # The bound binds: the same request in one run (budget = the cost limit) goes far over it.
    whole = _measure(tiny_package, MAX_REQUEST_COST_BYTES)
    assert whole["growth"] > bound, (whole, bound)
