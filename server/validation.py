"""Checks of inference inputs against a model's input spec; each failure says what was expected."""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

from dropnet.core.errors import InvalidInputError, ResourceExhaustedError
from dropnet.core.manifest import InputSpec
from dropnet.core.seeding import INT64_MAX, INT64_MIN

_NUMERIC_KINDS = "fiu"  # float, signed and unsigned int; bool, complex, strings and objects are refused
_INTEGER_KINDS = "iu"


def as_batch(x: Any, spec: InputSpec, max_rows: int | None = None) -> np.ndarray:
    """``x`` as a contiguous array [B, *spec.shape] of ``spec.dtype`` (a single example gives B = 1).

    A float input takes any real numbers and refuses what is not finite in its dtype; an integer
    input (e.g. token ids) takes integers within ``spec.value_range``. ``max_rows`` bounds B; it is
    checked on the shape, before any value is converted or inspected. Rows too large to convert in
    memory are a ResourceExhaustedError.
    """
    shape = tuple(spec.shape)
    expected = f"(batch, {', '.join(map(str, shape))}) or {shape}"
    try:
        array = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"x is not a rectangular numeric array ({exc}); expected shape {expected}") from None
    kinds, numbers = (_INTEGER_KINDS, "integers") if spec.is_integer else (_NUMERIC_KINDS, "float or integer numbers")
    if array.dtype.kind not in kinds:
        raise InvalidInputError(f"x has dtype {array.dtype}; expected {numbers} (converted to {spec.dtype})")
    if array.shape == shape:
        array = array[np.newaxis]
    elif array.shape[1:] != shape:
        raise InvalidInputError(f"x has shape {array.shape}; expected {expected}")
    if array.shape[0] < 1:
        raise InvalidInputError(f"x has shape {array.shape}: an empty batch; expected at least one row of {shape}")
    if max_rows is not None and array.shape[0] > max_rows:
        raise InvalidInputError(f"x has {array.shape[0]} rows; expected at most {max_rows} rows per request")
    try:
        return _integers(array, spec) if spec.is_integer else _finite(array, spec.dtype)
    except MemoryError:
        needed = array.size * np.dtype(spec.dtype).itemsize
        raise ResourceExhaustedError(
            f"x has shape {array.shape}: {needed} bytes as {spec.dtype}, more than this process can allocate; "
            "expected fewer rows"
        ) from None


def _finite(array: np.ndarray, dtype: str) -> np.ndarray:
    """``array`` as ``dtype``, refused if a value is not finite there."""
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow or a signalling NaN is refused below
        batch = np.ascontiguousarray(array, dtype=dtype)
    bad = int(batch.size - np.count_nonzero(np.isfinite(batch)))
    if bad:
        raise InvalidInputError(
            f"x holds {bad} non-finite value(s) (NaN, inf, or beyond the {dtype} range); expected finite numbers"
        )
    return batch


def _integers(array: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``array`` as ``spec.dtype``, refused if a value lies outside ``spec.value_range``."""
    low, high = (int(bound) for bound in spec.value_range)
    smallest, largest = int(array.min()), int(array.max())
    if smallest < low or largest > high:
        raise InvalidInputError(
            f"x holds integers in {smallest}..{largest}; expected integers in {low}..{high} (the input's value_range)"
        )
    return np.ascontiguousarray(array, dtype=spec.dtype)


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
