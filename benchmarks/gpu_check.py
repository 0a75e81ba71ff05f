"""The GPU check: training, both graphs on onnxruntime's CUDA provider, and serving, in one run of a few minutes.

    .venv/bin/python benchmarks/gpu_check.py                  # on a machine with an NVIDIA GPU
    .venv/bin/python benchmarks/gpu_check.py --device cpu --epochs 1 --train-examples 2000   # the same path on the CPU

1. **Training**: the Table-2 3×1024 ReLU + max-norm preset on MNIST for ``--epochs`` epochs, in fp32
   and with bf16 autocast: samples/s and test error of each.
2. **Graphs**: the trained run exported; deterministic.onnx and mc.onnx run on the device's execution
   provider with onnxruntime's profiler on, which names the provider of every node it ran. Nodes that
   fell back to the CPU are listed by op type (the counter hash of the MC masks uses uint32 bitwise
   ops), with the time of an MC run (B = 128, T = 50) on the device next to the same run on the CPU.
3. **Serving**: ``benchmarks/server.py --device DEVICE`` (dropnet serve with and without batching,
   c = 1 and 32), its JSON summarised.

Without CUDA (and without ``--device cpu``) it says so, writes that to the JSON and exits 0. Results go
to ``benchmarks/results/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_model  # noqa: E402

PRESET = "table2_relu_3x1024_maxnorm"
MC_ROWS, MC_SAMPLES, TIMED_RUNS = 128, 50, 10
PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
log = logging.getLogger("gpu_check")


def train_both(run_root: Path, device: str, epochs: int, data_dir: str, train_examples: int | None) -> dict[str, Any]:
    """Train the preset in fp32 and with bf16 autocast; samples/s and test error of each, and the fp32 run."""
    from dataclasses import replace

    from dropnet.trainer.config import TrainConfig, load_training_preset
    from dropnet.trainer.data import load_dataset
    from dropnet.trainer.data.dataset import Split
    from dropnet.trainer.loop import train

    base = load_training_preset(PRESET).to_dict()
    results: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        config = TrainConfig.from_dict({
            **base, "device": device, "bf16": precision == "bf16",
            "optim": {**base["optim"], "epochs": epochs},
            "data": {**base["data"], "data_dir": data_dir},
        })
        dataset = load_dataset(config.data, config.seed)
        if train_examples is not None:
            dataset = replace(dataset, train=Split(dataset.train.x[:train_examples], dataset.train.y[:train_examples]))
        run_dir = run_root / precision
        final = train(config, run_dir, dataset=dataset)
        examples = final["epochs"] * len(dataset.train)
        results[precision] = {
            "samples_per_second": round(examples / final["seconds"], 1),
            "test_error": final["test_error"], "epochs": final["epochs"], "train_examples": len(dataset.train),
            "run_dir": str(run_dir),
        }
        log.info("%s: %.0f samples/s, test error %.2f%%", precision, examples / final["seconds"],
                 100 * final["test_error"])
    return results


def profile_nodes(model_path: Path, provider: str, feeds: dict[str, np.ndarray], out_dir: Path) -> dict[str, Any]:
    """Run ``model_path`` once on ``provider`` with the profiler on: nodes per provider, CPU ops by type."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # not the first_sample initializer warning
    options.enable_profiling = True
    options.profile_file_prefix = str(out_dir / model_path.stem)
    session = ort.InferenceSession(str(model_path), options, providers=_with_cpu(provider))
    session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    nodes = {(e["name"], e["args"].get("provider")): e["args"].get("op_name") for e in events
             if e.get("cat") == "Node" and "provider" in e.get("args", {})}
    per_provider = Counter(node_provider for _, node_provider in nodes)
    on_cpu = Counter(op for (_, node_provider), op in nodes.items() if node_provider == "CPUExecutionProvider")
    cpu_us = sum(e["dur"] for e in events if e.get("cat") == "Node"
                 and e.get("args", {}).get("provider") == "CPUExecutionProvider")
    return {"providers": session.get_providers(), "nodes_per_provider": dict(per_provider),
            "cpu_nodes_by_op": dict(on_cpu), "cpu_nodes_ms": round(cpu_us / 1000, 3)}


def _with_cpu(provider: str) -> list[str]:
    """``provider`` with the CPU provider as onnxruntime's fallback for nodes it cannot run."""
    return list(dict.fromkeys((provider, "CPUExecutionProvider")))


