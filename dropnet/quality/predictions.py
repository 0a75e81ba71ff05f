"""A package's predictions on a labelled set, run in-process through the serving path's Predictor.

Classification keeps what the quality metrics and temperature scaling need: the deterministic
``logits`` and each MC sample's log-probabilities (log of mc.onnx's ``samples``, floored at the
smallest normal float32 so that a probability that underflowed to 0 stays finite). The MC rows
run in chunks with the row seeds of one seed for the whole set (``row_seeds(seed, N)``), so the
result equals one ``predict(x, mc_samples, seed)`` of all rows whatever the chunk size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dropnet.core.errors import InvalidInputError, ModelPackageError
from dropnet.core.outputs import SAMPLES, Mode, Task
from dropnet.core.seeding import row_seeds
from dropnet.quality.metrics import TINY
from dropnet.server.predictor import Predictor
from dropnet.server.request import check_request

log = logging.getLogger(__name__)

CHUNK_VALUES = 4 * 1024**2
"""Sample values (T × rows × C) fetched per MC run of rows: 16 MiB of float32 at most, beyond the result."""


@dataclass(frozen=True, eq=False)
class Predictions:
    """A classification package's outputs on N labelled rows (compared by identity: it holds arrays)."""

    labels: np.ndarray
    """int64 [N]."""
    det_logits: np.ndarray
    """float32 [N, C]: deterministic.onnx's ``logits`` (weight scaling)."""
    mc_log_samples: np.ndarray
    """float32 [T, N, C]: log max(samples, float32 tiny) of mc.onnx, T samples per row."""
    mc_samples: int
    """T."""
    seed: int
    """The MC seed: row b's masks come from ``row_seeds(seed, N)[b]``."""


@dataclass(frozen=True, eq=False)
class RegressionPredictions:
    """A regression package's outputs on N rows."""

    prediction: np.ndarray
    """float32 [N, D]: deterministic.onnx's ``prediction``."""
    mean: np.ndarray
    """float32 [N, D]: the MC mean."""
    std: np.ndarray
    """float32 [N, D]: the MC standard deviation (population, over T)."""
    mc_samples: int
    seed: int


def predict_package(
    package_dir: str | Path, x: np.ndarray, labels: np.ndarray, mc_samples: int = 50, seed: int = 0,
    device: str = "auto",
) -> Predictions:
    """Deterministic logits and T = ``mc_samples`` MC log-samples of the classification package on rows ``x``."""
    predictor = _load(package_dir, device, Task.CLASSIFICATION)
    y = np.asarray(labels)
    if y.dtype.kind not in "iu" or y.shape != (len(x),):
        raise InvalidInputError(f"labels is {y.dtype} {list(y.shape)}; expected an integer array [{len(x)}]")

    def run(rows: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, ...]:
        samples = predictor.run_mc(rows, mc_samples, seeds, (SAMPLES,))[SAMPLES]
        return predictor.run_deterministic(rows)["logits"], np.log(np.maximum(samples, np.float32(TINY)))

    logits, log_samples = _in_chunks(predictor, x, mc_samples, seed, len(predictor.manifest.classes), run)
    return Predictions(y.astype(np.int64), logits, log_samples, mc_samples, seed)


def predict_regression(
    package_dir: str | Path, x: np.ndarray, mc_samples: int = 50, seed: int = 0, device: str = "auto"
) -> RegressionPredictions:
    """The deterministic prediction and the MC mean and std of the regression package on rows ``x``."""
    predictor = _load(package_dir, device, Task.REGRESSION)
    targets = len(predictor.manifest.targets)

    def run(rows: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, ...]:
        mc = predictor.run_mc(rows, mc_samples, seeds, ("mean", "std"))
        return predictor.run_deterministic(rows)["prediction"], mc["mean"], mc["std"]

    prediction, mean, std = _in_chunks(predictor, x, mc_samples, seed, targets, run)
    return RegressionPredictions(prediction, mean, std, mc_samples, seed)


def _load(package_dir: str | Path, device: str, task: Task) -> Predictor:
    predictor = Predictor.load(package_dir, device=device)
    if predictor.manifest.task is not task:
        use = "predict_package" if predictor.manifest.task is Task.CLASSIFICATION else "predict_regression"
        raise ModelPackageError(
            f"{package_dir} is a {predictor.manifest.task.value} package; expected a {task.value} package here "
            f"(use {use})"
        )
    return predictor


def _in_chunks(
    predictor: Predictor, x: np.ndarray, mc_samples: int, seed: int, width: int,
    run: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, ...]],
) -> tuple[np.ndarray, ...]:
    """``run(rows, row_seeds)`` on chunks of the checked rows of ``x``, each output concatenated along its rows axis
    (the last axis but one)."""
    checked = check_request(predictor, x, Mode.MC, mc_samples, seed)
    seeds = row_seeds(seed, len(checked.x))
    step = max(1, CHUNK_VALUES // (mc_samples * width))
    parts = []
    for start in range(0, len(checked.x), step):
        parts.append(run(checked.x[start : start + step], seeds[start : start + step]))
        log.info("%s: %d of %d rows (T = %d)", predictor.name, min(start + step, len(checked.x)), len(checked.x),
                 mc_samples)
    return tuple(np.concatenate(outputs, axis=-2) for outputs in zip(*parts))

