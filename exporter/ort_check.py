"""Check exported graphs in the installed onnxruntime against the torch network they came from."""

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


def sample_rows(spec: InputSpec, rows: int, seed: int = 0) -> np.ndarray:
    """``rows`` float32 examples drawn uniformly from the input's value range (seeded)."""
    low, high = spec.value_range
    return np.random.default_rng(seed).uniform(low, high, size=(rows, *spec.shape)).astype(np.float32)


def check_in_onnxruntime(deterministic: bytes, mc: bytes, model: nn.Sequential, spec: InputSpec) -> None:
    """Raise :class:`ModelPackageError` unless both graphs load on the CPU and agree with ``model``.

    Every graph output of the output table must come out finite and of its shape. deterministic.onnx
    must reproduce the torch test-time network (``model`` in eval mode) within ``LOGITS_TOLERANCE``
    on rows drawn from the input range; mc.onnx's summaries must agree with its samples.
    """
    x = sample_rows(spec, PARITY_ROWS)
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    sizes = {"B": PARITY_ROWS, "C": spec.num_classes, "T": MC_CHECK_SAMPLES}
    out = _run(deterministic, Mode.DETERMINISTIC, {INPUT_NAME: x}, sizes)
    delta = float(np.max(np.abs(out["logits"] - expected)))
    if not delta <= LOGITS_TOLERANCE:
        raise ModelPackageError(
            f"{GRAPH_FILES[Mode.DETERMINISTIC]}: logits differ from the torch test-time network's by max |Δ| = "
            f"{delta:.3g} on {PARITY_ROWS} rows; expected ≤ {LOGITS_TOLERANCE}"
        )
    _expect_close(Mode.DETERMINISTIC, "probabilities", out["probabilities"], _softmax(expected))
    feeds = {
        INPUT_NAME: x,
        NUM_SAMPLES_INPUT: np.array(MC_CHECK_SAMPLES, np.int64),
        SEED_INPUT: np.array([0], np.int64),
    }
    out = _run(mc, Mode.MC, feeds, sizes)
    _expect_close(Mode.MC, "probabilities (vs the mean of samples)", out["probabilities"], out["samples"].mean(axis=0))
    _expect_close(Mode.MC, "std (vs the std of samples)", out["std"], out["samples"].std(axis=0))


def _run(model: bytes, mode: Mode, feeds: dict[str, np.ndarray], sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Every graph output of ``mode``, each checked to be finite and of its table shape for ``sizes``."""
    file_name = GRAPH_FILES[mode]
    specs = [spec for spec in output_specs(Task.CLASSIFICATION, mode) if spec.in_graph]
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


def _expect_close(mode: Mode, what: str, actual: np.ndarray, expected: np.ndarray) -> None:
    delta = float(np.max(np.abs(actual - expected)))
    if not delta <= LOGITS_TOLERANCE:
        raise ModelPackageError(
            f"{GRAPH_FILES[mode]}: {what} off by max |Δ| = {delta:.3g}; expected ≤ {LOGITS_TOLERANCE}"
        )


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
