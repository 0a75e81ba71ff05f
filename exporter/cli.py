"""``dropnet export``: a run directory, your own nn.Module, or an ONNX file to a model package.

    dropnet export RUN_DIR --out MODEL_DIR [--name NAME] [--version V] [--triton-repo DIR] [--force]
    dropnet export --module PKG.MOD:FACTORY [--weights FILE] --input-shape 3,32,32 [--input-dtype int64]
                   [--value-range LOW,HIGH] (--classes LABELS_FILE | --regression [--targets A,B])
                   --out MODEL_DIR [--name NAME] [--version V] [--max-samples T] [--triton-repo DIR] [--force]
    dropnet export --onnx MODEL.onnx [--value-range LOW,HIGH] (--classes LABELS_FILE | --regression [--targets A,B])
                   --out MODEL_DIR [--name NAME] [--version V] [--max-samples T] [--triton-repo DIR] [--force]

``--triton-repo DIR`` also writes the package as Triton models DIR/NAME and DIR/NAME_mc (exporter/triton.py).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dropnet.core.errors import ConfigError

EXAMPLE_ROWS = 4
"""Seeded random rows the gates run an own module on."""
OWN_FLAGS = ("classes", "regression", "targets", "value_range", "max_samples")
MODULE_FLAGS = ("weights", "input_shape", "input_dtype")
QUIET_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")
"""torch.onnx's chatter (its passes and optional ops) is shown only with --verbose."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``export`` flags."""
    parser.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="training run directory (from `dropnet train`)")
    parser.add_argument("--module", metavar="PKG.MOD:FACTORY",
                        help="your own model: a callable (importable from the current directory) returning an "
                             "nn.Module")
    parser.add_argument("--onnx", metavar="MODEL.onnx", help="an ONNX file whose Dropout nodes mark the dropout sites")
    parser.add_argument("--out", required=True, metavar="MODEL_DIR", help="model package directory to write")
    parser.add_argument("--name", default=None,
                        help="model name (default: the run directory's name, else MODEL_DIR's name)")
    parser.add_argument("--version", default="1", help="model version string (default: 1)")
    parser.add_argument("--triton-repo", type=Path, metavar="DIR",
                        help="also write a Triton model repository: DIR/NAME (deterministic, dynamic batching) and "
                             "DIR/NAME_mc (MC dropout; num_samples, seed and optional first_sample are input "
                             "tensors), each config.pbtxt + VERSION/model.onnx for the onnxruntime backend "
                             "(docs/triton.md)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing model package at MODEL_DIR (and existing Triton models in "
                             "--triton-repo)")
    own = parser.add_argument_group("own models (--module, --onnx)")
    own.add_argument("--weights", type=Path, metavar="FILE",
                     help="--module: a .safetensors file or a torch.save'd state dict (.pt/.pth) to load")
    own.add_argument("--input-shape", metavar="D1,D2,…", help="--module: shape of one input row, e.g. 3,32,32")
    own.add_argument("--input-dtype", choices=("float32", "int64"), default=None,
                     help="--module: input element type (default float32; int64 for token ids)")
    own.add_argument("--value-range", metavar="LOW,HIGH",
                     help="input values (int64: the valid token ids; default 0..num_embeddings-1 of the first "
                          "nn.Embedding); float default: any finite value")
    own.add_argument("--classes", type=Path, metavar="LABELS_FILE",
                        help="classification: a text file with one class label per line, in output order")
    own.add_argument("--regression", action="store_true", help="regression: outputs are D targets")
    own.add_argument("--targets", metavar="A,B,…", help="--regression: names of the D targets (default y0..y{D-1})")
    own.add_argument("--max-samples", type=int, default=None, metavar="T",
                     help="largest T mc.onnx accepts (default 1000)")


