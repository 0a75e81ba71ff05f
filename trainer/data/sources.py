"""Reading a dataset's source file once, with its SHA-256 recorded for provenance."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from dropnet.core.errors import DataError


@dataclass(frozen=True)
class SourceFile:
    """A file a dataset was read from, as recorded in ``Dataset.describe()``."""

    path: str
    sha256: str
    bytes: int


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def read_source(path: Path) -> tuple[bytes, SourceFile]:
    """The bytes of ``path`` and their :class:`SourceFile` record; :class:`DataError` if unreadable."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected an existing dataset file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from None
    return data, SourceFile(path=str(path), sha256=sha256_hex(data), bytes=len(data))
