"""``dropnet predict MODEL_DIR --input FILE [--mc-samples T --seed S] [--json]``: in-process prediction."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from dropnet.core.devices import DEVICES
from dropnet.core.outputs import Mode, rows_axis

if TYPE_CHECKING:
    from dropnet.server.predictor import Prediction, Predictor


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
    """A readable table: one line per row, with its label and a column per tabulated output of the output table.

    A [B, C] output shows the value at the row's predicted class.
    """
    mc = mc_samples is not None
    mode = Mode.MC if mc else Mode.DETERMINISTIC
    method = f"MC dropout, T={mc_samples}, seed={prediction.seed}" if mc else "weight scaling (deterministic)"
    columns = [spec for spec in predictor.manifest.outputs(mode) if spec.column and spec.name in prediction.outputs]
    labels = prediction.labels
    header = ["row"] + (["label"] if labels is not None else []) + [str(spec.column) for spec in columns]
    lines = [f"model {predictor.name} v{predictor.version} on {predictor.provider}: {method}", _line(header)]
    for row in range(_rows(prediction)):
        cells = [str(row)] + ([labels[row]] if labels is not None else [])
        for spec in columns:
            value = prediction.outputs[spec.name][row]
            if "C" in spec.shape:
                value = value[prediction.predicted_class[row]]
            cells.append(" ".join(f"{v:.4f}" for v in value.ravel()))
        lines.append(_line(cells))
    return "\n".join(lines)


def _rows(prediction: "Prediction") -> int:
    return len(next(iter(prediction.outputs.values())))


def _line(cells: list[str]) -> str:
    return "  ".join(cell.rjust(11) for cell in cells)
