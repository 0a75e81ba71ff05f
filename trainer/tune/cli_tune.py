"""``dropnet tune``: search retain probabilities, max-norm and the schedule on the validation split (Optuna)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropnet.settings_flags import add_flags, given_values, merged
from dropnet.trainer.cli_train import RENAMES
from dropnet.trainer.config import TrainConfig, list_presets, load_training_preset
from dropnet.trainer.metrics import format_error

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

TOP_TRIALS = 5
"""Trials the summary table lists."""
QUIET_LOGGERS = ("dropnet.trainer.loop", "dropnet.trainer.metrics", "optuna")
"""Loggers of per-epoch and per-trial lines that the progress display replaces (shown with -v)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the search's options and one flag per config field (overriding the base config)."""
    parser.add_argument(
        "--config", metavar="PRESET",
        help=f"base config: a bundled preset ({', '.join(list_presets()) or 'none bundled'}) or a YAML preset; "
        "flags override it, the searched parameters are sampled (default: the built-in defaults)",
    )
    parser.add_argument(
        "--trials", type=int, required=True, metavar="N",
        help="finished (complete or pruned) trials the study should hold; a resumed study runs the rest",
    )
    parser.add_argument(
        "--timeout", type=float, metavar="S",
        help="start no trial after S seconds (a running trial finishes)",
    )
    parser.add_argument(
        "--storage", metavar="URL",
        help="RDB URL of the Optuna study, e.g. sqlite:///study.db (default: sqlite:///OUT/study.db)",
    )
    parser.add_argument(
        "--space", metavar="FILE", type=Path,
        help="YAML file of the parameters to search and their ranges (default: every parameter that applies, "
        "over the paper's ranges; see docs/tuning.md)",
    )
    parser.add_argument(
        "--out", metavar="DIR", type=Path,
        help="output directory; run again with the same one to continue the study "
        "(default: runs/tune-<preset>-<timestamp>)",
    )
    add_flags(parser, TrainConfig, name="base config", note=" (override the preset)", renames=RENAMES)


def run(args: argparse.Namespace) -> int:
    """Run the search, print a line per trial and the summary table, write the outputs."""
    from dropnet.trainer.tune.outputs import write_outputs
    from dropnet.trainer.tune.space import default_space, load_space
    from dropnet.trainer.tune.study import Search, run_search

    base = load_training_preset(args.config, "dropnet tune") if args.config else TrainConfig()
    base = TrainConfig.from_dict(merged(base.to_dict(), given_values(args)))
    space = load_space(args.space) if args.space else default_space(base)
    out = args.out or Path("runs") / f"tune-{base.preset or 'config'}-{datetime.now():%Y%m%d-%H%M%S}"
    search = Search(base, space, out, args.storage)
    print(f"searching {', '.join(space)} on the validation split; study {search.storage_url}", flush=True)
    with _quiet(not logging.getLogger().isEnabledFor(logging.DEBUG)):
        study = run_search(search, args.trials, args.timeout, on_trial=print_trial)
    outputs = write_outputs(study, search)
    print(summary_table(outputs.summary))
    if outputs.best_yaml is not None:
        print(f"best config: {outputs.best_yaml}  (dropnet train --config {outputs.best_yaml})")
    print(f"record: {outputs.tune_json}; plots: {Path(out) / 'plots'}; continue with --out {out}")
    return 0


@contextmanager
def _quiet(quiet: bool) -> Iterator[None]:
    """Raise :data:`QUIET_LOGGERS` to WARNING for the block (when ``quiet``), then restore their levels."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS] if quiet else []
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def print_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """The progress display: one line per finished trial, with the best so far."""
    from dropnet.trainer.tune.outputs import best_trial

    best = best_trial(study)
    best_text = "none complete" if best is None else f"{format_error(best.value)} (trial {best.number})"
    print(f"trial {trial.number:>4}  {_outcome(trial):<44} best {best_text}", flush=True)


def _outcome(trial: FrozenTrial) -> str:
    """What became of a trial, in words."""
    curve = trial.intermediate_values
    epochs = f"{len(curve)} epoch{'s' if len(curve) != 1 else ''}"
    if trial.state.name == "COMPLETE":
        return f"complete  val error {format_error(trial.value)}  {epochs}"
    if trial.user_attrs.get("diverged"):
        return f"pruned    diverged after {epochs}"
    if trial.state.name == "PRUNED":
        return f"pruned    val error {format_error(curve[max(curve)]) if curve else 'n/a'} at epoch {len(curve)}"
    return trial.state.name.lower()


def summary_table(summary: dict[str, Any]) -> str:
    """The best trials with their parameters, and the count of trials in each state."""
    ranked = sorted(
        (t for t in summary["trials"] if t["state"] in ("COMPLETE", "PRUNED")),
        key=lambda t: (t["state"] != "COMPLETE", t["value"] if t["value"] is not None else 1.0, t["number"]),
    )[:TOP_TRIALS]
    names = sorted({name for t in ranked for name in t["params"]})
    header = ["trial", "state", "val err", "epochs", *names]
    rows = [
        [str(t["number"]), t["state"].lower(), format_error(t["value"]), str(t["epochs"]),
         *(_param(t["params"].get(n)) for n in names)]
        for t in ranked
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *rows]]
    counts = ", ".join(f"{n} {state}" for state, n in summary["counts"].items() if n)
    return "\n".join([f"top {len(rows)} trials:", *lines, f"trials: {counts or 'none'}"])


def _param(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
