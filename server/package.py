"""Read a model package from disk and verify it against its manifest (no onnxruntime here).

The files of a package must be regular files inside it: a symbolic link (even to a file in the same
directory), a FIFO or a device is refused, so nothing outside the package is ever read through it.
The package directory itself may be a symbolic link: it was put into the models directory by whoever
deploys models, and a link to a release directory is a common way to do that. The manifest names
no paths: its ``files`` entries are plain file names, and the reader opens only the fixed names
:data:`MANIFEST_FILE` and :data:`ONNX_FILES`.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dropnet.core.arrayfiles import file_kind
from dropnet.core.errors import ModelPackageError
from dropnet.core.manifest import GRAPH_FILES, MANIFEST_FILE, ONNX_FILES, FileDigest, Manifest, data_digest
from dropnet.core.outputs import Mode

NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
"""Open flags: fail on a symbolic link (ELOOP), and never block opening a FIFO (it is refused once open)."""
PATH_CHARACTERS = ("/", "\\", ":")
"""Characters that make a ``files`` entry of the manifest a path (separators, a Windows drive)."""


@dataclass(frozen=True)
class ModelPackage:
    """A verified package: its manifest and the bytes of both graphs."""

    path: Path
    manifest: Manifest
    graphs: Mapping[Mode, bytes]
    """The serialised graph of each mode."""


def read_package(model_dir: str | Path) -> ModelPackage:
    """Load ``model_dir``, refusing a missing or malformed manifest, missing or altered ONNX files, and any
    package file that is not a regular file (a symbolic link included)."""
    model_dir = Path(model_dir)
    manifest_path = model_dir / MANIFEST_FILE
    if not model_dir.is_dir():
        raise ModelPackageError(
            f"{model_dir} is not a model package: expected a directory holding "
            f"{MANIFEST_FILE}, {' and '.join(ONNX_FILES)}"
        )
    data = _read_regular_file(manifest_path, f"{model_dir} is not a model package: {MANIFEST_FILE} is missing")
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelPackageError(f"{manifest_path}: not valid JSON ({exc})") from None
    _check_file_entries(raw, manifest_path)
    manifest = Manifest.from_dict(raw, str(manifest_path))
    graphs = {
        mode: _read_listed_file(model_dir, file_name, manifest.files[file_name])
        for mode, file_name in GRAPH_FILES.items()
    }
    return ModelPackage(model_dir, manifest, graphs)


def _check_file_entries(raw: Any, manifest_path: Path) -> None:
    """Refuse a ``files`` entry of the manifest that is a path (``..``, absolute, or with a separator)."""
    files = raw.get("files") if isinstance(raw, dict) else None
    for entry in files if isinstance(files, dict) else ():
        if entry in ("", ".", "..") or any(char in entry for char in PATH_CHARACTERS):
            raise ModelPackageError(
                f"{manifest_path}: files entry {entry!r} is a path; expected the plain name of a file inside "
                f"the package, one of {list(ONNX_FILES)}"
            )


def _read_listed_file(model_dir: Path, name: str, expected: FileDigest) -> bytes:
    """The bytes of ``name`` after checking them against the manifest's size and SHA-256."""
    path = model_dir / name
    missing = f"{path} is missing; the manifest lists it ({expected.bytes} bytes)"
    data = _read_regular_file(path, missing, expected.bytes)
    actual = data_digest(data)
    if actual.sha256 != expected.sha256:
        raise ModelPackageError(
            f"{path} has SHA-256 {actual.sha256}, the manifest expects {expected.sha256} (corrupted or replaced?)"
        )
    return data


def _read_regular_file(path: Path, missing: str, size: int | None = None) -> bytes:
    """The bytes of ``path``, which must be a regular file, not a symbolic link (and of ``size`` bytes when given).

    Checked on the open file, so a file swapped for a link between a check and the read is refused too.
    ``missing`` is the message when there is no such file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | NO_FOLLOW)
    except FileNotFoundError:
        raise ModelPackageError(missing) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():
            raise ModelPackageError(
                f"{path} is a symbolic link (to {os.readlink(path)}); expected a regular file inside the package "
                f"(copy the file in instead of linking it)"
            ) from None
        raise ModelPackageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ModelPackageError(f"{path} is {file_kind(info.st_mode)}; expected a regular file inside the package")
        if size is not None and info.st_size != size:
            raise ModelPackageError(
                f"{path} has {info.st_size} bytes, the manifest expects {size} (truncated or replaced?)"
            )
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as file:
        return file.read()
