"""Per-epoch metrics: the ``metrics.jsonl`` log, the learning-curve plot and the progress display.

A record holds ``epoch`` (1-based), ``train_loss`` (mean over the epoch's batches),
``train_error_dropout`` (error of the training-mode forward passes, i.e. with dropout),
``val_error`` (None when there is no validation split), ``test_error`` (None when the test split
was not evaluated, as during a hyper-parameter search), ``lr``, ``momentum`` and ``seconds``.
Errors are fractions in [0, 1].
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

from dropnet.core.fileio import atomic_write, atomic_write_bytes, naming

logger = logging.getLogger(__name__)


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a JSON line.

    A failed append (a full disk, no permission) raises an ``OSError`` of the same class and errno
    that names ``path``, as :func:`dropnet.core.fileio.atomic_write` does for the run's other files.
    """
    line = json.dumps(record) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
    except OSError as exc:
        if exc.errno is None:
            raise
        raise naming(exc, path) from exc


def read_records(path: Path) -> list[dict[str, Any]]:
    """The complete records of a metrics log, in order ([] when the file does not exist).

    A torn last line (a run killed while appending) is skipped.
    """
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s: skipping an incomplete line", path)
    return records


def truncate_records(path: Path, epochs: int) -> list[dict[str, Any]]:
    """Keep only the records of the first ``epochs`` epochs (rewritten atomically); return them."""
    kept = [r for r in read_records(path) if r.get("epoch", 0) <= epochs]
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in kept).encode())
    return kept


def format_record(record: dict[str, Any], epochs: int) -> str:
    """One human-readable line for an epoch's record."""
    return (
        f"epoch {record['epoch']}/{epochs}  loss {record['train_loss']:.4f}  "
        f"train err (dropout) {record['train_error_dropout']:.2%}  val err {format_error(record['val_error'])}  "
        f"test err {format_error(record['test_error'])}  lr {record['lr']:.4g}  momentum {record['momentum']:.3f}  "
        f"{record['seconds']:.1f}s"
    )


def format_error(error: float | None) -> str:
    """An error rate as a percentage, or "n/a" where it was not measured."""
    return "n/a" if error is None else f"{error:.2%}"


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    """Write a PNG with the training loss and the val/test error against the epoch."""
    from matplotlib.figure import Figure  # heavy import, only needed here; no pyplot global state

    epochs = [r["epoch"] for r in records]
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, err_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [r["train_loss"] for r in records], marker=".")
    loss_ax.set(xlabel="epoch", ylabel="training loss (cross-entropy, with dropout)", title="Training loss")
    err_ax.plot(epochs, [100 * r["train_error_dropout"] for r in records], marker=".", label="train (dropout)")
    for key, label in (("val_error", "validation"), ("test_error", "test")):
        if any(r[key] is not None for r in records):
            err_ax.plot(epochs, [_percent(r[key]) for r in records], marker=".", label=label)
    err_ax.set(xlabel="epoch", ylabel="classification error (%)", title="Error")
    err_ax.legend()
    for ax in (loss_ax, err_ax):
        ax.grid(alpha=0.3)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def _percent(value: float | None) -> float:
    return float("nan") if value is None else 100 * value


class Progress:
    """A live one-line progress bar on a TTY; one log line per epoch otherwise.

    ``every`` is how many steps pass between bar updates (0 = no updates), so a caller that is
    not on a TTY never synchronises with the device for the display.
    """

    WIDTH = 24

    def __init__(self, epochs: int, steps_per_epoch: int, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.epochs = epochs
        self.steps = steps_per_epoch
        self.live = self.stream.isatty()
        self.every = max(1, steps_per_epoch // 50) if self.live else 0

    def update(self, epoch: int, step: int, loss: float, error: float) -> None:
        """Redraw the bar: ``step`` of this epoch's steps done, running mean loss and error."""
        done = round(self.WIDTH * step / self.steps)
        bar = "#" * done + "." * (self.WIDTH - done)
        self.stream.write(
            f"\repoch {epoch}/{self.epochs} [{bar}] {step}/{self.steps}  "
            f"loss {loss:.4f}  err (dropout) {error:.2%}\x1b[K"
        )
        self.stream.flush()

    def epoch_done(self, record: dict[str, Any]) -> None:
        """Report a finished epoch."""
        line = format_record(record, self.epochs)
        if self.live:
            self.stream.write(f"\r{line}\x1b[K\n")
            self.stream.flush()
        else:
            logger.info("%s", line)
