"""Check exported graphs in the installed onnxruntime against the torch network they came from."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from dropnet.core.errors import ModelPackageError
from dropnet.core.manifest import DETERMINISTIC_FILE, MC_FILE
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

    deterministic.onnx must reproduce the torch test-time network (``model`` in eval mode) within
    ``LOGITS_TOLERANCE`` on rows drawn from the input range; mc.onnx must run and return
    consistent, well-shaped outputs.
    """
    x = sample_rows(spec, PARITY_ROWS)
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    session = _session(deterministic, DETERMINISTIC_FILE)
    logits, probabilities = _run(session, DETERMINISTIC_FILE, ["logits", "probabilities"], {"x": x})
    delta = float(np.max(np.abs(logits - expected))) if logits.shape == expected.shape else float("inf")
    if not delta <= LOGITS_TOLERANCE:
        raise ModelPackageError(
            f"{DETERMINISTIC_FILE}: logits {logits.shape} differ from the torch test-time network's "
            f"{expected.shape} by max |Δ| = {delta:.3g} on {PARITY_ROWS} rows; expected ≤ {LOGITS_TOLERANCE}"
        )
    _expect_close(DETERMINISTIC_FILE, "probabilities", probabilities, _softmax(expected))
    _check_mc(_session(mc, MC_FILE), x, spec.num_classes)


def _check_mc(session: ort.InferenceSession, x: np.ndarray, classes: int) -> None:
    names = [o.name for o in session.get_outputs()]
    feeds = {"x": x, "num_samples": np.array(MC_CHECK_SAMPLES, np.int64), "seed": np.array([0], np.int64)}
    out = dict(zip(names, _run(session, MC_FILE, names, feeds)))
    rows = x.shape[0]
    shapes = {"probabilities": (rows, classes), "std": (rows, classes), "predictive_entropy": (rows,),
              "mutual_information": (rows,), "samples": (MC_CHECK_SAMPLES, rows, classes)}
    for name, shape in shapes.items():
        if name not in out or out[name].shape != shape or not np.isfinite(out[name]).all():
            got = out[name].shape if name in out else "missing"
            raise ModelPackageError(f"{MC_FILE}: output {name} is {got} (or not finite); expected finite {shape}")
    _expect_close(MC_FILE, "probabilities (vs the mean of samples)", out["probabilities"], out["samples"].mean(axis=0))
    _expect_close(MC_FILE, "std (vs the std of samples)", out["std"], out["samples"].std(axis=0))


def _expect_close(file_name: str, what: str, actual: np.ndarray, expected: np.ndarray) -> None:
    delta = float(np.max(np.abs(actual - expected)))
    if not delta <= LOGITS_TOLERANCE:
        raise ModelPackageError(f"{file_name}: {what} off by max |Δ| = {delta:.3g}; expected ≤ {LOGITS_TOLERANCE}")


def _session(model: bytes, file_name: str) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelPackageError(f"{file_name}: onnxruntime {ort.__version__} cannot load it ({exc})") from None


def _run(session: ort.InferenceSession, file_name: str, names: list[str], feeds: dict[str, np.ndarray]) -> list:
    try:
        return session.run(names, feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelPackageError(f"{file_name}: onnxruntime {ort.__version__} failed to run it ({exc})") from None


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
