"""Temperature scaling: the fitted τ minimises the NLL and recovers a known temperature within its standard error."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from dropnet.core.errors import InvalidInputError
from dropnet.quality.temperature import calibrated_probabilities, fit_temperature, nll_at

ROWS, CLASSES, SAMPLES = 3000, 5, 8
EPSILON = 1e-3
STANDARD_ERRORS = 4.0
"""Allowed distance of the fit from the true τ, in standard errors of the maximum-likelihood estimate."""


def synthetic(tau: float, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits [T, N, C] (T = 1: [N, C]) and labels drawn from mean_t softmax(logits_t / tau)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 3.0, size=(ROWS, CLASSES))
    logits = base + rng.normal(0.0, 1.5, size=(samples, ROWS, CLASSES)) if samples > 1 else base[np.newaxis]
    probabilities = softmax(logits / tau, axis=-1).mean(axis=0)
    labels = (probabilities.cumsum(axis=1) > rng.random((ROWS, 1))).argmax(axis=1)
    return (logits if samples > 1 else base), labels


def standard_error(log_probs: np.ndarray, labels: np.ndarray, tau: float) -> float:
    """1 / sqrt(observed information) of τ: the curvature of the total NLL at the fit, by central differences."""
    step = 1e-3 * tau
    total = [ROWS * nll_at(log_probs, labels, tau + k * step) for k in (-1, 0, 1)]
    curvature = (total[0] - 2 * total[1] + total[2]) / step**2
    return 1.0 / np.sqrt(curvature)


@pytest.mark.parametrize(("true_tau", "samples"), [(2.0, 1), (0.5, 1), (1.5, SAMPLES), (0.6, SAMPLES)])
def test_the_fit_recovers_a_known_temperature(true_tau: float, samples: int) -> None:
    log_probs, labels = synthetic(true_tau, samples, seed=samples)
    tau = fit_temperature(log_probs, labels)
    assert abs(tau - true_tau) <= STANDARD_ERRORS * standard_error(log_probs, labels, tau)


@pytest.mark.parametrize("samples", [1, SAMPLES])
def test_the_fitted_temperature_minimises_the_nll(samples: int) -> None:
    log_probs, labels = synthetic(1.7, samples, seed=10 + samples)
    tau = fit_temperature(log_probs, labels)
    best = nll_at(log_probs, labels, tau)
    for other in (1.0, tau * (1 - EPSILON), tau * (1 + EPSILON)):
        assert best <= nll_at(log_probs, labels, other)


def test_mc_log_probabilities_give_the_logits_temperature() -> None:
    """Each sample's log-softmax differs from its logits by a constant per row: same probabilities, same τ."""
    logits, labels = synthetic(1.3, SAMPLES, seed=3)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(calibrated_probabilities(log_probs, 0.7), calibrated_probabilities(logits, 0.7))
    assert fit_temperature(log_probs, labels) == pytest.approx(fit_temperature(logits, labels), rel=1e-5)


def test_calibrated_probabilities_average_the_tempered_softmax_of_each_sample() -> None:
    logits = np.array([[[2.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [3.0, 1.0]]])
    expected = (softmax(logits[0] / 2, axis=1) + softmax(logits[1] / 2, axis=1)) / 2
    np.testing.assert_allclose(calibrated_probabilities(logits, 2.0), expected)
    np.testing.assert_allclose(calibrated_probabilities(logits[0], 0.5), softmax(logits[0] * 2, axis=1))
    # NLL: −mean log p_label.
    labels = np.array([0, 1])
    assert nll_at(logits, labels, 2.0) == pytest.approx(-np.mean(np.log(expected[[0, 1], labels])))


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: fit_temperature(np.zeros((2, 3)), np.array([0, 3])), "labels holds 3; expected class ids in 0..2"),
        (lambda: fit_temperature(np.zeros((2, 3)), np.array([0])), "labels is int64 [1]; expected an integer array"),
        (lambda: fit_temperature(np.zeros(3), np.array([0])), "log_probs is float64 [3]; expected a non-empty"),
        (lambda: fit_temperature(np.array([[0.0, -np.inf]]), np.array([0])), "log_probs holds 1 non-finite values"),
        (lambda: calibrated_probabilities(np.zeros((2, 3)), 0.0), "tau must be a positive finite number, got 0.0"),
    ],
)
def test_bad_input_is_refused(call, named: str) -> None:
    with pytest.raises(InvalidInputError) as error:
        call()
    assert named in str(error.value)
