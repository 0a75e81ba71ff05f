"""A failed append to ``metrics.jsonl`` (disk full, permission denied) names the file, keeps the class and errno.

The fault is injected where the operating system reports it: ENOSPC from the file's ``write``,
EACCES from ``open``.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any, NoReturn

import pytest

from dropnet.cli import main
from dropnet.trainer import metrics
from dropnet.trainer.metrics import append_record

RECORD = {"epoch": 1, "train_loss": 0.5, "train_error_dropout": 0.25, "val_error": None, "test_error": 0.125,
          "lr": 0.1, "momentum": 0.5, "seconds": 1.0}


class FullDisk:
    """A file opened for real whose ``write`` fails with ENOSPC, as on a full disk."""

    def __init__(self, file: Any) -> None:
        self.file = file

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fail_writes_after(monkeypatch: pytest.MonkeyPatch, good: int) -> None:
    """Let ``metrics``' first ``good`` opens write normally, then fill the disk."""
    opened: list[int] = []

    def fake_open(*args: Any, **kwargs: Any) -> Any:
        opened.append(1)
        file = open(*args, **kwargs)
        return file if len(opened) <= good else FullDisk(file)

    monkeypatch.setattr(metrics, "open", fake_open, raising=False)


def test_a_full_disk_names_metrics_jsonl_and_keeps_the_errno(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "metrics.jsonl"
    _fail_writes_after(monkeypatch, good=1)
    append_record(path, RECORD)
    with pytest.raises(OSError) as err:
        append_record(path, {**RECORD, "epoch": 2})
    assert type(err.value) is OSError and err.value.errno == errno.ENOSPC
    assert err.value.filename == str(path) and err.value.strerror == os.strerror(errno.ENOSPC)
    assert isinstance(err.value.__cause__, OSError)
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [1]


def test_permission_denied_stays_a_permission_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "metrics.jsonl"

    def denied(*args: object, **kwargs: object) -> NoReturn:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(metrics, "open", denied, raising=False)
    with pytest.raises(PermissionError) as err:
        append_record(path, RECORD)
    assert (err.value.errno, err.value.filename) == (errno.EACCES, str(path))


def test_train_stops_with_one_line_naming_metrics_jsonl_and_resumes_once_there_is_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    argv = ["train", "--data", "digits", "--hidden", "16", "--lr", "1.0", "--device", "cpu", "--epochs", "2",
            "--out", str(run)]
    _fail_writes_after(monkeypatch, good=1)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"dropnet train: error: No space left on device: {run / 'metrics.jsonl'}\n")
    assert "Traceback" not in err
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]

    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
