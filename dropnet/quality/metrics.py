"""Uncertainty-quality metrics: classification, out-of-distribution scores, selective prediction, regression.

Classification takes ``probs`` [N, C] (rows of the probability simplex) and ``labels`` [N] (class
ids 0..C-1). OOD metrics take two 1-D score arrays where a higher score means "more likely
out-of-distribution" (entropy, mutual information, 1 − max probability); the OOD inputs are the
positive class. Regression takes ``mean``, ``std`` and ``y`` [N, D]. Bad input raises
:class:`~dropnet.core.errors.InvalidInputError` naming the argument, what was found and what was
expected. numpy and scikit-learn only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from dropnet.core.errors import InvalidInputError

SIMPLEX_TOLERANCE = 1e-4
"""How far a row of ``probs`` may sum from 1 (or a value lie below 0): float32 softmax rounding."""
TINY = float(np.finfo(np.float32).tiny)
"""The floor under a probability before its log: the smallest normal float32, as in mc.onnx and the Predictor."""
DEFAULT_BINS = 15


@dataclass(frozen=True)
class ReliabilityBins:
    """Confidence (max probability) bins and, per bin, the mean confidence, the accuracy and the count.

    Equal-width bins are (lo, hi], the first closed at 0. Adaptive bins hold equal numbers of the
    sorted confidences (sizes differ by at most one); ``edges`` are then the smallest confidence
    and each bin's largest. An empty bin has NaN confidence and accuracy.
    """

    edges: np.ndarray
    """float64 [bins + 1]."""
    confidence: np.ndarray
    """float64 [bins]: mean max probability of the bin's rows."""
    accuracy: np.ndarray
    """float64 [bins]: fraction of the bin's rows whose argmax is the label."""
    count: np.ndarray
    """int64 [bins]."""

    @property
    def gaps(self) -> np.ndarray:
        """|accuracy − confidence| per bin (NaN for an empty bin)."""
        return np.abs(self.accuracy - self.confidence)

    @property
    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean gap."""
        filled = self.count > 0
        return float(np.sum(self.count[filled] * self.gaps[filled]) / np.sum(self.count))

    @property
    def mce(self) -> float:
        """Maximum calibration error: the largest gap of a non-empty bin."""
        return float(np.max(self.gaps[self.count > 0]))


@dataclass(frozen=True)
class RiskCoverage:
    """Selective prediction: keep the rows whose confidence is at least each threshold.

    One point per distinct confidence, thresholds decreasing: rows with equal confidence are kept
    or dropped together, so the curve does not depend on the rows' order.
    """

    threshold: np.ndarray
    """float64 [K]: the distinct confidences, decreasing."""
    coverage: np.ndarray
    """float64 [K]: fraction of rows kept (confidence >= threshold), increasing to 1."""
    risk: np.ndarray
    """float64 [K]: error rate among the kept rows."""


# --- classification ----------------------------------------------------------------------------

def error_rate(probs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax (first on ties) is not the label."""
    probs, labels = _classification(probs, labels)
    return float(np.mean(np.argmax(probs, axis=1) != labels))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean −log p_label, with p floored at :data:`TINY` (nats)."""
    probs, labels = _classification(probs, labels)
    return float(np.mean(-np.log(np.maximum(probs[np.arange(len(labels)), labels], TINY))))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over rows of Σ_c (p_c − onehot_c)²."""
    probs, labels = _classification(probs, labels)
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(np.mean(np.sum(np.square(probs - onehot), axis=1)))


