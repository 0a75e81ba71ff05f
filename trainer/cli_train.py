"""``dropnet train``: train a dropout network from a preset plus flags and write a run directory."""

from __future__ import annotations

import argparse
import logging
from datetime import datetime
from pathlib import Path

from dropnet.core.errors import ConfigError
from dropnet.settings_flags import add_flags, given_values, merged
from dropnet.trainer.config import TrainConfig, list_presets, load_training_preset
from dropnet.trainer.metrics import format_error

RENAMES = {"data.name": "--data"}
"""Flags not spelled like their field."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``--config``, ``--out``, ``--resume`` and one flag per config field."""
    parser.add_argument(
        "--config", metavar="PRESET",
        help=f"bundled preset name ({', '.join(list_presets()) or 'none bundled'}) or path to a YAML preset; "
        "flags override it (default: the built-in defaults)",
    )
    parser.add_argument(
        "--out", metavar="RUN_DIR", type=Path,
        help='run directory to write; must be new or empty (default: runs/<preset or "run">-<timestamp>)',
    )
    parser.add_argument(
        "--resume", action="store_true",
        help="continue the run in --out from its last completed epoch, with the run's own config "
        "(only --epochs and --device may change)",
    )
    add_flags(parser, TrainConfig, name="run", note=" (override the preset)", renames=RENAMES)


def run(args: argparse.Namespace) -> int:
    """Train, then print the best epoch, its val/test error and the run directory.

    Under torchrun every rank runs this; rank 0 alone prints, and the other ranks log warnings only
    (everything with ``-v``).
    """
    from dropnet.trainer.distributed import is_main_process
    from dropnet.trainer.loop import train  # imports torch: only when training

    main = is_main_process()
    if not main and not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("dropnet").setLevel(logging.WARNING)
    config = requested_config(args)
    run_dir = args.out or Path("runs") / f"{config.preset or 'run'}-{datetime.now():%Y%m%d-%H%M%S}"
    final = train(config, run_dir, resume=args.resume)
    if not main:
        return 0
    val = "n/a (no validation split)" if final["val_error"] is None else format_error(final["val_error"])
    print(
        f"best epoch {final['best_epoch']} of {final['epochs']}: val error {val}, "
        f"test error {format_error(final['test_error'])} ({final['seconds']:.1f}s of training)\nrun dir: {run_dir}"
    )
    return 0


def requested_config(args: argparse.Namespace) -> TrainConfig:
    """The preset (or, for --resume without --config, the run's own config) with the flags applied."""
    if args.resume and args.out is None:
        raise ConfigError("--resume needs --out RUN_DIR, the run directory to continue")
    if args.config:
        base = load_training_preset(args.config)
    elif args.resume:
        from dropnet.trainer.rundir import load_config

        base, _ = load_config(args.out)
    else:
        base = TrainConfig()
    return TrainConfig.from_dict(merged(base.to_dict(), given_values(args)))