def run(args: argparse.Namespace) -> int:
    """Export what was named and print where the package went."""
    sources = [flag for flag, value in (("RUN_DIR", args.run_dir), ("--module", args.module), ("--onnx", args.onnx))
               if value is not None]
    if len(sources) != 1:
        raise ConfigError(f"export got {' and '.join(sources) or 'nothing'} to export; expected one of RUN_DIR, "
                          "--module, --onnx")
    if args.run_dir is not None:
        _refuse_unused(args, OWN_FLAGS + MODULE_FLAGS, "RUN_DIR", "--module or --onnx")
    elif args.onnx is not None:
        _refuse_unused(args, MODULE_FLAGS, "--onnx", "--module")
    name = args.name if args.name is not None else Path(args.run_dir or args.out).resolve().name
    if args.triton_repo is not None:
        from dropnet.exporter.triton import check_repository

        check_repository(args.triton_repo, name, args.force)  # before anything is exported
    if args.run_dir is not None:
        from dropnet.exporter.package import export_package

        out = export_package(args.run_dir, args.out, name=name, version=args.version, force=args.force)
    else:
        out = _export_own(args, name)
    print(f"wrote model package {out}")
    if args.triton_repo is not None:
        from dropnet.exporter.triton import write_repository

        models = write_repository(out, args.triton_repo, force=args.force)
        print(f"wrote Triton models {', '.join(str(path) for path in models.values())}")
    return 0


def _export_own(args: argparse.Namespace, model_name: str) -> Path:
    """--module or --onnx, through dropnet.exporter.own.package, as model ``model_name``."""
    from dropnet.core.manifest import MAX_MC_SAMPLES
    from dropnet.exporter.own.package import export_module, export_onnx
    from dropnet.exporter.write import check_destination

    if args.regression == (args.classes is not None):
        given = "both --classes and --regression" if args.regression else "neither --classes nor --regression"
        raise ConfigError(f"export got {given}; expected --classes LABELS_FILE (classification) or --regression")
    if args.targets is not None and not args.regression:
        raise ConfigError("--targets names regression targets; expected it with --regression")
    if not args.verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    out = Path(args.out)
    check_destination(out, args.force)  # before the factory runs or the file is read
    common = {
        "name": model_name,
        "version": args.version,
        "task": "regression" if args.regression else "classification",
        "classes": _read_classes(args.classes) if args.classes is not None else None,
        "targets": [name.strip() for name in args.targets.split(",")] if args.targets is not None else None,
        "max_samples": args.max_samples if args.max_samples is not None else MAX_MC_SAMPLES,
        "force": args.force,
    }
    value_range = _numbers(args.value_range, "--value-range", 2) if args.value_range is not None else None
    if args.onnx is not None:
        return export_onnx(args.onnx, out, value_range=value_range, **common)
    import torch

    from dropnet.exporter.own.factory import load_module
    from dropnet.exporter.own.inputs import example_rows, input_spec

    if args.input_shape is None:
        raise ConfigError("--module needs --input-shape (one row's shape, e.g. 3,32,32)")
    shape = _numbers(args.input_shape, "--input-shape")
    if not all(isinstance(d, int) and d >= 1 for d in shape):
        raise ConfigError(f"--input-shape {args.input_shape!r} is invalid; expected positive integers, e.g. 3,32,32")
    module, made = load_module(args.module, args.weights)
    spec = input_spec(args.input_dtype or "float32", tuple(map(int, shape)), value_range, module)
    made["example_input"] = {"rows": EXAMPLE_ROWS, "seed": 0}
    x = torch.from_numpy(example_rows(spec, EXAMPLE_ROWS, seed=0))
    return export_module(module, x, out, value_range=spec.value_range, source=made, **common)


def _refuse_unused(args: argparse.Namespace, flags: tuple[str, ...], source: str, users: str) -> None:
    """Refuse own-model flags given where they mean nothing (e.g. --weights with RUN_DIR)."""
    given = [f"--{flag.replace('_', '-')}" for flag in flags if getattr(args, flag) not in (None, False)]
    if given:
        raise ConfigError(f"{', '.join(given)} cannot be used with {source}; expected them only with {users}")


def _read_classes(path: Path) -> list[str]:
    """One label per non-empty line of ``path``, stripped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--classes {path} cannot be read ({getattr(exc, 'strerror', None) or exc}); "
                          "expected a UTF-8 text file with one label per line") from None
    labels = [line.strip() for line in lines if line.strip()]
    if not labels:
        raise ConfigError(f"--classes {path} holds no labels; expected one class label per line")
    return labels


def _numbers(text: str, flag: str, count: int | None = None) -> list[float | int]:
    """Comma-separated numbers (ints where they are written as ints)."""
    try:
        values = [int(part) if part.strip().lstrip("+-").isdigit() else float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or (count is not None and len(values) != count):
        what = f"{count} comma-separated numbers" if count else "comma-separated numbers"
        raise ConfigError(f"{flag} {text!r} is invalid; expected {what}")
    return values
