"""The metrics log (torn lines, truncation for --resume) and the progress display."""

from __future__ import annotations

import io
import json
import logging
import sys

from dropnet.trainer.config import TrainConfig
from dropnet.trainer.loop import train
from dropnet.trainer.metrics import Progress, append_record, read_records, truncate_records


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _record(epoch: int) -> dict:
    return {"epoch": epoch, "train_loss": 0.5, "train_error_dropout": 0.25, "val_error": None,
            "test_error": 0.125, "lr": 0.1, "momentum": 0.5, "seconds": 1.0}


def test_torn_last_line_is_skipped_and_truncation_keeps_the_first_epochs(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    for epoch in (1, 2, 3):
        append_record(path, _record(epoch))
    with open(path, "a") as f:
        f.write('{"epoch": 4, "train_lo')  # killed while appending
    assert [r["epoch"] for r in read_records(path)] == [1, 2, 3]
    assert [r["epoch"] for r in truncate_records(path, 2)] == [1, 2]
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [1, 2]
    assert read_records(tmp_path / "missing.jsonl") == []


def test_progress_logs_one_line_per_epoch_when_not_a_tty(caplog) -> None:
    stream = io.StringIO()
    progress = Progress(epochs=5, steps_per_epoch=120, stream=stream)
    assert progress.every == 0
    with caplog.at_level(logging.INFO, logger="dropnet.trainer.metrics"):
        progress.epoch_done(_record(2))
    assert stream.getvalue() == ""
    assert caplog.messages == [
        "epoch 2/5  loss 0.5000  train err (dropout) 25.00%  val err n/a  test err 12.50%  lr 0.1  momentum 0.500  1.0s"
    ]


def test_training_on_a_tty_draws_a_live_bar_then_one_line_per_epoch(digits, tmp_path, monkeypatch) -> None:
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    config = TrainConfig(device="cpu")
    config.model.hidden, config.optim.epochs = [16], 2
    train(config, tmp_path / "run", dataset=digits)
    text = tty.getvalue()
    steps = -(-len(digits.train) // config.optim.batch_size)
    assert f"\repoch 1/2 [{'#' * 24}] {steps}/{steps}  loss " in text
    lines = [line.rpartition("\r")[2] for line in text.split("\n") if line]
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2  loss ") and lines[1].startswith("epoch 2/2  loss ")
