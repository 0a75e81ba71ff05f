"""Train/validation/test splits: seeded stratified hold-outs, and MNIST's last-N validation."""

from __future__ import annotations

import math

import numpy as np

from dropnet.core.errors import ConfigError, DataError
from dropnet.trainer.data.dataset import Split

VAL_DIVISOR = 6
"""Without ``val_size``, 1/VAL_DIVISOR of the non-test examples (rounded down) validate."""


def stratified_holdout(y: np.ndarray, n_holdout: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices ``(keep, holdout)`` with exactly ``n_holdout`` held out, each class in proportion.

    Each class contributes ``count * n_holdout / len(y)`` rows, rounded by largest remainder (ties
    to the smaller class id) so the total is exact; which rows of a class is drawn from ``rng``.
    """
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * n_holdout / len(y)
    take = np.floor(quota).astype(np.int64)
    by_remainder = np.argsort(-(quota - take), kind="stable")
    take[by_remainder[: n_holdout - int(take.sum())]] += 1
    held = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take)]
    holdout = np.sort(np.concatenate(held))
    keep = np.setdiff1d(np.arange(len(y)), holdout, assume_unique=True)
    return keep, holdout


def holdout_splits(
    x: np.ndarray, y: np.ndarray, test_size: float, val_size: int | None, seed: int, source: str
) -> tuple[Split, Split, Split]:
    """(train, val, test): ``ceil(test_size·N)`` stratified test rows, then ``val_size`` stratified
    validation rows (default: 1/6 of the rest, rounded down), all drawn from ``seed``."""
    n = len(y)
    n_test = max(1, math.ceil(test_size * n - 1e-9))
    if n_test >= n:
        raise DataError(
            f"{source}: {n} example(s) are too few to hold out a test fraction of {test_size} and still train; "
            "expected at least 2 examples"
        )
    rng = np.random.default_rng(seed)
    rest, test = stratified_holdout(y, n_test, rng)
    n_val = len(rest) // VAL_DIVISOR if val_size is None else val_size
    _check_val_size(n_val, len(rest), source)
    train, val = stratified_holdout(y[rest], n_val, rng)
    train, val = rest[train], rest[val]
    return _take(x, y, train), _take(x, y, val), _take(x, y, test)


def tail_split(x: np.ndarray, y: np.ndarray, val_size: int, source: str) -> tuple[Split, Split]:
    """(train, val) with the LAST ``val_size`` rows as validation (the paper's MNIST convention)."""
    _check_val_size(val_size, len(y), source)
    cut = len(y) - val_size
    return Split(x[:cut], y[:cut]), Split(x[cut:], y[cut:])


def _check_val_size(val_size: int, available: int, source: str) -> None:
    if not 0 <= val_size < available:
        raise ConfigError(
            f"data.val_size={val_size} does not fit {source}: {available} examples are available for training "
            f"and validation; expected 0 <= val_size < {available}"
        )


def _take(x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> Split:
    return Split(x[rows], y[rows])
