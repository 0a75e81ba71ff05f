"""The quality metrics against values computed by hand on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dropnet.core.errors import InvalidInputError
from dropnet.quality import metrics

# Four rows, three classes: argmax [0, 1, 2, 2] against labels [0, 0, 2, 1] (rows 1 and 3 wrong);
# confidences [0.7, 0.5, 0.8, 0.4].
PROBS = np.array([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
LABELS = np.array([0, 0, 2, 1])


def binary(confidence: list[float], correct: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Rows [c, 1 − c] (c > 0.5, so class 0 is predicted), labelled 0 where correct, else 1."""
    c = np.array(confidence)
    return np.stack([c, 1 - c], axis=1), np.array([0 if ok else 1 for ok in correct])


def test_error_nll_and_brier() -> None:
    assert metrics.error_rate(PROBS, LABELS) == 0.5
    assert metrics.nll(PROBS, LABELS) == pytest.approx(-(math.log(0.7) + math.log(0.4) + math.log(0.8)
                                                         + math.log(0.3)) / 4)
    # Σ_c (p_c − onehot_c)² per row: 0.09+0.04+0.01, 0.36+0.25+0.01, 0.01+0.01+0.04, 0.09+0.49+0.16
    assert metrics.brier(PROBS, LABELS) == pytest.approx((0.14 + 0.62 + 0.06 + 0.74) / 4)


def test_nll_floors_a_zero_probability_at_the_smallest_normal_float32() -> None:
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert metrics.nll(probs, np.array([1, 0])) == pytest.approx((-math.log(metrics.TINY) + math.log(2)) / 2)


