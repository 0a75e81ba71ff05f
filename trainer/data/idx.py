"""Strict parsing of gzipped IDX files, the format of the original MNIST distribution.

An IDX file is a big-endian uint32 magic number ``0x0000TTDD`` (TT = element type, 0x08 for
unsigned bytes; DD = number of dimensions), one big-endian uint32 per dimension, then the
elements in row-major order.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from dropnet.core.errors import DataError

IMAGES_MAGIC = 2051
"""uint8 elements, 3 dimensions: count, rows, columns."""
LABELS_MAGIC = 2049
"""uint8 elements, 1 dimension: count."""
_KINDS = {IMAGES_MAGIC: "uint8 images [count, rows, cols]", LABELS_MAGIC: "uint8 labels [count]"}


def gunzip(raw: bytes, source: Path) -> bytes:
    """Decompress gzip bytes read from ``source``."""
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{source}: not a readable gzip file ({exc}); expected a gzipped IDX file") from None


def parse_idx(data: bytes, magic: int, source: Path) -> np.ndarray:
    """The uint8 array held by decompressed IDX ``data``, refusing a wrong magic number or length."""
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) >= 4:
        found = int.from_bytes(data[:4], "big")
        if found != magic:
            raise DataError(f"{source}: IDX magic number {found}, expected {magic} ({_KINDS.get(magic, 'IDX')})")
    if len(data) < header:
        raise DataError(
            f"{source}: {len(data)} bytes, shorter than the {header}-byte IDX header; the file is truncated"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims)
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"{source}: {len(data)} bytes after decompression, but its header's dimensions {dims} need {expected}; "
            f"the file is {problem}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)
