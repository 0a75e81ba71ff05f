"""``dropnet export RUN_DIR --out MODEL_DIR [--name NAME] [--version V] [--force]``."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``export`` flags."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="training run directory (from `dropnet train`)")
    parser.add_argument("--out", required=True, metavar="MODEL_DIR", help="model package directory to write")
    parser.add_argument("--name", default=None, help="model name (default: the run directory's name)")
    parser.add_argument("--version", default="1", help="model version string (default: 1)")
    parser.add_argument("--force", action="store_true", help="replace an existing model package at MODEL_DIR")


def run(args: argparse.Namespace) -> int:
    """Export the run and print where the package went."""
    from dropnet.exporter.package import export_package

    out = export_package(args.run_dir, args.out, name=args.name, version=args.version, force=args.force)
    print(f"wrote model package {out}")
    return 0
