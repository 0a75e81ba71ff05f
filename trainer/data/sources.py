"""Reading a dataset's source file once, with its SHA-256 recorded for provenance."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from dropnet.core.arrayfiles import read_regular_file


@dataclass(frozen=True)
class SourceFile:
    """A file a dataset was read from, as recorded in ``Dataset.describe()``."""

    path: str
    sha256: str
    bytes: int


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def read_source(path: Path, expected: str = "a dataset file") -> tuple[bytes, SourceFile]:
    """The bytes of ``path`` and their :class:`SourceFile` record; :class:`DataError` if it is not a readable
    regular file (:func:`dropnet.core.arrayfiles.read_regular_file`).

    ``expected`` says what the file should be, for the messages ("a .npz archive with arrays x and y").
    """
    data = read_regular_file(path, expected)
    return data, SourceFile(path=str(path), sha256=sha256_hex(data), bytes=len(data))
