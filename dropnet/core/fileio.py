"""Atomic, durable file writes: write a temporary file in the same directory, sync it, then rename.

A reader never sees a half-written file, and a crash (of the process or of the machine) leaves
either the previous version or the new one. The policy, shared by every writer in the project:
fsync the new file's data before the rename, and fsync the directory after it so that the rename
itself survives a power cut (best effort where the platform cannot sync a directory).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_MODE = 0o644
"""Permissions of written files (mkstemp's own 0600 would hide artifacts from other users)."""
_NO_DIRECTORY_FSYNC = (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES, errno.EPERM, errno.EISDIR)
"""errno values of platforms and file systems that cannot open or fsync a directory."""


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, fsync ``tmp_path``, rename it to ``path``, then fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, FILE_MODE)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_file(path: str | Path) -> None:
    """Flush a written file's data and metadata to stable storage."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (creations, renames) to stable storage.

    Best effort: where the platform cannot open or sync a directory (Windows, some network file
    systems) this logs at debug level and returns; any other error is raised.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        if exc.errno not in _NO_DIRECTORY_FSYNC:
            raise
        log.debug("cannot open directory %s to sync it: %s", path, exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIRECTORY_FSYNC:
            raise
        log.debug("cannot sync directory %s: %s", path, exc)
    finally:
        os.close(fd)


def fsync_tree(path: str | Path) -> None:
    """fsync every file under directory ``path``, then each directory, deepest first."""
    for root, _, files in os.walk(path, topdown=False):
        for name in files:
            fsync_file(Path(root) / name)
        fsync_dir(root)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path, error: type[Exception]) -> Any:
    """Parse the JSON file ``path``; an unreadable or malformed file raises ``error`` naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
