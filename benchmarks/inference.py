"""Inference speed of the exported graphs against torch, on the paper's 784-1024-1024-1024-10 ReLU net.

    .venv/bin/python benchmarks/inference.py [--threads 2] [--reps 1.0]

Random weights (seeded), input retain 0.8, hidden 0.5, paper flavour, MNIST-shaped 1×28×28 inputs
in 0..255. Every comparison runs its candidates in one process, alternating them repetition by
repetition (the order rotates), with the same intra-op thread count for torch and onnxruntime;
each ratio is a ratio of medians. Prints a table with the target of each ratio and writes
``benchmarks/results/inference.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.factories builds the run directory

from benchmarks._common import MNIST_SPEC, paper_run_dir  # noqa: E402
from dropnet.exporter.package import export_package  # noqa: E402
from dropnet.trainer.rundir import load_run  # noqa: E402

T = 100
RESULTS = REPO / "benchmarks" / "results" / "inference.json"


@dataclass
class Ratio:
    name: str
    value: float
    target: str
    passed: bool


def alternate(candidates: dict[str, Callable[[], object]], reps: int, inner: int = 1) -> dict[str, float]:
    """Median seconds per call of each candidate, timed in alternation (``inner`` calls per timing)."""
    for fn in candidates.values():  # warm-up
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for rep in range(reps):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            fn = candidates[name]
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(values) for name, values in times.items()}


def session(model: bytes | str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def reference_onnx(model: torch.nn.Sequential) -> bytes:
    """The eval-mode network exported by torch.onnx (TorchScript exporter): dropout is a Mul by p."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(1, *MNIST_SPEC.shape),), buffer, dynamo=False, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for torch and onnxruntime")
    parser.add_argument("--reps", type=float, default=1.0, help="scale the number of repetitions")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    def scale(reps: int) -> int:
        return max(5, int(reps * args.reps))

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = paper_run_dir(Path(tmp) / "paper-mlp")
        package = export_package(run_dir, Path(tmp) / "package")
        _, _, model = load_run(run_dir)
        det = session(str(package / "deterministic.onnx"), args.threads)
        mc = session(str(package / "mc.onnx"), args.threads)
        ref = session(reference_onnx(model), args.threads)

    rng = np.random.default_rng(0)
    x1, x100, x256 = (rng.uniform(0, 255, size=(b, *MNIST_SPEC.shape)).astype(np.float32) for b in (1, T, 256))
    t1, t256 = torch.from_numpy(x1), torch.from_numpy(x256)
    mc_feeds = {"x": x1, "num_samples": np.array(T, np.int64), "seed": np.array([7], np.int64)}

    def torch_eval(x: torch.Tensor) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode():
                return model(x)
        return call

    def torch_mc_loop() -> object:
        with torch.inference_mode():
            return [model(t1) for _ in range(T)]

    model.eval()
    latency = alternate({"torch": torch_eval(t1), "det": lambda: det.run(["logits"], {"x": x1}),
                         "ref": lambda: ref.run(["logits"], {"x": x1})}, scale(300), inner=10)
    batch = alternate({"torch": torch_eval(t256), "det": lambda: det.run(["logits"], {"x": x256}),
                       "ref": lambda: ref.run(["logits"], {"x": x256})}, scale(40))
    model.train()  # dropout masks drawn at every forward
    sampling = alternate({"torch_loop": torch_mc_loop, "mc": lambda: mc.run(None, mc_feeds),
                          "det100": lambda: det.run(["logits"], {"x": x100})}, scale(40))

    ratios = [
        _ratio("det.onnx / torch eval, B=1 latency", latency["det"] / latency["torch"], "<= 0.5", 0.5, below=True),
        _ratio("det.onnx vs torch eval, B=256 throughput", batch["torch"] / batch["det"], ">= 1.0", 1.0, below=False),
        _ratio("det.onnx / torch.onnx.export, B=1 latency", latency["det"] / latency["ref"], "<= 1.03", 1.03,
               below=True),
        _ratio("det.onnx / torch.onnx.export, B=256 time", batch["det"] / batch["ref"], "<= 1.03", 1.03, below=True),
        _ratio(f"torch train-mode loop x{T} / mc.onnx T={T} (B=1)", sampling["torch_loop"] / sampling["mc"], ">= 5",
               5.0, below=False),
        _ratio(f"mc.onnx T={T},B=1 / det.onnx B={T}", sampling["mc"] / sampling["det100"], "<= 1.3", 1.3, below=True),
    ]
    timings_ms = {f"{group}.{name}": round(seconds * 1e3, 4) for group, timings in
                  (("b1", latency), ("b256", batch), ("mc", sampling)) for name, seconds in timings.items()}
    _print_table(ratios, timings_ms, args.threads)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "network": "784-1024-1024-1024-10 ReLU, retain 0.8/0.5, paper flavour, random weights",
        "threads": args.threads,
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version()},
        "machine": platform.machine(),
        "median_ms": timings_ms,
        "ratios": [r.__dict__ for r in ratios],
    }, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(REPO)}")
    return 0 if all(r.passed for r in ratios) else 1


def _ratio(name: str, value: float, target: str, bound: float, below: bool) -> Ratio:
    return Ratio(name, round(value, 4), target, value <= bound if below else value >= bound)


def _print_table(ratios: list[Ratio], timings_ms: dict[str, float], threads: int) -> None:
    print(f"median ms per call ({threads} threads): " + ", ".join(f"{k}={v:.3f}" for k, v in timings_ms.items()))
    width = max(len(r.name) for r in ratios)
    print(f"\n{'ratio'.ljust(width)}  {'value':>8}  {'target':>8}  result")
    for r in ratios:
        print(f"{r.name.ljust(width)}  {r.value:8.3f}  {r.target:>8}  {'pass' if r.passed else 'FAIL'}")


if __name__ == "__main__":
    sys.exit(main())