def test_equal_width_bins_put_a_confidence_on_an_edge_in_the_lower_bin() -> None:
    bins = metrics.reliability_bins(PROBS, LABELS, bins=2)
    # (0, 0.5] holds rows 1 (0.5) and 3 (0.4), both wrong; (0.5, 1] rows 0 and 2, both right.
    np.testing.assert_allclose(bins.edges, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(bins.count, [2, 2])
    np.testing.assert_allclose(bins.confidence, [0.45, 0.75])
    np.testing.assert_allclose(bins.accuracy, [0.0, 1.0])
    assert metrics.ece(PROBS, LABELS, bins=2) == pytest.approx(0.5 * 0.45 + 0.5 * 0.25)
    assert metrics.mce(PROBS, LABELS, bins=2) == pytest.approx(0.45)


def test_empty_bins_are_nan_and_weigh_nothing() -> None:
    bins = metrics.reliability_bins(PROBS, LABELS, bins=10)
    np.testing.assert_array_equal(bins.count, [0, 0, 0, 1, 1, 0, 1, 1, 0, 0])
    assert np.isnan(bins.confidence[0]) and np.isnan(bins.accuracy[0])
    # Every row alone in its bin: ECE is the mean of |correct − confidence|.
    assert bins.ece == pytest.approx((0.3 + 0.5 + 0.2 + 0.4) / 4)
    assert bins.mce == pytest.approx(0.5)


def test_adaptive_bins_hold_equal_numbers_of_the_sorted_confidences() -> None:
    probs, labels = binary([0.65, 0.99, 0.55, 0.9, 0.6, 0.95], [1, 0, 1, 1, 0, 1])
    # Equal width (2 bins): all six in (0.5, 1]: confidence 4.64/6, accuracy 4/6.
    assert metrics.ece(probs, labels, bins=2) == pytest.approx(abs(4.64 / 6 - 4 / 6))
    # Equal mass: {0.55, 0.6, 0.65} (2 of 3 right, mean 0.6) and {0.9, 0.95, 0.99} (2 of 3 right, mean 2.84/3).
    bins = metrics.reliability_bins(probs, labels, bins=2, adaptive=True)
    np.testing.assert_allclose(bins.edges, [0.55, 0.65, 0.99])
    np.testing.assert_array_equal(bins.count, [3, 3])
    np.testing.assert_allclose(bins.confidence, [0.6, 2.84 / 3])
    np.testing.assert_allclose(bins.accuracy, [2 / 3, 2 / 3])
    gaps = [2 / 3 - 0.6, 2.84 / 3 - 2 / 3]
    assert metrics.ece(probs, labels, bins=2, adaptive=True) == pytest.approx(np.mean(gaps))
    assert metrics.mce(probs, labels, bins=2, adaptive=True) == pytest.approx(gaps[1])


def test_adaptive_bins_beyond_the_rows_are_empty() -> None:
    bins = metrics.reliability_bins(PROBS, LABELS, bins=6, adaptive=True)
    np.testing.assert_array_equal(bins.count, [1, 1, 1, 1, 0, 0])
    np.testing.assert_allclose(bins.edges, [0.4, 0.4, 0.5, 0.7, 0.8, 0.8, 0.8])
    assert bins.ece == pytest.approx((0.3 + 0.5 + 0.2 + 0.4) / 4)


# In-distribution scores 0.1..0.4, OOD 0.35..0.7: 15 of the 16 (OOD, in) pairs are ordered.
IN_SCORES = np.array([0.1, 0.2, 0.3, 0.4])
OUT_SCORES = np.array([0.35, 0.5, 0.6, 0.7])


def test_auroc_takes_ood_as_the_positive_class() -> None:
    assert metrics.auroc(IN_SCORES, OUT_SCORES) == pytest.approx(15 / 16)
    assert metrics.auroc(OUT_SCORES, IN_SCORES) == pytest.approx(1 / 16)
    assert metrics.auroc(np.array([0.5]), np.array([0.5])) == pytest.approx(0.5)


def test_aupr_is_the_average_precision_of_the_ood_inputs() -> None:
    # Ranked: O O O I O I I I; recall steps of 1/4 at precisions 1, 1, 1 and 4/5.
    assert metrics.aupr(IN_SCORES, OUT_SCORES) == pytest.approx(0.25 * (1 + 1 + 1 + 0.8))


def test_fpr_at_tpr_is_the_in_distribution_fraction_flagged_at_that_ood_recall() -> None:
    # Flagging all four OOD inputs needs a threshold <= 0.35, which flags the in-distribution 0.4.
    assert metrics.fpr_at_tpr(IN_SCORES, OUT_SCORES) == pytest.approx(0.25)
    assert metrics.fpr_at_tpr(IN_SCORES, OUT_SCORES, tpr=0.5) == 0.0
    assert metrics.fpr_at_tpr(IN_SCORES, OUT_SCORES, tpr=1.0) == pytest.approx(0.25)
    assert metrics.fpr_at_tpr(OUT_SCORES, IN_SCORES) == 1.0


def test_risk_coverage_keeps_the_most_confident_rows() -> None:
    curve = metrics.risk_coverage(np.array([0.6, 0.9, 0.7, 0.8]), np.array([0, 1, 1, 0]))
    np.testing.assert_allclose(curve.threshold, [0.9, 0.8, 0.7, 0.6])
    np.testing.assert_allclose(curve.coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve.risk, [0.0, 0.5, 1 / 3, 0.5])
    assert metrics.aurc(np.array([0.6, 0.9, 0.7, 0.8]), np.array([0, 1, 1, 0])) == pytest.approx(
        (0 + 0.5 + 1 / 3 + 0.5) / 4
    )


def test_risk_coverage_keeps_or_drops_equal_confidences_together_whatever_their_order() -> None:
    for confidence, correct in (([0.9, 0.9, 0.5], [True, False, True]), ([0.9, 0.5, 0.9], [False, True, True])):
        curve = metrics.risk_coverage(np.array(confidence), np.array(correct))
        np.testing.assert_allclose(curve.coverage, [2 / 3, 1.0])
        np.testing.assert_allclose(curve.risk, [0.5, 1 / 3])
        assert metrics.aurc(np.array(confidence), np.array(correct)) == pytest.approx(2 / 3 * 0.5 + 1 / 3 * 1 / 3)


MEAN = np.array([[0.0], [1.0]])
STD = np.array([[1.0], [2.0]])
Y = np.array([[1.0], [1.0]])


def test_regression_metrics() -> None:
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    # Row 0: ½log(2π) + 1/2; row 1: ½log(2π·4) + 0.
    assert metrics.gaussian_nll(MEAN, STD, Y) == pytest.approx((half_log_2pi + 0.5 + half_log_2pi + math.log(2)) / 2)
    assert metrics.rmse(MEAN, Y) == pytest.approx(math.sqrt(0.5))
    assert metrics.interval_coverage(MEAN, STD, Y, 1) == 1.0  # |1 − 0| = 1σ: the bound is inside
    assert metrics.interval_coverage(MEAN, STD, Y, 0.5) == 0.5


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: metrics.nll(PROBS[:, :2], np.array([0, 0, 1, 1])), "row 2 sums to 0.2; expected values >= 0"),
        (lambda: metrics.nll(PROBS, LABELS[:3]), "labels is int64 [3]; expected an integer array [4]"),
        (lambda: metrics.nll(PROBS, np.array([0, 0, 3, 1])), "labels holds 3; expected class ids in 0..2"),
        (lambda: metrics.nll(PROBS, LABELS.astype(float)), "labels is float64"),
        (lambda: metrics.brier(np.zeros((0, 3)), np.zeros(0, int)), "probs is float64 [0, 3]"),
        (lambda: metrics.ece(PROBS[0], LABELS), "probs is float64 [3]; expected a non-empty float array [N, C]"),
        (lambda: metrics.ece(PROBS, LABELS, bins=0), "bins must be an integer >= 1"),
        (lambda: metrics.auroc(np.array([]), OUT_SCORES), "in_scores is float64 [0]"),
        (lambda: metrics.auroc(IN_SCORES, np.array([0.1, np.nan])), "out_scores holds 1 non-finite values"),
        (lambda: metrics.fpr_at_tpr(IN_SCORES, OUT_SCORES, tpr=0), "tpr must be a number in (0, 1]"),
        (lambda: metrics.aurc(np.array([0.5, 0.6]), np.array([1])), "correct is int64 [1]"),
        (lambda: metrics.rmse(MEAN, Y[:1]), "y is [1, 1]; expected a float array [2, 1]"),
        (lambda: metrics.gaussian_nll(MEAN, -STD, Y), "std holds -2; expected standard deviations > 0"),
        (lambda: metrics.interval_coverage(MEAN, STD, Y, 0), "k must be a positive number"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(call, named: str) -> None:
    with pytest.raises(InvalidInputError) as error:
        call()
    assert named in str(error.value)