def reliability_bins(
    probs: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS, adaptive: bool = False
) -> ReliabilityBins:
    """The reliability diagram's bins of max probability (see :class:`ReliabilityBins`)."""
    probs, labels = _classification(probs, labels)
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise InvalidInputError(f"bins must be an integer >= 1, got {bins!r}")
    confidence = np.max(probs, axis=1)
    correct = (np.argmax(probs, axis=1) == labels).astype(np.float64)
    if adaptive:
        order = np.argsort(confidence, kind="stable")
        groups = np.array_split(order, bins)
        tops = [confidence[g[-1]] if len(g) else np.nan for g in groups]
        edges = np.concatenate([[confidence[order[0]]], tops])
        edges = np.fmax.accumulate(edges)  # an empty bin repeats the edge before it
    else:
        edges = np.linspace(0.0, 1.0, bins + 1)
        index = np.searchsorted(edges[1:-1], confidence, side="left")
        groups = [np.flatnonzero(index == k) for k in range(bins)]
    count = np.array([len(g) for g in groups], dtype=np.int64)
    mean_conf = np.array([confidence[g].mean() if len(g) else np.nan for g in groups])
    accuracy = np.array([correct[g].mean() if len(g) else np.nan for g in groups])
    return ReliabilityBins(edges, mean_conf, accuracy, count)


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS, adaptive: bool = False) -> float:
    """Expected calibration error over ``bins`` equal-width (or, ``adaptive``, equal-mass) confidence bins."""
    return reliability_bins(probs, labels, bins, adaptive).ece


def mce(probs: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS, adaptive: bool = False) -> float:
    """Maximum calibration error over the same bins as :func:`ece`."""
    return reliability_bins(probs, labels, bins, adaptive).mce


# --- out-of-distribution detection -------------------------------------------------------------

def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve of telling OOD (positive) from in-distribution inputs by score."""
    labels, scores = _ood(in_scores, out_scores)
    return float(roc_auc_score(labels, scores))


def aupr(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the precision-recall curve (average precision) with OOD inputs as the positive class."""
    labels, scores = _ood(in_scores, out_scores)
    return float(average_precision_score(labels, scores))


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of in-distribution inputs flagged at the highest threshold that flags ≥ ``tpr`` of the OOD inputs."""
    if isinstance(tpr, bool) or not isinstance(tpr, (int, float)) or not 0 < tpr <= 1:
        raise InvalidInputError(f"tpr must be a number in (0, 1], got {tpr!r}")
    labels, scores = _ood(in_scores, out_scores)
    false_rate, true_rate, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(false_rate[np.searchsorted(true_rate, tpr, side="left")])


# --- selective prediction ----------------------------------------------------------------------

def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> RiskCoverage:
    """Error rate against coverage when keeping the most confident rows (see :class:`RiskCoverage`)."""
    confidence, correct = _selective(confidence, correct)
    order = np.argsort(-confidence, kind="stable")
    sorted_conf, errors = confidence[order], np.cumsum(~correct[order])
    last = np.flatnonzero(np.append(sorted_conf[1:] != sorted_conf[:-1], True))  # last row of each tie group
    kept = last + 1
    return RiskCoverage(sorted_conf[last], kept / len(confidence), errors[last] / kept)


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve: Σ over its points of Δcoverage × risk (the mean over k of the
    risk of the k most confident rows, when confidences are distinct)."""
    curve = risk_coverage(confidence, correct)
    return float(np.sum(np.diff(curve.coverage, prepend=0.0) * curve.risk))


# --- regression --------------------------------------------------------------------------------

def gaussian_nll(mean: np.ndarray, std: np.ndarray, y: np.ndarray) -> float:
    """Mean over rows and targets of ½·log(2πσ²) + (y − μ)²/(2σ²) (nats)."""
    mean, std, y = _regression(mean, std, y)
    variance = np.square(std)
    return float(np.mean(0.5 * np.log(2 * np.pi * variance) + np.square(y - mean) / (2 * variance)))


def rmse(mean: np.ndarray, y: np.ndarray) -> float:
    """Root of the mean squared error over rows and targets."""
    mean, _, y = _regression(mean, None, y)
    return float(np.sqrt(np.mean(np.square(y - mean))))


def interval_coverage(mean: np.ndarray, std: np.ndarray, y: np.ndarray, k: float) -> float:
    """Fraction of values y within μ ± k·σ (bounds included)."""
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not k > 0:
        raise InvalidInputError(f"k must be a positive number, got {k!r}")
    mean, std, y = _regression(mean, std, y)
    return float(np.mean(np.abs(y - mean) <= k * std))


