"""The ``dropnet`` console command: one subcommand per stage, each implemented in its package.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and keeps its
top-level imports light, so ``dropnet --help`` never imports torch. In a serving-only install
(no ``[train]`` extra) the training subcommands are not imported at all: they exit 2 with one line
naming the extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from dropnet import __version__
from dropnet.core.errors import DropnetError
from dropnet.extras import missing_train_module, require_train

DESCRIPTION = "dropnet: dropout neural networks (Srivastava et al., JMLR 2014) — train, export to ONNX, serve."
SUBCOMMANDS: dict[str, tuple[str, str, bool]] = {
    # name: (module, help, needs the [train] extra)
    "train": ("dropnet.trainer.cli_train", "train a dropout network and write a run directory", True),
    "pretrain": ("dropnet.trainer.pretrain.cli_pretrain", "greedy layer-wise pretraining (RBM or denoising autoencoder) of a network's hidden layers", True),
    "tune": ("dropnet.trainer.tune.cli_tune", "search retain probabilities, max-norm and the schedule on the validation split (Optuna)", True),
    "evaluate": ("dropnet.trainer.cli_evaluate", "test error with weight scaling vs Monte-Carlo model averaging", True),
    "calibrate": ("dropnet.quality.cli_calibrate", "fit temperature scaling on the validation split and write a calibrated package version", True),
    "report": ("dropnet.quality.cli_report", "uncertainty report of a package: calibration, OOD detection, risk–coverage", True),
    "export": ("dropnet.exporter.cli", "export a run directory (or your own model) to an ONNX model package, and a Triton repository", True),
    "predict": ("dropnet.server.cli_predict", "predict with a model package in-process, or ask a running server (--server)", False),
    "serve": ("dropnet.server.cli_serve", "serve model packages over gRPC (dropnet.v1 and KServe v2)", False),
    "demo": ("dropnet.demo", "train → export → serve → predict on the bundled digits, end to end", True),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand; those whose extra is missing only report that."""
    parser = argparse.ArgumentParser(prog="dropnet", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"dropnet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_installed = missing_train_module() is None
    for name, (module_name, help_text, needs_train) in SUBCOMMANDS.items():
        if needs_train and not train_installed:
            _add_unavailable(sub, name, f"{help_text} (needs the [train] extra)")
            continue
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(handler=module.run)
    return parser


def _add_unavailable(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """A subcommand that takes any arguments (``--help`` included) and fails with :class:`MissingExtraError`."""
    # No argument can start with NUL, so every token, flags included, lands in `ignored`.
    sub_parser = sub.add_parser(name, help=help_text, add_help=False, prefix_chars="\0")
    sub_parser.add_argument("ignored", nargs=argparse.REMAINDER)
    sub_parser.set_defaults(handler=lambda _args: require_train())


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
