"""One ``dropnet tune`` process per output directory: an advisory lock on ``OUT/.tune.lock``.

A search marks the trials its storage still lists as running as failed (their process died), which
is only safe when no other process is running trials of the same study into the same directory.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dropnet.core.errors import ConfigError

LOCK_FILE = ".tune.lock"


@contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold the lock of ``out`` (created if missing) for the block; refuse if another process holds it."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another dropnet tune is running with --out {out}; wait for it to finish, or choose another --out"
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock
