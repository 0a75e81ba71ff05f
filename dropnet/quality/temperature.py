"""Temperature scaling (Guo et al., 2017): one scalar τ > 0 dividing the logits, fitted by minimising the NLL.

``log_probs`` is [N, C] (deterministic mode: the logits) or [T, N, C] (MC mode: each sample's
log-probabilities, the log of mc.onnx's ``samples``, which equal that sample's logits up to a
constant per sample and row, so softmax(log_probs_t / τ) = softmax(logits_t / τ)). The calibrated
prediction is mean_t softmax(log_probs_t / τ); with T = 1 it is the deterministic one. Computed in
float64 with log-sum-exp throughout.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from dropnet.core.errors import InvalidInputError

log = logging.getLogger(__name__)

LOG_TAU_BOUNDS = (float(np.log(1e-2)), float(np.log(1e2)))
"""The search interval of log τ: τ in [0.01, 100]."""
GRID_POINTS = 25
"""Evenly spaced log τ (τ = 1 among them) evaluated first, so the bounded search starts in the best bracket."""
LOG_TAU_TOLERANCE = 1e-6
"""The bounded search's absolute tolerance on log τ."""


def fit_temperature(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """The τ in [0.01, 100] minimising the NLL of mean_t softmax(log_probs_t / τ) on ``labels``.

    A grid over log τ finds the bracket of the global minimum; scipy's bounded scalar minimisation
    then refines log τ inside it. An optimum on a bound of the range is logged as a warning.
    """
    samples, y = _checked(log_probs, labels)
    grid = np.linspace(*LOG_TAU_BOUNDS, GRID_POINTS)
    losses = [_nll(samples, y, float(np.exp(t))) for t in grid]
    best = int(np.argmin(losses))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, GRID_POINTS - 1)]
    result = minimize_scalar(
        lambda t: _nll(samples, y, float(np.exp(t))), bounds=(low, high), method="bounded",
        options={"xatol": LOG_TAU_TOLERANCE},
    )
    log_tau = float(result.x) if result.fun <= losses[best] else float(grid[best])
    if np.isclose(log_tau, LOG_TAU_BOUNDS, atol=1e-3).any():
        log.warning("the fitted temperature %.4g lies on the bound of the search range [0.01, 100]",
                    np.exp(log_tau))
    return float(np.exp(log_tau))


def calibrated_probabilities(log_probs: np.ndarray, tau: float) -> np.ndarray:
    """float64 [N, C]: mean_t softmax(log_probs_t / ``tau``) (softmax(logits / τ) for [N, C] input)."""
    samples = _as_samples(log_probs)
    tau = _checked_tau(tau)
    scaled = samples / tau
    return np.mean(np.exp(scaled - logsumexp(scaled, axis=-1, keepdims=True)), axis=0)


def nll_at(log_probs: np.ndarray, labels: np.ndarray, tau: float) -> float:
    """Mean NLL of mean_t softmax(log_probs_t / ``tau``) on ``labels``: the loss :func:`fit_temperature` minimises."""
    samples, y = _checked(log_probs, labels)
    return _nll(samples, y, _checked_tau(tau))


def _nll(samples: np.ndarray, labels: np.ndarray, tau: float) -> float:
    """−mean log mean_t softmax(samples_t / tau)[label], via log-sum-exp over t and over the classes."""
    scaled = samples / tau
    log_softmax_label = scaled[:, np.arange(len(labels)), labels] - logsumexp(scaled, axis=-1)  # [T, N]
    return float(np.log(len(samples)) - np.mean(logsumexp(log_softmax_label, axis=0)))


def _as_samples(log_probs: object) -> np.ndarray:
    """float64 [T, N, C] from [N, C] or [T, N, C]; finite values required (floor log-probabilities first)."""
    array = np.asarray(log_probs)
    if array.dtype.kind not in "iuf" or array.ndim not in (2, 3) or array.size == 0:
        raise InvalidInputError(
            f"log_probs is {array.dtype} {list(array.shape)}; expected a non-empty float array [N, C] (logits) or "
            "[T, N, C] (each MC sample's log-probabilities)"
        )
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise InvalidInputError(
            f"log_probs holds {int(np.sum(~np.isfinite(values)))} non-finite values; expected finite values "
            "(floor probabilities before taking their log)"
        )
    return values if values.ndim == 3 else values[np.newaxis]


def _checked(log_probs: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    samples = _as_samples(log_probs)
    rows, classes = samples.shape[1:]
    y = np.asarray(labels)
    if y.dtype.kind not in "iu" or y.shape != (rows,):
        raise InvalidInputError(f"labels is {y.dtype} {list(y.shape)}; expected an integer array [{rows}]")
    if y.min() < 0 or y.max() >= classes:
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise InvalidInputError(f"labels holds {bad}; expected class ids in 0..{classes - 1}")
    return samples, y.astype(np.int64)


def _checked_tau(tau: object) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.floating)) or not (0 < tau < np.inf):
        raise InvalidInputError(f"tau must be a positive finite number, got {tau!r}")
    return float(tau)
