"""``dropnet.core.fileio``: atomic writes are durable (file synced before the rename, directory after it)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from dropnet.core import fileio
from dropnet.core.fileio import atomic_write_bytes, fsync_tree


def _record_syncs(monkeypatch: pytest.MonkeyPatch, fail_directories_with: int | None = None) -> list[tuple]:
    """Record ("fsync", inode) and ("replace", target) events; optionally make directory fsyncs fail."""
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        if fail_directories_with is not None and stat.S_ISDIR(info.st_mode):
            raise OSError(fail_directories_with, os.strerror(fail_directories_with))
        real_fsync(fd)
        events.append(("fsync", info.st_ino))

    def replace(src: str | Path, dst: str | Path) -> None:
        real_replace(src, dst)
        events.append(("replace", Path(dst)))

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    monkeypatch.setattr(fileio.os, "replace", replace)
    return events


def test_atomic_write_syncs_the_file_then_renames_then_syncs_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _record_syncs(monkeypatch)
    path = tmp_path / "sub" / "state.json"
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert oct(path.stat().st_mode & 0o777) == oct(fileio.FILE_MODE)
    assert events == [("fsync", path.stat().st_ino), ("replace", path), ("fsync", path.parent.stat().st_ino)]
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_a_directory_that_cannot_be_synced_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = _record_syncs(monkeypatch, fail_directories_with=errno.EINVAL)
    path = tmp_path / "weights.bin"
    atomic_write_bytes(path, b"data")
    assert path.read_bytes() == b"data"
    assert events == [("fsync", path.stat().st_ino), ("replace", path)]


def test_a_failing_file_sync_keeps_the_old_version_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(fileio.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_fsync_tree_syncs_every_file_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pkg" / "nested").mkdir(parents=True)
    files = [tmp_path / "pkg" / "a.onnx", tmp_path / "pkg" / "nested" / "b.json"]
    for file in files:
        file.write_bytes(b"x")
    events = _record_syncs(monkeypatch)
    fsync_tree(tmp_path / "pkg")
    synced = {inode for _, inode in events}
    expected = {p.stat().st_ino for p in [*files, tmp_path / "pkg", tmp_path / "pkg" / "nested"]}
    assert synced == expected and len(events) == len(expected)
