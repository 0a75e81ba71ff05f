"""``dropnet pretrain``: greedy layer-wise pretraining of a network's hidden layers, written as a run directory."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from dropnet.core.errors import ConfigError
from dropnet.settings_flags import add_flags, given_values, merged
from dropnet.trainer.config import list_presets, load_preset
from dropnet.trainer.pretrain.config import PretrainConfig

RENAMES = {"data.name": "--data"}
"""Flags not spelled like their field (as for dropnet train)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``--config``, ``--out``, ``--resume`` and one flag per pretraining setting."""
    parser.add_argument(
        "--config", metavar="PRESET",
        help=f"bundled pretraining preset (one with a pretrain section, e.g. dbn_pretrain_mnist; bundled: "
        f"{', '.join(list_presets())}) or path to a YAML preset; flags override it (default: the built-in defaults)",
    )
    parser.add_argument(
        "--out", metavar="RUN_DIR", type=Path,
        help='run directory to write; must be new or empty (default: runs/<preset or "pretrain">-<timestamp>)',
    )
    parser.add_argument(
        "--resume", action="store_true",
        help="continue the pretraining in --out from its last completed epoch, with the run's own config "
        "(only --device may change)",
    )
    add_flags(parser, PretrainConfig, name="pretraining", note=" (override the preset)", renames=RENAMES)


def run(args: argparse.Namespace) -> int:
    """Pretrain, then print each layer's final reconstruction error and the run directory."""
    from dropnet.trainer.pretrain.greedy import pretrain  # imports torch: only when pretraining

    config = requested_config(args)
    run_dir = args.out or Path("runs") / f"{config.preset or 'pretrain'}-{datetime.now():%Y%m%d-%H%M%S}"
    final = pretrain(config, run_dir, resume=args.resume)
    errors = ", ".join(f"layer {entry['layer']} {entry['recon_error']:.5f}" for entry in final["layers"])
    print(
        f"pretrained {len(final['layers'])} {config.pretrain.kind} layers {config.pretrain.hidden} "
        f"({final['seconds']:.1f}s); reconstruction error per unit: {errors}\nrun dir: {run_dir}\n"
        f"fine-tune with: dropnet train --init {run_dir} --hidden {','.join(map(str, config.pretrain.hidden))} "
        "--activation sigmoid"
    )
    return 0


def requested_config(args: argparse.Namespace) -> PretrainConfig:
    """The preset (or, for --resume without --config, the run's own config) with the flags applied."""
    if args.resume and args.out is None:
        raise ConfigError("--resume needs --out RUN_DIR, the pretraining run directory to continue")
    if args.config:
        base = load_preset(args.config)
        if not isinstance(base, PretrainConfig):
            raise ConfigError(
                f"preset {args.config!r} is a training preset (it has no pretrain section) for dropnet train; "
                "dropnet pretrain needs a pretraining preset, e.g. dbn_pretrain_mnist"
            )
    elif args.resume:
        from dropnet.trainer.pretrain.rundir import load_config

        base, _, _ = load_config(args.out)
    else:
        base = PretrainConfig()
    return PretrainConfig.from_dict(merged(base.to_dict(), given_values(args)))
