"""Atomic, durable file writes: write a temporary file in the same directory, sync it, then rename.

A reader never sees a half-written file, and a crash (of the process or of the machine) leaves
either the previous version or the new one. The policy, shared by every writer in the project:
fsync the new file's data before the rename, and fsync the directory after it so that the rename
itself survives a power cut (best effort where the platform cannot sync a directory).

A write that fails removes its temporary file and raises an ``OSError`` naming the file being
written (not the temporary). A process killed mid-write leaves its temporary file behind:
``.NAME.XXXXXXXX.tmp`` beside ``NAME``; :func:`remove_temp_files` deletes such leftovers.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_MODE = 0o644
"""Permissions of written files (mkstemp's own 0600 would hide artifacts from other users)."""
_NO_DIRECTORY_FSYNC = (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES, errno.EPERM, errno.EISDIR)
"""errno values of platforms and file systems that cannot open or fsync a directory."""
TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")
"""Name of :func:`atomic_write`'s temporary file for ``target``: ``tempfile.mkstemp`` with prefix
``.TARGET.`` and suffix ``.tmp`` puts 8 characters of ``a-z0-9_`` between them."""


def naming(exc: OSError, path: Path) -> OSError:
    """``exc`` (which has an errno) as the same OSError subclass naming ``path``, e.g. the file a write was for
    rather than its temporary file."""
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, fsync ``tmp_path``, rename it to ``path``, then fsync the directory.

    On failure the temporary file is removed and an ``OSError`` is re-raised (same class and
    errno) with ``path`` as its file name, so the message names the file that was being written.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise naming(exc, path) from exc
        raise
    fsync_dir(path.parent)


def remove_temp_files(directory: str | Path, targets: Iterable[str]) -> list[Path]:
    """Delete the temporary files that interrupted :func:`atomic_write` calls left in ``directory``.

    Only regular files (not symlinks) named like :data:`TEMP_NAME` for a target matching one of
    ``targets`` (file names or ``fnmatch`` patterns, e.g. ``"epoch-*.safetensors"``) are removed;
    anything else is left alone. Returns the removed paths, sorted; a missing directory has none.
    """
    patterns = tuple(targets)
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    removed = []
    for entry in entries:
        match = TEMP_NAME.fullmatch(entry.name)
        if (
            match is not None
            and any(fnmatch.fnmatchcase(match["target"], pattern) for pattern in patterns)
            and entry.is_file(follow_symlinks=False)
        ):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return sorted(removed)


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


def json_bytes(obj: Any) -> bytes:
    """``obj`` as the indented JSON text, ending in a newline, that every JSON file dropnet writes holds."""
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, json_bytes(obj))


def read_json(path: Path, error: type[Exception]) -> Any:
    """Parse the JSON file ``path``; an unreadable or malformed file raises ``error`` naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
