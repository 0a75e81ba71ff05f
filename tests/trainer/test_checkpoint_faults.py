"""A checkpoint write that fails (disk full, permission denied) keeps the previous checkpoint and says why.

The faults are injected where the operating system reports them: ENOSPC while the bytes are
written (``write``), EACCES when the temporary file is created in the directory (``mkstemp``).
Training stops with exit 2 and one error line naming the file and the reason; the run resumes
from the untouched previous checkpoint once the cause is gone.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dropnet.cli import main
from dropnet.core.fileio import TEMP_NAME
from dropnet.trainer.checkpoint import load_checkpoint
from dropnet.trainer.models import build_model
from dropnet.trainer.rundir import load_config, read_config

FAST = ["--data", "digits", "--hidden", "16", "--lr", "1.0", "--device", "cpu"]
DISK_FULL = "No space left on device"
DENIED = "Permission denied"


def _records(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _temp_files(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if TEMP_NAME.fullmatch(p.name)]


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("dropnet train: error:")]


def _disk_full_writing(prefix: str, succeed: int = 0) -> Callable[[pathlib.Path, bytes], int]:
    """Path.write_bytes that, for temporary files named ``prefix``... after the first ``succeed`` of them, writes
    half the data, then fails like write(2)."""
    real = pathlib.Path.write_bytes
    matching = 0

    def write_bytes(self: pathlib.Path, data: bytes) -> int:
        nonlocal matching
        matching += self.name.startswith(prefix)
        if not self.name.startswith(prefix) or matching <= succeed:
            return real(self, data)
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write_bytes


def _denied_creating_in(directory_name: str) -> Callable[..., tuple[int, str]]:
    """tempfile.mkstemp that fails like open(2) in a directory the process may not write."""
    real = tempfile.mkstemp

    def mkstemp(suffix: str | None = None, prefix: str | None = None, dir: str | None = None, text: bool = False):
        if dir is not None and Path(dir).name == directory_name:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.path.join(dir, f"{prefix}xxxxxxxx{suffix}"))
        return real(suffix, prefix, dir, text)
    return mkstemp


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 2-epoch run."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    assert main(["train", *FAST, "--epochs", "2", "--out", str(run_dir)]) == 0
    return run_dir


@pytest.fixture
def one_epoch(tmp_path: Path) -> Path:
    """A run that has completed (and checkpointed) epoch 1."""
    run_dir = tmp_path / "run"
    assert main(["train", *FAST, "--epochs", "1", "--out", str(run_dir)]) == 0
    return run_dir


def _loadable_epoch(run_dir: Path) -> int:
    config, spec = load_config(run_dir)
    model = build_model(config.model, spec)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    state = load_checkpoint(run_dir, model, optimizer, torch.Generator())
    assert state is not None
    return state.epochs_done


FAULTS = {
    "disk full writing the tensors": (
        lambda mp: mp.setattr(pathlib.Path, "write_bytes", _disk_full_writing(".epoch-00002.safetensors.")),
        DISK_FULL, "epoch-00002.safetensors",
    ),
    "disk full writing state.json": (
        lambda mp: mp.setattr(pathlib.Path, "write_bytes", _disk_full_writing(".state.json.")),
        DISK_FULL, "state.json",
    ),
    "permission denied in the checkpoint directory": (
        lambda mp: mp.setattr(tempfile, "mkstemp", _denied_creating_in("checkpoint")),
        DENIED, "epoch-00002.safetensors",
    ),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failed_checkpoint_write_keeps_the_previous_one_and_names_file_and_reason(
    fault: str, one_epoch: Path, straight: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    inject, reason, file_name = FAULTS[fault]
    checkpoint = one_epoch / "checkpoint"
    before = _snapshot(checkpoint)
    weights_before = (one_epoch / "model.safetensors").read_bytes()
    capsys.readouterr()

    with monkeypatch.context() as mp:
        inject(mp)
        assert main(["train", "--resume", "--out", str(one_epoch), "--epochs", "2"]) == 2

    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert _error_lines(err) == [
        f"dropnet train: error: cannot write the checkpoint of epoch 2: {reason}: {checkpoint / file_name}; the "
        f"previous checkpoint in {checkpoint} is unchanged. Free space or fix the permissions, then continue with: "
        f"dropnet train --resume --out {one_epoch}"
    ]
    assert _snapshot(checkpoint) == before  # the uncommitted tensors of epoch 2 are gone too
    assert (one_epoch / "model.safetensors").read_bytes() == weights_before
    assert _temp_files(one_epoch) == []
    assert _loadable_epoch(one_epoch) == 1

    assert main(["train", "--resume", "--out", str(one_epoch), "--epochs", "2"]) == 0
    assert _records(one_epoch) == _records(straight)
    assert read_config(one_epoch)["final_metrics"]["test_error"] == read_config(straight)["final_metrics"]["test_error"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_checkpoint_directory_is_reported(one_epoch: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = one_epoch / "checkpoint"
    before = _snapshot(checkpoint)
    checkpoint.chmod(0o555)
    try:
        assert main(["train", "--resume", "--out", str(one_epoch), "--epochs", "2"]) == 2
    finally:
        checkpoint.chmod(0o755)
    assert _error_lines(capsys.readouterr().err)[0].startswith(
        f"dropnet train: error: cannot write the checkpoint of epoch 2: {DENIED}: {checkpoint / 'epoch-00002.safetensors'};"
    )
    assert _snapshot(checkpoint) == before and _temp_files(one_epoch) == []


def test_a_failed_write_of_the_best_weights_names_the_file_and_resume_repairs_it(
    one_epoch: Path, straight: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    assert read_config(straight)["final_metrics"]["best_epoch"] == 2  # so epoch 2 writes model.safetensors
    weights_before = (one_epoch / "model.safetensors").read_bytes()
    capsys.readouterr()
    with monkeypatch.context() as mp:
        # the first write is the resume's rewrite of epoch 1's weights, the second epoch 2's
        mp.setattr(pathlib.Path, "write_bytes", _disk_full_writing(".model.safetensors.", succeed=1))
        assert main(["train", "--resume", "--out", str(one_epoch), "--epochs", "2"]) == 2
    assert _error_lines(capsys.readouterr().err) == [
        f"dropnet train: error: {DISK_FULL}: {one_epoch / 'model.safetensors'}"
    ]
    assert (one_epoch / "model.safetensors").read_bytes() == weights_before and _temp_files(one_epoch) == []
    assert _loadable_epoch(one_epoch) == 2  # the checkpoint was committed before the weights' write

    assert main(["train", "--resume", "--out", str(one_epoch), "--epochs", "2"]) == 0
    ours, theirs = load_file(str(one_epoch / "model.safetensors")), load_file(str(straight / "model.safetensors"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