def time_runs(model_path: Path, provider: str, feeds: dict[str, np.ndarray]) -> float:
    """Median wall milliseconds of :data:`TIMED_RUNS` runs after one warm-up."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=_with_cpu(provider))
    session.run(None, feeds)
    times = []
    for _ in range(TIMED_RUNS):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append(1000 * (time.perf_counter() - started))
    return round(statistics.median(times), 3)


def check_graphs(run_dir: Path, device: str, work: Path) -> dict[str, Any]:
    """Export the run; profile both graphs on the device's provider and time MC there and on the CPU."""
    from dropnet.core.manifest import DETERMINISTIC_FILE, MC_FILE
    from dropnet.exporter.package import export_package

    package = export_package(run_dir, work / "package", name="gpu-check")
    manifest = json.loads((package / "manifest.json").read_text())
    rng = np.random.default_rng(0)
    low, high = manifest["input"]["value_range"]
    x = rng.uniform(low, high, (MC_ROWS, *manifest["input"]["shape"])).astype(np.float32)
    mc_feeds = {"x": x, "num_samples": np.array(MC_SAMPLES, np.int64), "seed": np.array([0], np.int64)}
    provider = PROVIDERS[device]
    report: dict[str, Any] = {
        "deterministic": profile_nodes(package / DETERMINISTIC_FILE, provider, {"x": x}, work),
        "mc": profile_nodes(package / MC_FILE, provider, mc_feeds, work),
    }
    report["mc_ms"] = {name: time_runs(package / MC_FILE, PROVIDERS[name], mc_feeds)
                       for name in dict.fromkeys((device, "cpu"))}
    report["mc_shape"] = {"rows": MC_ROWS, "samples": MC_SAMPLES}
    return report


def serve(device: str, seconds: float, work: Path) -> dict[str, Any]:
    """``benchmarks/server.py`` on the device at c = 1 and 32; its JSON's cells."""
    out = work / "server.json"
    command = [sys.executable, str(REPO / "benchmarks" / "server.py"), "--device", device, "--seconds", str(seconds),
               "--rounds", "1", "--concurrency", "1,32", "--out", str(out)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode not in (0, 1):  # 1: a comparison missed its floor, still measured
        return {"command": command, "error": completed.stderr[-2000:]}
    return {"command": command, "result": json.loads(out.read_text())}


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-examples", type=int, help="train on the first N training examples only")
    parser.add_argument("--serve-seconds", type=float, default=8.0, help="seconds per serving cell (0: skip)")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_check.json")
    args = parser.parse_args()

    import torch

    result: dict[str, Any] = {"command": sys.argv, "device": args.device, "cpu": cpu_model(),
                              "cores": os.cpu_count(), "torch": torch.__version__}
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: nothing to check (the GPU paths have not run); exit 0")
        result["cuda"] = False
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    if args.device == "cuda":
        result["gpu"] = torch.cuda.get_device_name(0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dropnet-gpu-check-") as tmp:
        work = Path(tmp)
        result["training"] = train_both(work / "runs", args.device, args.epochs, args.data_dir, args.train_examples)
        result["graphs"] = check_graphs(Path(result["training"]["fp32"]["run_dir"]), args.device, work)
        if args.serve_seconds > 0:
            result["serving"] = serve(args.device, args.serve_seconds, work)
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(summary(result))
    print(f"wrote {args.out}")
    return 0


def summary(result: dict[str, Any]) -> str:
    """The figures a reader needs, one per line."""
    lines = [f"device {result['device']} ({result.get('gpu', result['cpu'])}), {result['seconds']} s"]
    for precision, row in result["training"].items():
        lines.append(f"train {precision}: {row['samples_per_second']:.0f} samples/s, test error "
                     f"{row['test_error']:.2%} after {row['epochs']} epochs")
    graphs = result["graphs"]
    for graph in ("deterministic", "mc"):
        lines.append(f"{graph}.onnx nodes per provider {graphs[graph]['nodes_per_provider']}; on the CPU "
                     f"({graphs[graph]['cpu_nodes_ms']} ms of one profiled run): {graphs[graph]['cpu_nodes_by_op'] or 'none'}")
    lines.append(f"MC run B={MC_ROWS} T={MC_SAMPLES}: " + ", ".join(f"{k} {v} ms" for k, v in graphs["mc_ms"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
