"""Cost of mc.onnx's in-graph noise on the paper's 784-1024-1024-1024-10 ReLU net.

    .venv/bin/python benchmarks/mc_noise_cost.py [--threads 2] [--reps 40]

Times mc.onnx at T=100, B=1 against deterministic.onnx on a batch of 100 rows (the same GEMM
work), alternating the two call by call and comparing medians of wall and process CPU time
(the CPU time is the better guide on a loaded machine); then profiles mc.onnx with
onnxruntime's profiler and splits its kernel time into layers (GEMMs), hash words, turning
words into noise, applying the noise, and the rest (row keys, summaries). Random seeded weights, input retain 0.8, hidden 0.5, paper flavour.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from dropnet.exporter.graphs import build_deterministic, build_mc
from dropnet.trainer.config import ModelConfig
from dropnet.trainer.models import InputSpec, build_model

log = logging.getLogger("mc_noise_cost")
SPEC = InputSpec(shape=(1, 28, 28), num_classes=10, mean=33.32, std=78.57, value_range=(0.0, 255.0),
                 class_labels=tuple(str(d) for d in range(10)))
NET = ModelConfig(hidden=[1024, 1024, 1024], retain_input=0.8, retain_hidden=0.5, flavour="paper")
SAMPLES = 100
CATEGORIES = {".hash": "hash words", ".draw": "noise from words", ".apply": "noise applied", "layer": "layers (GEMM)"}
"""Node-name scopes of exporter.mc (node names are "scope/Op_n") and what they do."""


def session(model: bytes, threads: int, profile_dir: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_dir / "mc")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def median_seconds(calls: dict[str, Callable[[], object]], reps: int) -> dict[str, tuple[float, float]]:
    """Median (wall, process CPU) seconds per call, the calls alternating; CPU time is less disturbed by load."""
    times: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for _ in range(3):
        for call in calls.values():
            call()
    for rep in range(reps):
        names = list(calls)[rep % 2 :] + list(calls)[: rep % 2]
        for name in names:
            wall, cpu = time.perf_counter(), time.process_time()
            calls[name]()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: tuple(statistics.median(column) for column in zip(*values)) for name, values in times.items()}


def kernel_split(mc: bytes, feeds: dict[str, np.ndarray], threads: int, reps: int) -> dict[str, float]:
    """Mean milliseconds per run spent in each node-name scope category (onnxruntime profiler)."""
    with tempfile.TemporaryDirectory() as tmp:
        profiled = session(mc, threads, Path(tmp))
        for _ in range(reps):
            profiled.run(None, feeds)
        events = json.loads(Path(profiled.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        scope = event["name"].split("/")[0]
        category = next((label for key, label in CATEGORIES.items() if key in scope), "other")
        totals[category] += event["dur"] / 1000 / reps
    return dict(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=40)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    model = build_model(NET, SPEC).eval()
    det = build_deterministic(model, SPEC, {}).SerializeToString()
    mc = build_mc(model, SPEC, {}).SerializeToString()
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, (SAMPLES, *SPEC.shape)).astype(np.float32)
    mc_feeds = {"x": batch[:1], "num_samples": np.array(SAMPLES, np.int64), "seed": np.array([7], np.int64)}
    det_session, mc_session = session(det, args.threads), session(mc, args.threads)
    medians = median_seconds(
        {"deterministic B=100": lambda: det_session.run(None, {"x": batch}),
         f"mc T={SAMPLES} B=1": lambda: mc_session.run(None, mc_feeds)},
        args.reps,
    )
    for name, (wall, cpu) in medians.items():
        log.info("%-22s %7.2f ms wall  %7.2f ms cpu", name, wall * 1000, cpu * 1000)
    (det_wall, det_cpu), (mc_wall, mc_cpu) = medians.values()
    log.info("ratio mc/deterministic  %5.2f wall  %5.2f cpu  (target <= 1.3)", mc_wall / det_wall, mc_cpu / det_cpu)
    split = kernel_split(mc, mc_feeds, args.threads, max(args.reps // 4, 5))
    total = sum(split.values())
    for category, ms in sorted(split.items(), key=lambda kv: -kv[1]):
        log.info("mc kernel time, %-16s %6.2f ms  %5.1f%%", category, ms, 100 * ms / total)


if __name__ == "__main__":
    main()
