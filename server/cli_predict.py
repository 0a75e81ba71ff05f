"""``dropnet predict MODEL_DIR --input FILE [--mc-samples T --seed S] [--json]``: in-process prediction."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from dropnet.core.devices import DEVICES
from dropnet.core.outputs import Mode, rows_axis

if TYPE_CHECKING:
    from dropnet.server.predictor import Prediction, Predictor

PLUS_MINUS = " ± "
"""Joins the values of a regression target in a table cell (MC: mean ± std)."""
MIN_WIDTH = 11
"""Narrowest table column."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``predict`` flags."""
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="model package directory (from `dropnet export`)")
    parser.add_argument("--input", required=True, metavar="FILE",
                        help=".npy array, .npz (array 'x' or its only array) or grayscale .png (one example)")
    parser.add_argument("--mc-samples", type=int, default=None, metavar="T",
                        help="Monte-Carlo model averaging over T dropout samples (default: weight scaling)")
    parser.add_argument("--seed", type=int, default=None, metavar="S",
                        help="seed of the MC dropout masks (default: drawn at random and reported)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="execution device")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="onnxruntime intra-op threads")
    parser.add_argument("--json", action="store_true", help="print every value as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Load the package, predict the input file's rows and print the result."""
    from dropnet.server.input_files import read_input_file
    from dropnet.server.predictor import Predictor

    predictor = Predictor.load(args.model_dir, device=args.device, intra_op_threads=args.threads)
    x = read_input_file(args.input, predictor.input_shape, predictor.manifest.input.value_range)
    prediction = predictor.predict(x, mc_samples=args.mc_samples, seed=args.seed)
    if args.json:
        print(json.dumps(to_json(predictor, prediction, args.input, args.mc_samples), indent=2))
    else:
        print(format_table(predictor, prediction, args.mc_samples))
    return 0


def to_json(
    predictor: "Predictor", prediction: "Prediction", input_path: str, mc_samples: int | None
) -> dict[str, Any]:
    """Everything about a prediction as a JSON-serialisable dict: per row, each output of the mode by name
    (and for classification the predicted class's label and probability, ``confidence``)."""
    labels = prediction.labels
    rows = []
    for row in range(_rows(prediction)):
        entry: dict[str, Any] = {"row": row}
        if labels is not None:
            entry["label"] = labels[row]
            entry["confidence"] = float(prediction.probabilities[row, prediction.predicted_class[row]])
        entry.update({name: value[row].tolist() for name, value in prediction.outputs.items() if rows_axis(name) == 0})
        rows.append(entry)
    return {
        "model": predictor.name,
        "version": predictor.version,
        "provider": predictor.provider,
        "input": str(input_path),
        "method": "deterministic" if mc_samples is None else "mc",
        "mc_samples": mc_samples,
        "seed": prediction.seed,
        predictor.manifest.labels_key: list(predictor.manifest.labels),
        "rows": rows,
    }


def format_table(predictor: "Predictor", prediction: "Prediction", mc_samples: int | None) -> str:
    """A readable table: one line per row, with the columns of the tabulated outputs of the output table.

    A [B, C] output gets one column, its value at the row's predicted class (after the ``label`` column).
    The [B, D] outputs share one column per regression target, named by it, holding their values joined
    by " ± " (MC: mean ± std); the first line says so.
    """
    mc = mc_samples is not None
    mode = Mode.MC if mc else Mode.DETERMINISTIC
    method = f"MC dropout, T={mc_samples}, seed={prediction.seed}" if mc else "weight scaling (deterministic)"
    tabulated = [spec for spec in predictor.manifest.outputs(mode) if spec.column and spec.name in prediction.outputs]
    per_class = [spec for spec in tabulated if "D" not in spec.shape]
    per_target = [spec for spec in tabulated if "D" in spec.shape]
    if per_target:
        method += f"; each target: {PLUS_MINUS.join(str(spec.column) for spec in per_target)}"
    labels = prediction.labels
    targets = list(predictor.manifest.targets) if per_target else []
    header = ["row"] + (["label"] if labels is not None else []) + [str(spec.column) for spec in per_class] + targets
    rows = []
    for row in range(_rows(prediction)):
        cells = [str(row)] + ([labels[row]] if labels is not None else [])
        for spec in per_class:
            value = prediction.outputs[spec.name][row]
            if "C" in spec.shape:
                value = value[prediction.predicted_class[row]]
            cells.append(" ".join(f"{v:.4f}" for v in value.ravel()))
        values = [prediction.outputs[spec.name][row] for spec in per_target]
        cells += [PLUS_MINUS.join(f"{value[target]:.4f}" for value in values) for target in range(len(targets))]
        rows.append(cells)
    title = f"model {predictor.name} v{predictor.version} on {predictor.provider}: {method}"
    return "\n".join([title, *_aligned([header, *rows])])


def _rows(prediction: "Prediction") -> int:
    return len(next(iter(prediction.outputs.values())))


def _aligned(table: list[list[str]]) -> list[str]:
    """The lines of ``table``, each column right-aligned to its widest cell (at least :data:`MIN_WIDTH`)."""
    widths = [max(MIN_WIDTH, *(len(cell) for cell in column)) for column in zip(*table)]
    return ["  ".join(cell.rjust(width) for cell, width in zip(cells, widths)) for cells in table]
