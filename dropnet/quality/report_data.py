"""The numbers of an uncertainty report, computed from a package's predictions as JSON-able values.

Per-row uncertainty of a mode comes from its log-probabilities at a temperature τ: [N, C]
(deterministic: the logits) or [T, N, C] (MC: each sample's log-probabilities). The prediction is
mean_t softmax(log_probs_t / τ); its predictive entropy is the entropy of that mean, and (MC only)
its mutual information is that entropy minus the mean entropy of the samples, as mc.onnx computes
them. Non-finite values (an empty reliability bin) are written as null.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import log_softmax

from dropnet.quality import metrics
from dropnet.server.predictor import entropy

BINS = metrics.DEFAULT_BINS
"""Calibration bins (equal-width and adaptive)."""
HISTOGRAM_BINS = 30
RISK_POINTS = 200
"""Most points of a risk-coverage curve kept for its figure and the JSON (the AURC uses every point)."""
SCORES = ("max_probability", "entropy", "mutual_information")
"""OOD scores, each higher for "more likely out of distribution": 1 − max p, predictive entropy, MI."""
SCORE_TITLES = {"max_probability": "1 − max probability", "entropy": "predictive entropy",
                "mutual_information": "mutual information"}


@dataclass(frozen=True, eq=False)
class RowScores:
    """One mode's prediction and per-row uncertainty on a set of rows."""

    probabilities: np.ndarray
    """float64 [N, C]."""
    scores: Mapping[str, np.ndarray | None]
    """Each of :data:`SCORES` as float64 [N]; ``mutual_information`` is None for a single sample (deterministic)."""


def row_scores(log_probs: np.ndarray, tau: float = 1.0) -> RowScores:
    """The prediction and per-row scores of log-probabilities [N, C] or [T, N, C] at temperature ``tau``."""
    samples = np.asarray(log_probs, dtype=np.float64)
    samples = samples if samples.ndim == 3 else samples[np.newaxis]
    probabilities_t = np.exp(log_softmax(samples / tau, axis=-1))
    probabilities = probabilities_t.mean(axis=0)
    predictive = entropy(probabilities)
    information = None if len(samples) == 1 else np.maximum(predictive - entropy(probabilities_t).mean(axis=0), 0.0)
    scores = {"max_probability": 1.0 - probabilities.max(axis=1), "entropy": predictive,
              "mutual_information": information}
    return RowScores(probabilities, scores)


def json_number(value: float) -> float | None:
    """``value`` as a JSON number; None where it is not finite."""
    return float(value) if math.isfinite(value) else None


def json_list(values: np.ndarray) -> list[Any]:
    """A 1-D array as a JSON list: integers as ints, floats as numbers or null where not finite."""
    array = np.asarray(values)
    if array.dtype.kind in "iub":
        return [int(v) for v in array]
    return [json_number(float(v)) for v in array]


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """Error, NLL, Brier, ECE (equal-width and adaptive bins) and MCE of one prediction."""
    return {
        "error": metrics.error_rate(probabilities, labels),
        "nll": metrics.nll(probabilities, labels),
        "brier": metrics.brier(probabilities, labels),
        "ece": metrics.ece(probabilities, labels, BINS),
        "ece_adaptive": metrics.ece(probabilities, labels, BINS, adaptive=True),
        "mce": metrics.mce(probabilities, labels, BINS),
    }


def reliability_curve(probabilities: np.ndarray, labels: np.ndarray, label: str) -> dict[str, Any]:
    """The equal-width reliability bins of one prediction, with the legend ``label`` and its ECE."""
    bins = metrics.reliability_bins(probabilities, labels, BINS)
    return {
        "label": label, "edges": json_list(bins.edges), "confidence": json_list(bins.confidence),
        "accuracy": json_list(bins.accuracy), "count": json_list(bins.count), "ece": bins.ece,
    }


def ood_scores(inside: RowScores, outside: RowScores) -> dict[str, dict[str, float] | None]:
    """AUROC, AUPR (OOD positive) and FPR at 95% TPR of each score (None where the mode lacks it)."""
    table: dict[str, dict[str, float] | None] = {}
    for name in SCORES:
        a, b = inside.scores[name], outside.scores[name]
        table[name] = None if a is None or b is None else {
            "auroc": metrics.auroc(a, b), "aupr": metrics.aupr(a, b), "fpr95": metrics.fpr_at_tpr(a, b, 0.95),
        }
    return table


def histogram_panel(title: str, xlabel: str, sets: Mapping[str, np.ndarray], high: float) -> dict[str, Any]:
    """Fractions of each set's values per bin over [0, ``high``] (:data:`HISTOGRAM_BINS` equal bins; values above
    ``high`` fall in the last bin)."""
    edges = np.linspace(0.0, high, HISTOGRAM_BINS + 1)
    fractions = {}
    for name, values in sets.items():
        counts, _ = np.histogram(np.clip(values, 0.0, high), edges)
        fractions[name] = json_list(counts / len(values))
    return {"title": title, "xlabel": xlabel, "edges": json_list(edges), "fractions": fractions}


def selective_curve(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The risk-coverage curve of max-probability confidence (at most :data:`RISK_POINTS` of its points, the last
    one included) and the AURC of the whole curve."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    curve = metrics.risk_coverage(confidence, correct)
    kept = _thinned(curve.coverage, RISK_POINTS)
    return {
        "aurc": metrics.aurc(confidence, correct), "coverage": json_list(curve.coverage[kept]),
        "risk": json_list(curve.risk[kept]),
    }


def _thinned(coverage: np.ndarray, points: int) -> np.ndarray:
    """Indices of the first curve point at or past each of ``points`` evenly spaced coverages, the last included."""
    grid = np.linspace(0.0, 1.0, points + 1)[1:]
    indices = np.searchsorted(coverage, grid, side="left").clip(max=len(coverage) - 1)
    return np.unique(np.append(indices, len(coverage) - 1))


def regression_metrics(
    prediction: np.ndarray, mean: np.ndarray, std: np.ndarray, y: np.ndarray
) -> dict[str, dict[str, float | None]]:
    """RMSE of the deterministic prediction; Gaussian NLL, RMSE and ±1σ/±2σ coverage of the MC mean and std.

    The Gaussian NLL is None when some σ is 0 (it is then unbounded)."""
    positive = bool((std > 0).all())
    return {
        "deterministic": {"rmse": metrics.rmse(prediction, y)},
        "mc": {
            "gaussian_nll": metrics.gaussian_nll(mean, std, y) if positive else None,
            "rmse": metrics.rmse(mean, y),
            "coverage_1sigma": metrics.interval_coverage(mean, std, y, 1),
            "coverage_2sigma": metrics.interval_coverage(mean, std, y, 2),
        },
    }


def as_targets(y: np.ndarray, targets: Sequence[str]) -> np.ndarray:
    """Regression targets as float64 [N, D] (a 1-D array is one target)."""
    values = np.asarray(y, dtype=np.float64)
    return values.reshape(len(values), len(targets)) if values.ndim == 1 else values
