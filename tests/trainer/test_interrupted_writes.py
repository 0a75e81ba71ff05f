"""A killed run's temporary files: ``dropnet train --resume`` removes its own leftovers, and nothing else."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dropnet.cli import main
from dropnet.core.fileio import TEMP_NAME, atomic_write_bytes, remove_temp_files
from dropnet.trainer.rundir import read_config

FAST = ["--data", "digits", "--hidden", "16", "--lr", "1.0", "--device", "cpu"]

LEFTOVERS = [
    ".model.safetensors.abcd1234.tmp",
    ".config.json.zz_9x0y1.tmp",
    ".curves.png.q1w2e3r4.tmp",
    ".metrics.jsonl.00000000.tmp",
    "checkpoint/.epoch-00003.safetensors.a1b2c3d4.tmp",
    "checkpoint/.state.json.abcdefgh.tmp",
]
"""Temporary files atomic_write makes for files training writes (what a kill can leave)."""
BYSTANDERS = [
    "notes.txt",
    ".model.safetensors.backup.tmp",  # 6 characters where mkstemp puts 8
    ".data.npz.abcd1234.tmp",  # the pattern, but not a file training writes
    ".model.safetensors.ABCD1234.tmp",  # mkstemp never uses upper case
    "model.safetensors.abcd1234.tmp",  # no leading dot
    "checkpoint/.tmpAbC123",
    "checkpoint/notes.epoch-00001.safetensors",
]
"""Files a resume must leave alone."""


def _records(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _final(run_dir: Path) -> dict:
    return {k: v for k, v in read_config(run_dir)["final_metrics"].items() if k != "seconds"}


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _temp_files(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if TEMP_NAME.fullmatch(p.name))


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 3-epoch run: what every resumed run must equal."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    assert main(["train", *FAST, "--epochs", "3", "--out", str(run_dir)]) == 0
    return run_dir


def test_resume_removes_the_temporary_files_training_left_and_nothing_else(
    straight: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    assert main(["train", *FAST, "--epochs", "2", "--out", str(run_dir)]) == 0
    for name in LEFTOVERS + BYSTANDERS:
        (run_dir / name).write_bytes(b"partial")
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (run_dir / ".config.json.lnk12345.tmp").symlink_to(outside)  # the pattern, but a symlink
    (run_dir / "checkpoint" / ".state.json.dir12345.tmp").mkdir()  # the pattern, but a directory
    before = {p.relative_to(run_dir) for p in run_dir.rglob("*")}

    with caplog.at_level(logging.INFO, logger="dropnet.trainer.rundir"):
        assert main(["train", "--resume", "--out", str(run_dir), "--epochs", "3"]) == 0

    for name in LEFTOVERS:
        assert not (run_dir / name).exists(), name
        assert f"removed {run_dir / name}, a temporary file left by an interrupted write" in caplog.messages
    removals = [m for m in caplog.messages if m.startswith("removed ")]
    assert len(removals) == len(LEFTOVERS)
    for name in BYSTANDERS:
        assert (run_dir / name).read_bytes() == b"partial", name
    assert (run_dir / ".config.json.lnk12345.tmp").is_symlink() and outside.read_text() == "{}"
    assert (run_dir / "checkpoint" / ".state.json.dir12345.tmp").is_dir()
    after = {p.relative_to(run_dir) for p in run_dir.rglob("*")}
    superseded = Path("checkpoint/epoch-00002.safetensors")  # by epoch 3's, as in any run
    assert before - after == {Path(name) for name in LEFTOVERS} | {superseded}
    assert _records(run_dir) == _records(straight) and _final(run_dir) == _final(straight)
    assert _same_weights(run_dir, straight)


KILLED_WRITING_EPOCH_2 = """
import os, signal, sys
import dropnet.core.fileio as fileio
real_fsync = fileio.fsync_file
def fsync_then_die(path):
    real_fsync(path)
    if os.path.basename(path).startswith(".epoch-00002.safetensors."):
        os.kill(os.getpid(), signal.SIGKILL)  # the tensors are in the temporary file, not yet renamed
fileio.fsync_file = fsync_then_die
from dropnet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_run_sigkilled_while_writing_its_checkpoint_resumes_cleanly(straight: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITING_EPOCH_2, "train", *FAST, "--epochs", "3", "--out", str(run_dir)],
        capture_output=True, text=True, timeout=240,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    leftovers = _temp_files(run_dir)
    assert len(leftovers) == 1 and leftovers[0].startswith("checkpoint/.epoch-00002.safetensors.")
    assert (run_dir / leftovers[0]).stat().st_size > 0
    assert json.loads((run_dir / "checkpoint" / "state.json").read_text())["epochs_done"] == 1

    assert main(["train", "--resume", "--out", str(run_dir)]) == 0
    assert _temp_files(run_dir) == []
    assert _records(run_dir) == _records(straight) and _final(run_dir) == _final(straight)
    assert _same_weights(run_dir, straight)


def test_remove_temp_files_matches_real_atomic_write_temporaries_by_target(tmp_path: Path, monkeypatch) -> None:
    names: list[str] = []

    def stop_before_rename(src: str, dst: str) -> None:
        names.append(Path(src).name)
        raise KeyboardInterrupt  # as if killed: the temporary is removed by atomic_write, so recreate it

    monkeypatch.setattr(os, "replace", stop_before_rename)
    for target in ("epoch-00001.safetensors", "state.json", "other.bin"):
        with pytest.raises(KeyboardInterrupt):
            atomic_write_bytes(tmp_path / target, b"data")
    monkeypatch.undo()
    for name in names:
        (tmp_path / name).write_bytes(b"data")
    assert all(TEMP_NAME.fullmatch(name) for name in names)

    removed = remove_temp_files(tmp_path, ["state.json", "epoch-*.safetensors"])
    assert sorted(p.name for p in removed) == sorted(names[:2])
    assert [p.name for p in tmp_path.iterdir()] == [names[2]]
    assert remove_temp_files(tmp_path / "absent", ["state.json"]) == []
