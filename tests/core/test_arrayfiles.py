"""``dropnet.core.arrayfiles``: regular files only, and .npy / .npz arrays read without unpickling.

The messages are checked whole where the wording is the point; the CLI tests of the trainer
(tests/trainer/test_cli_data_errors.py) and of ``dropnet predict`` (tests/server/test_cli_predict.py)
check them again through ``dropnet.cli.main``.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib import format as npy_format

from dropnet.core import arrayfiles
from dropnet.core.arrayfiles import array_names, file_kind, read_npy, read_npz, read_regular_file
from dropnet.core.errors import DataError
from tests.hostile_files import OBJECTS, Unpickled

EXPECTED = "an example file"


def npy_bytes(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    """``array`` as numpy writes it to a .npy file (pickles allowed, to build the hostile files)."""
    out = io.BytesIO()
    npy_format.write_array(out, array, version=version, allow_pickle=True)
    return out.getvalue()


def npz_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def everything(names: list[str]) -> list[str]:
    return list(names)


# ---------------------------------------------------------------- which paths are regular files


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 3)
    assert read_regular_file(path, EXPECTED) == bytes(range(256)) * 3


def test_a_missing_path_and_a_dangling_link_are_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        read_regular_file(tmp_path / "absent.npz", EXPECTED)
    assert str(err.value) == f"{tmp_path / 'absent.npz'}: file not found; expected an example file"
    with pytest.raises(DataError) as err:
        read_regular_file(tmp_path / "absent" / "x.npz", EXPECTED)
    assert str(err.value).endswith("x.npz: file not found; expected an example file")
    afile = tmp_path / "afile"
    afile.write_bytes(b"")
    with pytest.raises(DataError, match="file not found; expected"):
        read_regular_file(afile / "x.npz", EXPECTED)  # a file where a directory should be
    link = tmp_path / "link.npz"
    link.symlink_to(tmp_path / "gone.npz")
    with pytest.raises(DataError) as err:
        read_regular_file(link, EXPECTED)
    assert str(err.value) == f"{link}: file not found (a symbolic link to a missing file); expected an example file"


def test_a_directory_is_named_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "images.npz"
    directory.mkdir()
    with pytest.raises(DataError) as err:
        read_regular_file(directory, EXPECTED)
    assert str(err.value) == f"{directory} is a directory; expected an example file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)
    with pytest.raises(DataError) as err:
        read_regular_file(fifo, EXPECTED)  # opening it to read would block without O_NONBLOCK
    assert str(err.value) == f"{fifo} is a named pipe (FIFO); expected an example file"


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_device_is_refused_before_any_read() -> None:
    with pytest.raises(DataError) as err:
        read_regular_file(Path("/dev/zero"), EXPECTED)  # reading it would never end
    assert str(err.value) == "/dev/zero is a character device; expected an example file"


def test_a_file_that_cannot_be_opened_or_read_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.npz"
    path.write_bytes(b"x")

    def denied(*args: object) -> int:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(arrayfiles.os, "open", denied)
    with pytest.raises(DataError) as err:
        read_regular_file(path, EXPECTED)
    assert str(err.value) == f"{path}: cannot be read (Permission denied); expected an example file"


@pytest.mark.parametrize(
    ("mode", "kind"),
    [(stat.S_IFREG, "a regular file"), (stat.S_IFDIR, "a directory"), (stat.S_IFIFO, "a named pipe (FIFO)"),
     (stat.S_IFSOCK, "a socket"), (stat.S_IFCHR, "a character device"), (stat.S_IFBLK, "a block device"),
     (stat.S_IFLNK, "not a regular file")],
)
def test_file_kind_names_each_kind(mode: int, kind: str) -> None:
    assert file_kind(mode | 0o644) == kind


# ---------------------------------------------------------------- .npy


@pytest.mark.parametrize(
    "array",
    [np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.array([[1, 2], [3, 4]], dtype=">i8"),
     np.asfortranarray(np.arange(6.0).reshape(2, 3)), np.array(3.5), np.zeros((0, 5), np.uint8),
     np.array([True, False]), np.array(["ab", "c"])],
    ids=["float32", "big-endian", "fortran", "0-d", "empty", "bool", "unicode"],
)
def test_npy_arrays_read_back_exactly(array: np.ndarray) -> None:
    got = read_npy(npy_bytes(array), Path("a.npy"), EXPECTED)
    assert got.dtype == array.dtype and got.shape == array.shape
    np.testing.assert_array_equal(got, array)
    assert got.flags.writeable


def test_npy_format_2_is_read_and_3_refused() -> None:
    array = np.arange(4.0)
    np.testing.assert_array_equal(read_npy(npy_bytes(array, (2, 0)), Path("a.npy"), EXPECTED), array)
    with pytest.raises(DataError) as err:
        read_npy(npy_bytes(array, (3, 0)), Path("a.npy"), EXPECTED)
    assert str(err.value) == (
        "a.npy: not a readable .npy array (.npy format version (3, 0), expected one of [(1, 0), (2, 0)]); "
        "expected an example file"
    )


def test_random_bytes_and_a_zip_archive_are_not_npy() -> None:
    with pytest.raises(DataError) as err:
        read_npy(np.random.default_rng(0).bytes(4096), Path("r.npy"), EXPECTED)
    assert str(err.value) == (
        "r.npy: not a .npy array (its 4096 bytes do not start with the .npy magic string b'\\x93NUMPY'); "
        "expected an example file"
    )
    with pytest.raises(DataError, match=r"^z\.npy: is a zip archive \(a \.npz\?\), not a single \.npy array; expected"):
        read_npy(npz_bytes({"x.npy": npy_bytes(np.ones(2))}), Path("z.npy"), EXPECTED)


def test_an_object_npy_is_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    raw = npy_bytes(np.array([Unpickled(marker)], dtype=object))
    with pytest.raises(DataError) as err:
        read_npy(raw, Path("o.npy"), EXPECTED)
    assert str(err.value) == f"o.npy: the .npy array holds Python objects (dtype object); {OBJECTS}"
    assert not marker.exists()


def test_a_truncated_npy_names_what_its_header_declares() -> None:
    raw = npy_bytes(np.ones((4, 2), np.float32))
    with pytest.raises(DataError) as err:
        read_npy(raw[:-5], Path("t.npy"), EXPECTED)
    assert str(err.value) == (
        "t.npy: the .npy array is truncated: its header declares shape (4, 2) of float32 (32 bytes of data) but "
        "27 bytes follow; expected an example file"
    )
    with pytest.raises(DataError, match=r"^t\.npy: not a readable \.npy array \(EOF: reading array header"):
        read_npy(raw[:20], Path("t.npy"), EXPECTED)


def _npy_with_header(header: bytes) -> bytes:
    """A version 1.0 .npy file whose header is ``header``, padded as numpy pads it, and no data."""
    header += b" " * ((64 - (len(header) + 11) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def test_a_tiny_npy_claiming_terabytes_is_refused_before_any_allocation() -> None:
    raw = _npy_with_header(b"{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }")
    with pytest.raises(DataError) as err:
        read_npy(raw + bytes(8), Path("big.npy"), EXPECTED)
    assert str(err.value) == (
        "big.npy: the .npy array is truncated: its header declares shape (1099511627776, 1099511627776) of float64 "
        "(9671406556917033397649408 bytes of data) but 8 bytes follow; expected an example file"
    )


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"{" + b"'" * 8000, "(unparsable .npy header: "),  # numpy raises tokenize.TokenError
        (b"{'descr': [(b'a', '<f8')], 'fortran_order': False, 'shape': (4,), }", "(field names must be strings)"),
        (b"{'descr': '<f8', 'fortran_order': False, 'shape': (4,), 'x': " + b"1" * 8000 + b"}",
         "(Cannot parse header: \"{'descr': '<f8', 'fortran_order': False, 'shape': (4,), 'x': 111"),
    ],
    ids=["tokenize-error", "type-error", "long-text"],
)
def test_a_damaged_npy_header_is_one_line_of_bounded_length(header: bytes, reason: str) -> None:
    with pytest.raises(DataError) as err:
        read_npy(_npy_with_header(header), Path("h.npy"), EXPECTED)
    message = str(err.value)
    assert message.startswith(f"h.npy: not a readable .npy array {reason}")
    assert message.endswith("; expected an example file")
    assert "\n" not in message and len(message) < 300


# ---------------------------------------------------------------- .npz


def test_npz_selected_arrays_are_read_in_order_and_others_never_opened(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    x, y = np.arange(6.0).reshape(3, 2), np.array([0, 1, 0])
    members = {"x.npy": npy_bytes(x), "meta.npy": npy_bytes(np.array([Unpickled(marker)], dtype=object)),
               "y.npy": npy_bytes(y)}
    seen: list[list[str]] = []

    def y_then_x(names: list[str]) -> list[str]:
        seen.append(names)
        return ["y", "x"]

    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        got_y, got_x = read_npz(npz_bytes(members, compression), Path("d.npz"), EXPECTED, y_then_x)
        np.testing.assert_array_equal(got_x, x)
        np.testing.assert_array_equal(got_y, y)
    assert seen == [["x", "meta", "y"]] * 2
    assert not marker.exists()


def test_numpy_savez_and_savez_compressed_archives_are_read(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    for save in (np.savez, np.savez_compressed):
        save(tmp_path / "a.npz", x=x)
        (got,) = read_npz((tmp_path / "a.npz").read_bytes(), tmp_path / "a.npz", EXPECTED, everything)
        np.testing.assert_array_equal(got, x)


def test_an_object_member_is_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    raw = npz_bytes({"x.npy": npy_bytes(np.array([Unpickled(marker)] * 3, dtype=object))})
    with pytest.raises(DataError) as err:
        read_npz(raw, Path("o.npz"), EXPECTED, everything)
    assert str(err.value) == f"o.npz: array x.npy holds Python objects (dtype object); {OBJECTS}"
    assert not marker.exists()


def test_npz_that_is_not_a_zip_archive_says_what_it_is() -> None:
    with pytest.raises(DataError) as err:
        read_npz(np.random.default_rng(0).bytes(100), Path("r.npz"), EXPECTED, everything)
    assert str(err.value) == (
        "r.npz: not a .npz archive (its 100 bytes do not start like a zip archive); expected an example file"
    )
    with pytest.raises(DataError) as err:
        read_npz(npy_bytes(np.ones(3)), Path("s.npz"), EXPECTED, everything)
    assert str(err.value) == "s.npz: holds a single .npy array; expected an example file"


def test_a_truncated_npz_and_a_truncated_member_are_told_apart() -> None:
    raw = npz_bytes({"x.npy": npy_bytes(np.ones((4, 4)))})
    with pytest.raises(DataError) as err:
        read_npz(raw[: len(raw) // 2], Path("t.npz"), EXPECTED, everything)
    assert str(err.value) == (
        "t.npz: not a readable .npz archive (File is not a zip file: truncated or damaged); expected an example file"
    )
    cut = npz_bytes({"x.npy": npy_bytes(np.ones((4, 4)))[:-8]})
    with pytest.raises(DataError) as err:
        read_npz(cut, Path("m.npz"), EXPECTED, everything)
    assert str(err.value) == (
        "m.npz: array x.npy is truncated: its header declares shape (4, 4) of float64 (128 bytes of data) but 120 "
        "bytes follow; expected an example file"
    )


def test_a_corrupted_member_is_caught_by_its_checksum() -> None:
    raw = bytearray(npz_bytes({"x.npy": npy_bytes(np.arange(64.0))}))
    raw[200] ^= 0xFF  # inside the stored member's data
    with pytest.raises(DataError, match=r"^c\.npz: not a readable \.npz archive \(Bad CRC-32 for file 'x\.npy'"):
        read_npz(bytes(raw), Path("c.npz"), EXPECTED, everything)


def test_an_encrypted_member_is_refused_by_name() -> None:
    raw = bytearray(npz_bytes({"x.npy": npy_bytes(np.ones(3))}))
    entry = raw.index(b"PK\x01\x02")  # the member's central directory entry; its flags are 8 bytes in
    raw[entry + 8] |= 0x01
    with pytest.raises(DataError) as err:
        read_npz(bytes(raw), Path("e.npz"), EXPECTED, everything)
    assert str(err.value) == "e.npz: array x.npy is encrypted; expected an example file"


def test_a_select_refusal_passes_through_unchanged() -> None:
    def only_x(names: list[str]) -> list[str]:
        raise DataError(f"found {array_names(names)}; expected x")

    with pytest.raises(DataError, match=r"^found \['a', 'b'\]; expected x$"):
        read_npz(npz_bytes({"b.npy": b"", "a.npy": b""}), Path("n.npz"), EXPECTED, only_x)


def test_array_names_are_bounded() -> None:
    assert array_names(["b", "a"]) == "['a', 'b']"
    assert array_names([f"n{i:04d}" for i in range(2000)]) == (
        "['n0000', 'n0001', 'n0002', 'n0003', 'n0004', ... 1995 more]"
    )


# ---------------------------------------------------------------- damaged bytes of every kind


VALID_NPY = npy_bytes(np.arange(12, dtype=np.int32).reshape(3, 4))
VALID_NPZ = npz_bytes({"x.npy": VALID_NPY, "y.npy": npy_bytes(np.arange(3.0))}, zipfile.ZIP_DEFLATED)


def damaged(valid: bytes) -> st.SearchStrategy[bytes]:
    """``valid`` with bytes overwritten, and perhaps cut short."""
    edits = st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), min_size=1, max_size=4)
    cut = st.integers(1, len(valid))

    def apply(args: tuple[list[tuple[int, int]], int]) -> bytes:
        data = bytearray(valid)
        for at, value in args[0]:
            data[at] = value
        return bytes(data[: args[1]])

    return st.tuples(edits, cut).map(apply)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.one_of(damaged(VALID_NPY), st.binary(max_size=300)))
def test_damaged_npy_bytes_give_an_array_or_a_data_error(raw: bytes) -> None:
    try:
        got = read_npy(raw, Path("f.npy"), EXPECTED)
    except DataError as exc:
        assert str(exc).startswith("f.npy") and "\n" not in str(exc)
    else:
        assert got.size * got.itemsize <= len(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.one_of(damaged(VALID_NPZ), st.binary(max_size=300)))
def test_damaged_npz_bytes_give_arrays_or_a_data_error(raw: bytes) -> None:
    try:
        arrays = read_npz(raw, Path("f.npz"), EXPECTED, everything)
    except DataError as exc:
        assert str(exc).startswith("f.npz") and "\n" not in str(exc)
    else:
        assert all(isinstance(a, np.ndarray) for a in arrays)
