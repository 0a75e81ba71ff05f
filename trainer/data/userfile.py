"""A user's own data: a ``.npz`` archive (arrays ``x`` and ``y``) or a numeric ``.csv`` file.

CSV: one example per row, the label in the last column. The first row is taken as a header
when any of its cells is not a number. Labels must be non-negative integers; the classes are
0..max(label), named by their number.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dropnet.core.arrayfiles import array_names, read_npz
from dropnet.core.errors import DataError
from dropnet.trainer.data.dataset import Dataset, make_dataset
from dropnet.trainer.data.sources import read_source
from dropnet.trainer.data.splits import holdout_splits

log = logging.getLogger(__name__)

SUFFIXES = (".npz", ".csv")
NPZ_EXPECTED = "a .npz archive with arrays x (examples) and y (labels), as numpy.savez(path, x=x, y=y) writes"
CSV_EXPECTED = "a numeric .csv file, one example per row with its label in the last column"
_NUMERIC_KINDS = "biuf"
_LABEL_KINDS = "iuf"


def load_user_file(path: Path, test_size: float, val_size: int | None, seed: int) -> Dataset:
    """The examples of ``path`` with seeded, stratified test and validation hold-outs."""
    npz = path.suffix.lower() == ".npz"
    raw, source = read_source(path, NPZ_EXPECTED if npz else CSV_EXPECTED)
    if npz:
        (x, y), lines = _read_npz(raw, path), None
    else:
        x, y, lines = _read_csv(raw, path)
    x, y = _checked(x, y, path, lines)
    splits = holdout_splits(x, y, test_size, val_size, seed, str(path))
    train_x = splits[0].x
    labels = tuple(str(c) for c in range(int(y.max()) + 1))
    value_range = (float(train_x.min()), float(train_x.max()))
    dataset = make_dataset(str(path), f"user file {path.name}", splits, value_range, labels, (source,))
    log.info("loaded %s: %d train, %d val, %d test", path, *(len(s) for s in splits))
    return dataset


def _read_npz(raw: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``x`` and ``y`` of an .npz archive, read without numpy's pickle path (:mod:`dropnet.core.arrayfiles`)."""

    def x_and_y(names: Sequence[str]) -> list[str]:
        missing = [k for k in ("x", "y") if k not in names]
        if missing:
            raise DataError(
                f"{path}: missing array(s) {missing} (found {array_names(names)}); expected arrays 'x' (examples) "
                "and 'y' (labels), e.g. numpy.savez(path, x=x, y=y)"
            )
        return ["x", "y"]

    x, y = read_npz(raw, path, NPZ_EXPECTED, x_and_y)
    return x, y


def _read_csv(raw: bytes, path: Path) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Features, labels (float64, checked later) and the file line of each row."""
    try:
        reader = csv.reader(io.StringIO(raw.decode("utf-8-sig")))
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); expected a numeric CSV file") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a valid CSV file (line {reader.line_num}: {exc})") from None
    if rows and not all(_is_number(cell) for cell in rows[0][1]):
        log.info("%s: treating line %d as a header row", path, rows[0][0])
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path}: holds no data rows; expected one example per row, label in the last column")
    width = len(rows[0][1])
    if width < 2:
        raise DataError(f"{path}: rows have {width} column; expected feature columns followed by a label column")
    for line, row in rows:
        if len(row) != width:
            raise DataError(f"{path}: line {line} has {len(row)} columns, expected {width} like line {rows[0][0]}")
    cells = np.array([row for _, row in rows])
    try:
        values = cells.astype(np.float64)
    except ValueError:
        line, column, cell = next(
            (line, c, cell) for line, row in rows for c, cell in enumerate(row, start=1) if not _is_number(cell)
        )
        raise DataError(
            f"{path}: line {line}, column {column}: {cell!r} is not a number; expected numeric cells"
        ) from None
    return values[:, :-1], values[:, -1], [line for line, _ in rows]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _checked(x: np.ndarray, y: np.ndarray, path: Path, lines: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """float32 x and int64 y, or a :class:`DataError` naming the first problem (by CSV line if known)."""

    def row_name(i: int) -> str:
        return f"line {lines[i]}" if lines is not None else f"example {i}"

    if x.dtype.kind not in _NUMERIC_KINDS:
        raise DataError(f"{path}: array x has dtype {x.dtype}; expected numbers")
    if y.dtype.kind not in _LABEL_KINDS:
        raise DataError(f"{path}: array y has dtype {y.dtype}; expected non-negative integer labels")
    if x.ndim < 2:
        raise DataError(f"{path}: array x has shape {x.shape}; expected [N, ...] with at least 2 dimensions")
    if y.ndim != 1:
        raise DataError(f"{path}: array y has shape {y.shape}; expected 1-D labels [N]")
    if len(x) != len(y):
        raise DataError(
            f"{path}: x holds {len(x)} examples but y holds {len(y)} labels; expected one label per example"
        )
    if len(y) == 0:
        raise DataError(f"{path}: holds 0 examples; expected at least 2")
    if x[0].size == 0:
        raise DataError(f"{path}: examples of shape {x.shape[1:]} hold no values; expected at least one feature")
    with np.errstate(over="ignore"):
        x = x.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
    if bad.size:
        raise DataError(
            f"{path}: {row_name(bad[0])} holds NaN or infinite values ({bad.size} such example(s), or beyond "
            "float32 range); expected finite numbers"
        )
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~np.isfinite(y) | (y < 0) | (y != np.round(y)))
    if bad.size:
        raise DataError(
            f"{path}: label {y[bad[0]].item()!r} of {row_name(bad[0])} is not a non-negative integer "
            f"({bad.size} such label(s)); expected class ids 0..C-1"
        )
    top = int(y.max())
    if top >= len(y):
        raise DataError(
            f"{path}: label {top} implies {top + 1} classes but there are only {len(y)} examples; "
            "expected class ids 0..C-1 without large gaps"
        )
    return x, y.astype(np.int64)
