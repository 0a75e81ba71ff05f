"""Training throughput: dropnet's trainer vs an idiomatic PyTorch loop, side by side in one run.

Network: the paper's 784-1024-1024-1024-10 ReLU MLP, input retain 0.8, hidden retain 0.5,
max-norm c = 3.5 on every hidden layer, SGD momentum 0.95, batch 100, on real MNIST examples.

* dropnet: ``dropnet.trainer.loop.train_epoch`` on a network from ``dropnet.trainer.models.build_model``
  (paper-flavour masks from ``rand_like(x) < p`` with no rescale, in-place max-norm).
* idiomatic: ``nn.Dropout`` (inverted) layers and ``torch.renorm`` on every hidden weight after
  each step — what a PyTorch user writes by hand.

The two alternate, ``--repeats`` rounds of one pass each over the same ``--examples`` examples;
the median samples/s of each, the median of the rounds' ratios and their range are printed and
written as JSON. Achieved GFLOP/s (6 × multiply-adds per example: forward, input-gradient and
weight-gradient GEMMs) is set against a GEMM peak measured in every round (the best of a few
1024³ products right after the two passes), median over rounds. One more pass of each loop runs under torch's profiler
to split its time into forward (and the rest: batching, loss), backward, optimiser step (with
zero_grad), max-norm and mask sampling (``rand_like`` for dropnet; ``native_dropout``, which also
applies the mask, for nn.Dropout), as fractions and as milliseconds per step (the fraction times
the loop's median step time), so a reader sees where the difference comes from on their machine.

    python benchmarks/train_throughput.py [--threads 2] [--repeats 7] [--examples 6000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dropnet.trainer.config import DataConfig, ModelConfig
from dropnet.trainer.data import load_dataset
from dropnet.trainer.loop import sgd, train_epoch
from dropnet.trainer.maxnorm import MaxNorm
from dropnet.trainer.models import build_model, weight_layers

HIDDEN = [1024, 1024, 1024]
RETAIN_INPUT, RETAIN_HIDDEN, MAX_NORM, LR, MOMENTUM, BATCH = 0.8, 0.5, 3.5, 0.05, 0.95, 100
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for benchmarks.machine
from benchmarks.machine import cpu_model  # noqa: E402
PHASES = ("forward", "backward", "optimiser step", "max-norm", "mask sampling")
MAX_NORM_LABEL = "benchmark.max_norm"
SAMPLING_OPS = {"aten::rand_like", "aten::rand", "aten::uniform_", "aten::bernoulli_", "aten::native_dropout"}


def idiomatic_network(features: int, classes: int) -> nn.Sequential:
    """The same MLP written with nn.Dropout (PyTorch's inverted dropout, p = drop probability)."""
    layers: list[nn.Module] = [nn.Flatten(), nn.Dropout(1 - RETAIN_INPUT)]
    for width in HIDDEN:
        layers += [nn.Linear(features, width), nn.ReLU(), nn.Dropout(1 - RETAIN_HIDDEN)]
        features = width
    layers.append(nn.Linear(features, classes))
    return nn.Sequential(*layers)


def idiomatic_epoch(model: nn.Sequential, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """One pass: forward, backward, step, then torch.renorm of every hidden layer's rows."""
    model.train()
    hidden = [m for m in model if isinstance(m, nn.Linear)][:-1]
    order = torch.randperm(len(y))
    for start in range(0, len(y), BATCH):
        index = order[start : start + BATCH]
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad(), torch.profiler.record_function(MAX_NORM_LABEL):
            for layer in hidden:
                layer.weight.copy_(torch.renorm(layer.weight, 2, 0, MAX_NORM))


def phase_of(event: torch.autograd.profiler_util.FunctionEvent) -> str:
    """The phase of :data:`PHASES` an op event belongs to, from the names of the ranges around it."""
    names = []
    while event is not None:
        names.append(event.name)
        event = event.cpu_parent
    if any(name.startswith("autograd::engine::evaluate_function") for name in names):
        return "backward"
    if any(name.startswith(("Optimizer.step", "Optimizer.zero_grad")) for name in names):
        return "optimiser step"
    if MAX_NORM_LABEL in names:
        return "max-norm"
    if SAMPLING_OPS.intersection(names):
        return "mask sampling"
    return "forward"


def time_split(run: Callable[[], None]) -> dict[str, float]:
    """Fractions of one profiled pass's op time (self CPU time, summed per phase of :data:`PHASES`)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        run()
    totals: Counter[str] = Counter()
    for event in profile.events():
        totals[phase_of(event)] += event.self_cpu_time_total
    total = sum(totals.values())
    return {phase: round(totals[phase] / total, 4) for phase in PHASES}


def gemm_peak_gflops(size: int = 1024, repeats: int = 5) -> float:
    """Best float32 GEMM rate of this machine right now (size³ multiply-adds per product)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def flops_per_example(features: int, classes: int) -> int:
    """Training FLOPs per example: 6 × multiply-adds of the Linear layers."""
    widths = [features, *HIDDEN, classes]
    return 6 * sum(a * b for a, b in zip(widths, widths[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=7, help="timed passes of each loop")
    parser.add_argument("--examples", type=int, default=6000, help="training examples per timed pass")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train_throughput.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    data = load_dataset(DataConfig(name="mnist", data_dir=args.data_dir), seed=0)
    x = torch.from_numpy(data.train.x[: args.examples].copy())
    y = torch.from_numpy(data.train.y[: args.examples].copy())
    features, classes = x[0].numel(), data.spec.num_classes

    config = ModelConfig(hidden=HIDDEN, retain_input=RETAIN_INPUT, retain_hidden=RETAIN_HIDDEN, max_norm=MAX_NORM)
    ours = build_model(config, data.spec)
    ours_opt = sgd(ours, LR, MOMENTUM)
    ours_max_norm = MaxNorm(weight_layers(ours), config.resolved_max_norm())
    shuffle = torch.Generator().manual_seed(0)
    theirs = idiomatic_network(features, classes)
    theirs_opt = torch.optim.SGD(theirs.parameters(), lr=LR, momentum=MOMENTUM)

    def labelled_max_norm() -> None:
        with torch.profiler.record_function(MAX_NORM_LABEL):
            ours_max_norm()

    def run_ours() -> None:
        train_epoch(ours, ours_opt, labelled_max_norm, x, y, BATCH, shuffle)

    def run_theirs() -> None:
        idiomatic_epoch(theirs, theirs_opt, x, y)

    run_ours(), run_theirs()  # warm-up
    times: dict[str, list[float]] = {"dropnet": [], "idiomatic": []}
    peaks: list[float] = []
    for _ in range(args.repeats):
        for name, run in (("dropnet", run_ours), ("idiomatic", run_theirs)):
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
        peaks.append(gemm_peak_gflops())
    peak = statistics.median(peaks)
    split = {"dropnet": time_split(run_ours), "idiomatic": time_split(run_theirs)}

    rate = {name: args.examples / statistics.median(t) for name, t in times.items()}
    ratios = [theirs_s / ours_s for ours_s, theirs_s in zip(times["dropnet"], times["idiomatic"])]
    steps = args.examples / BATCH
    step_ms = {name: statistics.median(t) / steps * 1000 for name, t in times.items()}
    flops = flops_per_example(features, classes)
    result = {
        "network": f"{features}-{'-'.join(map(str, HIDDEN))}-{classes} ReLU, retain {RETAIN_INPUT}/{RETAIN_HIDDEN}, "
        f"max-norm {MAX_NORM}, batch {BATCH}",
        "threads": args.threads,
        "repeats": args.repeats,
        "examples_per_pass": args.examples,
        "samples_per_s": rate,
        "ratio_dropnet_over_idiomatic": rate["dropnet"] / rate["idiomatic"],
        "round_ratios": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
        "target_ratio": 1.3,
        "target_fraction_of_peak": 0.7,
        "gflops_achieved": {name: r * flops / 1e9 for name, r in rate.items()},
        "gemm_peak_gflops": peak,
        "gemm_peak_gflops_range": [min(peaks), max(peaks)],
        "fraction_of_peak": {name: r * flops / 1e9 / peak for name, r in rate.items()},
        "time_split": split,
        "step_ms": step_ms,
        "phase_ms_per_step": {
            name: {phase: round(fraction * step_ms[name], 3) for phase, fraction in fractions.items()}
            for name, fractions in split.items()
        },
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "command": "python " + " ".join(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"samples/s  dropnet {rate['dropnet']:.0f}   idiomatic {rate['idiomatic']:.0f}")
    print(f"ratio dropnet/idiomatic = {result['ratio_dropnet_over_idiomatic']:.2f}x (rounds {min(ratios):.2f}-"
          f"{max(ratios):.2f}x; target >= 1.3x): {'met' if result['ratio_dropnet_over_idiomatic'] >= 1.3 else 'MISSED'}")
    print(
        f"GFLOP/s    dropnet {result['gflops_achieved']['dropnet']:.1f}   idiomatic "
        f"{result['gflops_achieved']['idiomatic']:.1f}   GEMM peak {peak:.1f} (rounds {min(peaks):.0f}-{max(peaks):.0f}); "
        f"dropnet at {result['fraction_of_peak']['dropnet']:.0%} of it (target >= 70%): "
        f"{'met' if result['fraction_of_peak']['dropnet'] >= 0.7 else 'MISSED'}"
    )
    print(f"{'ms/step':<11}{'total':>8}" + "".join(f"{phase:>16}" for phase in PHASES))
    for name, fractions in split.items():
        print(f"{name:<11}{step_ms[name]:>8.2f}" + "".join(
            f"{fraction * step_ms[name]:>9.2f} ({fraction:>4.0%})" for fraction in (fractions[phase] for phase in PHASES)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