# --- input checks ------------------------------------------------------------------------------

def _array(value: object, name: str, ndim: int, expected: str) -> np.ndarray:
    """``value`` as a non-empty numeric array of ``ndim`` dimensions."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf" or array.ndim != ndim or array.size == 0:
        raise InvalidInputError(f"{name} is {array.dtype} {list(array.shape)}; expected {expected}")
    return array


def _finite(array: np.ndarray, name: str) -> np.ndarray:
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise InvalidInputError(f"{name} holds {int(np.sum(~np.isfinite(values)))} non-finite values; expected finite")
    return values


def _classification(probs: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    """float64 probs [N, C] on the simplex and int64 labels [N] in 0..C-1."""
    p = _finite(_array(probs, "probs", 2, "a non-empty float array [N, C]"), "probs")
    y = _array(labels, "labels", 1, f"an integer array [N] with N = {len(p)}")
    if y.dtype.kind not in "iu" or len(y) != len(p):
        raise InvalidInputError(f"labels is {y.dtype} {list(y.shape)}; expected an integer array [{len(p)}]")
    if y.min() < 0 or y.max() >= p.shape[1]:
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise InvalidInputError(f"labels holds {bad}; expected class ids in 0..{p.shape[1] - 1} (probs has C = "
                                f"{p.shape[1]})")
    sums = p.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if p.min() < -SIMPLEX_TOLERANCE or abs(sums[worst] - 1.0) > SIMPLEX_TOLERANCE:
        raise InvalidInputError(
            f"probs are not rows of the probability simplex: min value {p.min():.6g}, row {worst} sums to "
            f"{sums[worst]:.6g}; expected values >= 0 and rows summing to 1 within {SIMPLEX_TOLERANCE:g}"
        )
    return p, y.astype(np.int64)


def _ood(in_scores: object, out_scores: object) -> tuple[np.ndarray, np.ndarray]:
    """(labels: 0 in-distribution, 1 OOD; scores), both [N_in + N_out]."""
    inside = _finite(_array(in_scores, "in_scores", 1, "a non-empty 1-D array of scores"), "in_scores")
    outside = _finite(_array(out_scores, "out_scores", 1, "a non-empty 1-D array of scores"), "out_scores")
    labels = np.concatenate([np.zeros(len(inside), np.int64), np.ones(len(outside), np.int64)])
    return labels, np.concatenate([inside, outside])


def _selective(confidence: object, correct: object) -> tuple[np.ndarray, np.ndarray]:
    conf = _finite(_array(confidence, "confidence", 1, "a non-empty 1-D array"), "confidence")
    right = _array(correct, "correct", 1, f"a boolean or 0/1 array [{len(conf)}]")
    if len(right) != len(conf) or not np.isin(right, (0, 1)).all():
        raise InvalidInputError(
            f"correct is {right.dtype} {list(right.shape)}; expected a boolean or 0/1 array [{len(conf)}]"
        )
    return conf, right.astype(bool)


def _regression(mean: object, std: object | None, y: object) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """float64 mean, std (> 0) and y, all of one shape [N, D]."""
    mu = _finite(_array(mean, "mean", 2, "a non-empty float array [N, D]"), "mean")
    shape = f"a float array {list(mu.shape)} (the shape of mean)"
    target = _finite(_array(y, "y", 2, shape), "y")
    if target.shape != mu.shape:
        raise InvalidInputError(f"y is {list(target.shape)}; expected {shape}")
    if std is None:
        return mu, None, target
    sigma = _finite(_array(std, "std", 2, shape), "std")
    if sigma.shape != mu.shape:
        raise InvalidInputError(f"std is {list(sigma.shape)}; expected {shape}")
    if not (sigma > 0).all():
        raise InvalidInputError(f"std holds {sigma.min():.6g}; expected standard deviations > 0")
    return mu, sigma, target
