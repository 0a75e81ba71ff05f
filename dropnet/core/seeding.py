"""The per-row seeds one MC seed stands for. numpy only: the server imports this module.

mc.onnx draws each row's dropout noise from that row's own int64 seed, so a row's result
depends on its input and its seed alone. One seed S given for a batch of B rows (the ``seed``
input [S]) means the row seeds ``row_seeds(S, B)``: row b gets S XOR (b << 32). Seeds below
2^32 therefore never collide across rows, and the graph derives exactly these seeds in-graph,
so ``mc(x, [S]) == mc(x, row_seeds(S, B))`` bit for bit.
"""

from __future__ import annotations

import numpy as np

from dropnet.core.errors import InvalidInputError

ROW_SHIFT = 32
"""Row b's seed is the batch's seed XOR (b << ROW_SHIFT)."""
MAX_ROWS = 1 << 31
"""b << 32 must stay inside int64."""
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def row_seeds(seed: int, rows: int) -> np.ndarray:
    """int64 [rows]: the seed of each row when a batch of ``rows`` rows is given the one ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not INT64_MIN <= seed <= INT64_MAX:
        raise InvalidInputError(f"seed must be an integer in [-2^63, 2^63), got {seed!r}")
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or not 0 <= rows <= MAX_ROWS:
        raise InvalidInputError(f"rows must be an integer in [0, 2^31], got {rows!r}")
    return np.int64(seed) ^ (np.arange(rows, dtype=np.int64) << ROW_SHIFT)
