"""Check exported graphs in the installed onnxruntime, through the serving path's session wrapper."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dropnet.core.errors import ModelPackageError
from dropnet.core.manifest import GRAPH_FILES, GRAPH_INPUTS, INPUT_NAME, NUM_SAMPLES_INPUT, SEED_INPUT
from dropnet.core.outputs import Mode, Task, output_specs
from dropnet.server.providers import CPU
from dropnet.server.sessions import create_session, run_session
from dropnet.trainer.models import InputSpec

PARITY_ROWS = 8
LOGITS_TOLERANCE = 1e-5
MC_CHECK_SAMPLES = 4
MC_SUMMARIES = {Task.CLASSIFICATION: "probabilities", Task.REGRESSION: "mean"}
"""The MC output that is the mean of ``samples``, per task."""


def sample_rows(spec: InputSpec, rows: int, seed: int = 0) -> np.ndarray:
    """``rows`` float32 examples drawn uniformly from the input's value range (seeded)."""
    low, high = spec.value_range
    return np.random.default_rng(seed).uniform(low, high, size=(rows, *spec.shape)).astype(np.float32)


def check_in_onnxruntime(deterministic: bytes, mc: bytes, model: nn.Sequential, spec: InputSpec) -> None:
    """Raise :class:`ModelPackageError` unless both graphs pass :func:`check_outputs` and agree with ``model``.

    deterministic.onnx must reproduce the torch test-time network (``model`` in eval mode) within
    ``LOGITS_TOLERANCE`` · (1 + |logit|) on rows drawn from the input range (relative for large logits: an
    over-confident net's float32 sums differ by more than 1e-5 between torch's and onnxruntime's kernels), and its
    probabilities must be the softmax of its logits.
    """
    x = sample_rows(spec, PARITY_ROWS)
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    out = check_outputs(deterministic, mc, Task.CLASSIFICATION, x, spec.num_classes)
    where = GRAPH_FILES[Mode.DETERMINISTIC]
    expect_close(where, f"logits (vs the torch test-time network's, {PARITY_ROWS} rows)", out["logits"], expected)
    expect_close(where, "probabilities (vs the softmax of its logits)", out["probabilities"], softmax(out["logits"]))


def check_outputs(deterministic: bytes, mc: bytes, task: Task, x: np.ndarray, width: int) -> dict[str, np.ndarray]:
    """Both graphs load in a CPU session as the server makes them and answer ``x``; return the deterministic outputs.

    Every graph output of the output table for ``task`` must come out finite and of its shape
    (``width``: C or D); mc.onnx's summaries must agree with its samples.
    """
    sizes = {"B": len(x), "C": width, "D": width, "T": MC_CHECK_SAMPLES}
    out = _run(deterministic, task, Mode.DETERMINISTIC, {INPUT_NAME: x}, sizes)
    feeds = {
        INPUT_NAME: x,
        NUM_SAMPLES_INPUT: np.array(MC_CHECK_SAMPLES, np.int64),
        SEED_INPUT: np.array([0], np.int64),
    }
    mc_out = _run(mc, task, Mode.MC, feeds, sizes)
    mean = MC_SUMMARIES[task]
    expect_close(GRAPH_FILES[Mode.MC], f"{mean} (vs the mean of samples)", mc_out[mean], mc_out["samples"].mean(axis=0))
    expect_close(GRAPH_FILES[Mode.MC], "std (vs the std of samples)", mc_out["std"], mc_out["samples"].std(axis=0))
    return out


def _run(
    model: bytes, task: Task, mode: Mode, feeds: dict[str, np.ndarray], sizes: dict[str, int]
) -> dict[str, np.ndarray]:
    """Every graph output of ``mode``, each checked to be finite and of its table shape for ``sizes``."""
    file_name = GRAPH_FILES[mode]
    specs = [spec for spec in output_specs(task, mode) if spec.in_graph]
    names = [spec.name for spec in specs]
    session = create_session(model, file_name, CPU, GRAPH_INPUTS[mode], names)
    out = run_session(session, file_name, names, feeds)
    for spec in specs:
        shape = tuple(spec.dims(sizes))
        if out[spec.name].shape != shape or not np.isfinite(out[spec.name]).all():
            raise ModelPackageError(
                f"{file_name}: output {spec.name} is {out[spec.name].shape} (or not finite); expected finite {shape}"
            )
    return out


def expect_close(where: str, what: str, actual: np.ndarray, expected: np.ndarray) -> None:
    """|actual - expected| ≤ LOGITS_TOLERANCE · (1 + |expected|) elementwise (relative for large outputs), else a
    ModelPackageError naming the graph (``where``) and the output (``what``)."""
    delta = np.abs(actual.astype(np.float64) - expected)
    if not np.all(delta <= LOGITS_TOLERANCE * (1 + np.abs(expected))):
        raise ModelPackageError(
            f"{where}: {what} off by max |Δ| = {float(delta.max()):.3g}; "
            f"expected ≤ {LOGITS_TOLERANCE} · (1 + |value|)"
        )


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (the classes), as the graphs compute ``probabilities``."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
