"""The export gates: the graphs against the torch module, in onnxruntime on the CPU.

* deterministic parity: deterministic.onnx against the eval-mode module;
* sample-level parity: sample t of mc.onnx against the module run with exactly the masks the
  graph drew for (row seed, site, t), rebuilt by the numpy model of the hash and applied at the
  sites by the interceptor;
* reproducibility: at each of onnxruntime's four optimisation levels the same seed gives
  bit-identical outputs, a [1] seed equals its row seeds given as [B], and another seed differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from dropnet.core.errors import ModelPackageError
from dropnet.core.manifest import INPUT_NAME, NUM_SAMPLES_INPUT, SEED_INPUT
from dropnet.core.outputs import SAMPLES, Mode, Task, graph_output_names
from dropnet.core.seeding import row_seeds
from dropnet.exporter.ort_check import softmax
from dropnet.exporter.own.discover import Tolerance, eval_output, sampled_output
from dropnet.exporter.own.reference import site_noise
from dropnet.exporter.own.sites import Granularity, SiteCall, SiteInfo

LEVELS = (
    ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
)
PARITY_SEEDS = (0, 12345, -(2**40) + 7)
"""Batch seeds of the sample-level gate; each is also tried as explicit row seeds [B]."""
PARITY_SAMPLES = 3
REPRO_SEEDS = (7, 8)
REPRO_SAMPLES = 4


@dataclass(frozen=True)
class GateReport:
    """The largest differences the parity gates measured (max |graph - torch|)."""

    deterministic: float
    samples: float


def run_gates(
    deterministic: onnx.ModelProto,
    mc: onnx.ModelProto,
    module: nn.Module,
    example: torch.Tensor,
    sites: list[SiteInfo],
    task: Task,
    tolerance: Tolerance,
) -> GateReport:
    """Raise ModelPackageError unless every gate passes; return the measured parity errors."""
    det_error = check_deterministic(deterministic, module, example, task, tolerance)
    sample_error = check_samples(mc, module, example, sites, task, tolerance)
    check_reproducible(mc, example, task, tolerance)
    return GateReport(det_error, sample_error)


def check_deterministic(
    proto: onnx.ModelProto, module: nn.Module, x: torch.Tensor, task: Task, tolerance: Tolerance
) -> float:
    """deterministic.onnx against the eval-mode module; returns max |Δ| of its first output."""
    return compare_deterministic(proto, x, eval_output(module, x), "the eval-mode module", task, tolerance)


def compare_deterministic(
    proto: onnx.ModelProto, x: torch.Tensor, expected: np.ndarray, against: str, task: Task, tolerance: Tolerance
) -> float:
    """deterministic.onnx on ``x`` against ``expected``, the network output of the reference ``against``
    (in words); returns max |Δ| of its first output."""
    out = run_graph(session(proto), {INPUT_NAME: x.numpy()})
    first = "logits" if task is Task.CLASSIFICATION else "prediction"
    checks = {first: expected}
    if task is Task.CLASSIFICATION:
        checks["probabilities"] = softmax(expected)
    measured = {}
    for name, reference in checks.items():
        within, delta = tolerance.excess(out[name], reference)
        if not within:
            raise ModelPackageError(
                f"deterministic.onnx: {name} {list(out[name].shape)} differs from {against} by max "
                f"|Δ| = {delta:.3g}; expected ≤ {tolerance.atol:g} + {tolerance.rtol:g}·|reference|"
            )
        measured[name] = delta
    return measured[first]


class _Masks:
    """Site handler of the reference run: the numpy-rebuilt noise of sample ``sample`` for ``seeds``."""

    def __init__(self, sites: list[SiteInfo], seeds: np.ndarray, sample: int) -> None:
        self._sites, self._seeds, self._sample = sites, seeds, sample

    def __call__(self, index: int, call: SiteCall, x: torch.Tensor) -> torch.Tensor:
        site = self._sites[index]
        if site.call != call:
            raise ModelPackageError(f"site {index}: the reference run met {call.where}, expected {site.call.where}")
        noise = torch.from_numpy(site_noise(self._seeds, site, self._sample))
        rows = len(self._seeds)
        if site.call.granularity is Granularity.CHANNEL:
            return (x.reshape(rows, site.units, -1) * noise[:, :, None]).reshape(x.shape)
        return (x.reshape(rows, site.units) * noise).reshape(x.shape)


def check_samples(
    proto: onnx.ModelProto,
    module: nn.Module,
    x: torch.Tensor,
    sites: list[SiteInfo],
    task: Task,
    tolerance: Tolerance,
) -> float:
    """Each sample of mc.onnx against the torch module with the same masks; returns max |Δ|."""

    def reference(seeds: np.ndarray, sample: int) -> np.ndarray:
        return sampled_output(module, x, _Masks(sites, seeds, sample))

    return compare_samples(proto, x, reference, "the module", task, tolerance)


SampleReference = Callable[[np.ndarray, int], np.ndarray]
"""(row seeds int64 [B], sample index t) -> the reference network's output [B, D] with the masks the
numpy model of the hash rebuilds for those seeds and t."""


def compare_samples(
    proto: onnx.ModelProto, x: torch.Tensor, reference: SampleReference, against: str, task: Task, tolerance: Tolerance
) -> float:
    """Each sample of mc.onnx on ``x`` against ``reference`` (``against``: it in words); returns max |Δ|."""
    sess = session(proto)
    rows = len(x)
    worst = 0.0
    for seed in PARITY_SEEDS:
        seeds = row_seeds(seed, rows)
        for feed in (np.array([seed], np.int64), seeds):
            samples = run_graph(sess, mc_feeds(x, PARITY_SAMPLES, feed))[SAMPLES]
            for t in range(PARITY_SAMPLES):
                expected = reference(seeds, t)
                if task is Task.CLASSIFICATION:
                    expected = softmax(expected)
                within, delta = tolerance.excess(samples[t], expected)
                if not within:
                    raise ModelPackageError(
                        f"mc.onnx: sample {t} for seed {seed} differs from {against} run with the same masks by max "
                        f"|Δ| = {delta:.3g}; expected ≤ {tolerance.atol:g} + {tolerance.rtol:g}·|reference|"
                    )
                worst = max(worst, delta)
    return worst


def check_reproducible(proto: onnx.ModelProto, x: torch.Tensor, task: Task, tolerance: Tolerance) -> None:
    """Same seed → bit-identical, [S] ≡ row seeds, other seed → different; at every optimisation level."""
    names = graph_output_names(task, Mode.MC)
    rows = len(x)
    first: dict[str, np.ndarray] | None = None
    for level in LEVELS:
        sess = session(proto, level)
        one, again = (run_graph(sess, mc_feeds(x, REPRO_SAMPLES, [REPRO_SEEDS[0]])) for _ in range(2))
        per_row = run_graph(sess, mc_feeds(x, REPRO_SAMPLES, row_seeds(REPRO_SEEDS[0], rows)))
        other = run_graph(sess, mc_feeds(x, REPRO_SAMPLES, [REPRO_SEEDS[1]]))
        problems = [
            f"{what} differs" for what, run in (("a second run", again), ("the same seed given per row", per_row))
            if not all(np.array_equal(one[n], run[n]) for n in names)
        ]
        if np.array_equal(one[SAMPLES], other[SAMPLES]):
            problems.append(f"seed {REPRO_SEEDS[1]} gives the same samples as seed {REPRO_SEEDS[0]}")
        if first is not None and not tolerance.excess(one[SAMPLES], first[SAMPLES])[0]:
            problems.append("the samples differ from those at ORT_DISABLE_ALL beyond the tolerance")
        if problems:
            raise ModelPackageError(
                f"mc.onnx at onnxruntime {level.name}: {'; '.join(problems)}; expected outputs that depend on "
                "the seed alone, the same at every optimisation level"
            )
        if first is None:
            first = one


def session(proto: onnx.ModelProto, level: ort.GraphOptimizationLevel = LEVELS[-1]) -> ort.InferenceSession:
    """A single-threaded CPU session at ``level``."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelPackageError(f"{proto.graph.name}: onnxruntime {ort.__version__} cannot load it ({exc})") from None


def mc_feeds(x: torch.Tensor, samples: int, seed: np.ndarray | list[int]) -> dict[str, np.ndarray]:
    """Feeds of mc.onnx."""
    return {
        INPUT_NAME: x.numpy(),
        NUM_SAMPLES_INPUT: np.array(samples, np.int64),
        SEED_INPUT: np.asarray(seed, np.int64),
    }


def run_graph(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of ``sess`` on ``feeds``, by name; onnxruntime's failure as ModelPackageError."""
    names = [o.name for o in sess.get_outputs()]
    try:
        return dict(zip(names, sess.run(names, feeds)))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelPackageError(f"onnxruntime {ort.__version__} failed to run the graph ({exc})") from None
