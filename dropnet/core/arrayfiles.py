"""Reading a user's data file safely: one regular file, and ``.npy`` / ``.npz`` arrays without pickles.

Shared by ``dropnet train`` / ``evaluate`` (the trainer's data files) and ``dropnet predict``
(its input files). Every refusal is a :class:`~dropnet.core.errors.DataError` naming the file,
what is wrong with it and what was expected:

- :func:`read_regular_file` tells a missing path, a directory, a device, pipe or socket and an
  unreadable file apart, and never blocks on a pipe;
- :func:`read_npy` and :func:`read_npz` never take numpy's pickle path: each array's ``.npy``
  header is read first, and an object array (whose loading would unpickle, i.e. run, code from the
  file) is refused before any of its data is read; an array whose header declares more data than
  the file holds (a truncated file, or a few bytes claiming terabytes) is refused before any array
  is allocated.
"""

from __future__ import annotations

import io
import math
import os
import stat
import tokenize
import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

from dropnet.core.errors import DataError, quoted_list

NPY_MAGIC = b"\x93NUMPY"
"""First bytes of a ``.npy`` array."""
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
"""First bytes of a zip archive (``.npz``): a local file header, or (no members) the end-of-directory record."""
OBJECT_ARRAYS_REFUSED = (
    "expected numeric arrays (object arrays are refused: loading them would unpickle, i.e. run, code from the file)"
)
_NPY_HEADERS = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
"""Header readers of the .npy format versions numpy writes for numeric arrays."""
_UNREADABLE = (OSError, ValueError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error)
"""What zipfile and numpy's .npy reader raise for damaged bytes."""
_ENCRYPTED = 0x1
"""Bit of a zip member's flags that marks it encrypted (zipfile would raise RuntimeError asking for a password)."""
_REASON_CHARACTERS = 200
"""Most characters of a library's error text a message repeats (numpy's quotes a damaged header)."""
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
_NO_BLOCKING = getattr(os, "O_NONBLOCK", 0)
"""Opening a named pipe must not wait for a writer: it is refused once open."""

NpzSelect = Callable[[Sequence[str]], Sequence[str]]
"""Picks the arrays to read from an archive's array names (or raises :class:`DataError` naming what is missing)."""


def file_kind(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, for messages: "a regular file", "a directory", "a socket", ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_regular_file(path: Path, expected: str) -> bytes:
    """The bytes of ``path``, which must be a regular file; ``expected`` says what it should hold.

    A missing path (or a symbolic link to one), a directory, a device, pipe or socket, and a file
    that cannot be read are refused, each in its own words, e.g. ``data is a directory; expected
    a .npz archive ...``. The kind is checked on the open file, so a path swapped between a check
    and the read cannot slip through.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NO_BLOCKING)
    except (FileNotFoundError, NotADirectoryError):
        link = " (a symbolic link to a missing file)" if path.is_symlink() else ""
        raise DataError(f"{path}: file not found{link}; expected {expected}") from None
    except IsADirectoryError:  # where a directory cannot be opened at all
        raise DataError(f"{path} is a directory; expected {expected}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); expected {expected}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DataError(f"{path} is {file_kind(mode)}; expected {expected}")
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with file:
        try:
            return file.read()
        except OSError as exc:
            raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); expected {expected}") from None


def read_npy(raw: bytes, path: Path, expected: str) -> np.ndarray:
    """The array that the ``.npy`` bytes ``raw`` (read from ``path``) hold; ``expected`` is for messages."""
    if raw.startswith(ZIP_MAGIC):
        raise DataError(f"{path}: is a zip archive (a .npz?), not a single .npy array; expected {expected}")
    if not raw.startswith(NPY_MAGIC):
        raise DataError(
            f"{path}: not a .npy array (its {len(raw)} bytes do not start with the .npy magic string "
            f"{NPY_MAGIC!r}); expected {expected}"
        )
    try:
        return _read_array(io.BytesIO(raw), f"{path}: the .npy array", expected)
    except _UNREADABLE as exc:
        raise DataError(f"{path}: not a readable .npy array ({_reason(exc)}); expected {expected}") from None


def read_npz(raw: bytes, path: Path, expected: str, select: NpzSelect) -> list[np.ndarray]:
    """The arrays of the ``.npz`` bytes ``raw`` (read from ``path``) that ``select`` picks, in its order.

    ``select`` gets the archive's array names (member names without ``.npy``, as ``numpy.load``
    names them) and returns those to read; the other members are not read at all.
    """
    if raw.startswith(NPY_MAGIC):
        raise DataError(f"{path}: holds a single .npy array; expected {expected}")
    if not raw.startswith(ZIP_MAGIC):
        raise DataError(
            f"{path}: not a .npz archive (its {len(raw)} bytes do not start like a zip archive); expected {expected}"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            arrays = []
            for name in select(list(members)):
                info = archive.getinfo(members[name])
                if info.flag_bits & _ENCRYPTED:
                    raise DataError(f"{path}: array {info.filename} is encrypted; expected {expected}")
                with archive.open(info) as file:
                    arrays.append(_read_array(file, f"{path}: array {info.filename}", expected))
            return arrays
    except zipfile.BadZipFile as exc:
        raise DataError(
            f"{path}: not a readable .npz archive ({_reason(exc)}: truncated or damaged); expected {expected}"
        ) from None
    except _UNREADABLE as exc:
        raise DataError(f"{path}: not a readable .npz archive ({_reason(exc)}); expected {expected}") from None


def array_names(names: Sequence[str]) -> str:
    """An archive's array names for a message, bounded in length however many there are."""
    return quoted_list(sorted(names))


def _read_array(file: IO[bytes], subject: str, expected: str) -> np.ndarray:
    """The array of the ``.npy`` stream ``file``; an object array is refused from its header alone.

    ``subject`` names the array in messages ("data.npz: array x.npy"). The data is read to its end,
    so that a zip member's checksum is verified.
    """
    shape, fortran_order, dtype = _read_header(file)
    if dtype.hasobject:
        raise DataError(f"{subject} holds Python objects (dtype {dtype}); {OBJECT_ARRAYS_REFUSED}")
    data = bytearray(file.read())
    needed = math.prod(shape) * dtype.itemsize
    if len(data) < needed:
        raise DataError(
            f"{subject} is truncated: its header declares shape {shape} of {dtype} ({needed} bytes of data) but "
            f"{len(data)} bytes follow; expected {expected}"
        )
    return np.ndarray(shape, dtype, buffer=data, order="F" if fortran_order else "C")


def _read_header(file: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype from the ``.npy`` header at the start of ``file``; ``ValueError`` if
    it is malformed.

    numpy's parser of the header (a Python literal) raises more than ``ValueError`` for some damaged
    headers, and warns about others; here each is one ``ValueError``, and nothing is printed.
    """
    version = npy_format.read_magic(file)
    read_header = _NPY_HEADERS.get(version)
    if read_header is None:
        raise ValueError(f".npy format version {version}, expected one of {list(_NPY_HEADERS)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # Python < 3.12 warns so of bad escapes
            shape, fortran_order, dtype = read_header(file)
    except (TypeError, SyntaxError, tokenize.TokenError) as exc:
        raise ValueError(f"unparsable .npy header: {exc.args[0] if exc.args else type(exc).__name__}") from None
    if any(n < 0 for n in shape):
        raise ValueError(f"the .npy header declares shape {shape}; expected dimensions of 0 or more")
    return shape, fortran_order, dtype


def _reason(exc: BaseException) -> str:
    """The first line of a library's error text, cut to a bounded length."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= _REASON_CHARACTERS else f"{text[:_REASON_CHARACTERS]}..."
