"""Checks of inference inputs against a model's manifest; each failure says what was expected."""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

from dropnet.core.errors import InvalidInputError
from dropnet.core.seeding import INT64_MAX, INT64_MIN

_NUMERIC_KINDS = "fiu"  # float, signed and unsigned int; bool, complex, strings and objects are refused


def as_batch(x: Any, shape: tuple[int, ...], max_rows: int | None = None) -> np.ndarray:
    """``x`` as a contiguous float32 array [B, *shape] (a single example of ``shape`` gives B = 1).

    ``max_rows`` bounds B; it is checked on the shape, before any value is converted or inspected.
    """
    expected = f"(batch, {', '.join(map(str, shape))}) or {tuple(shape)}"
    try:
        array = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"x is not a rectangular numeric array ({exc}); expected shape {expected}") from None
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise InvalidInputError(f"x has dtype {array.dtype}; expected float or integer numbers (converted to float32)")
    if array.shape == tuple(shape):
        array = array[np.newaxis]
    elif array.shape[1:] != tuple(shape):
        raise InvalidInputError(f"x has shape {array.shape}; expected {expected}")
    if array.shape[0] < 1:
        raise InvalidInputError(
            f"x has shape {array.shape}: an empty batch; expected at least one row of {tuple(shape)}"
        )
    if max_rows is not None and array.shape[0] > max_rows:
        raise InvalidInputError(f"x has {array.shape[0]} rows; expected at most {max_rows} rows per request")
    with np.errstate(over="ignore"):
        batch = np.ascontiguousarray(array, dtype=np.float32)
    bad = int(batch.size - np.count_nonzero(np.isfinite(batch)))
    if bad:
        raise InvalidInputError(
            f"x holds {bad} non-finite value(s) (NaN, inf, or beyond the float32 range); expected finite numbers"
        )
    return batch


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as a Python int if it is an integer (not bool) in ``low..high``, else InvalidInputError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidInputError(f"{name} must be an integer in {low}..{high}, got {value!r} ({type(value).__name__})")
    if not low <= int(value) <= high:
        raise InvalidInputError(f"{name} must be an integer in {low}..{high}, got {int(value)}")
    return int(value)


def check_seed(seed: Any) -> int:
    """A seed as a Python int in the int64 range."""
    return check_int("seed", seed, INT64_MIN, INT64_MAX)


def resolve_seed(seed: Any) -> int:
    """The checked ``seed``, or a fresh one from OS entropy when it is None (reported back to the caller)."""
    return secrets.randbits(63) if seed is None else check_seed(seed)


def check_row_seeds(row_seeds: Any, rows: int) -> np.ndarray:
    """Per-row seeds as a contiguous int64 array [rows]."""
    seeds = np.asarray(row_seeds)
    if seeds.dtype.kind not in "iu" or seeds.shape != (rows,):
        raise InvalidInputError(f"row_seeds has dtype {seeds.dtype} and shape {seeds.shape}; expected int64 ({rows},)")
    if seeds.dtype.kind == "u" and seeds.size and int(seeds.max()) > INT64_MAX:
        raise InvalidInputError(f"row_seeds holds {int(seeds.max())}; expected values in the int64 range")
    return np.ascontiguousarray(seeds, dtype=np.int64)
