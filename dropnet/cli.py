"""The ``dropnet`` console command: one subcommand per stage, each implemented in its package.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and keeps its
top-level imports light, so ``dropnet --help`` and a serving-only install never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from dropnet import __version__
from dropnet.core.errors import DropnetError

DESCRIPTION = "dropnet: dropout neural networks (Srivastava et al., JMLR 2014) — train, export to ONNX, serve."
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("dropnet.trainer.cli_train", "train a dropout network and write a run directory"),
    "evaluate": ("dropnet.trainer.cli_evaluate", "test error with weight scaling vs Monte-Carlo model averaging"),
    "export": ("dropnet.exporter.cli", "export a run directory to an ONNX model package"),
    "predict": ("dropnet.server.cli_predict", "predict with a model package in-process (onnxruntime)"),
    "serve": ("dropnet.server.cli_serve", "serve model packages over gRPC (dropnet.v1 and KServe v2)"),
    "demo": ("dropnet.demo", "train → export → serve → predict on the bundled digits, end to end"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="dropnet", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"dropnet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dropnet`` command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.handler(args) or 0)
    except DropnetError as exc:
        print(f"dropnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # last line of defence: a file the command could not read or write
        logging.getLogger(__name__).debug("%s failed", args.command, exc_info=True)
        print(f"dropnet {args.command}: error: {_describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dropnet {args.command}: interrupted", file=sys.stderr)
        return 130


def _describe_os_error(exc: OSError) -> str:
    """``<strerror>: <filename>`` (and ``-> <filename2>`` for a rename), or the error's text when it has no strerror."""
    if exc.strerror is None:
        return str(exc)
    text = f"{exc.strerror}: {exc.filename}" if exc.filename is not None else exc.strerror
    return f"{text} -> {exc.filename2}" if exc.filename2 is not None else text


if __name__ == "__main__":
    sys.exit(main())
