"""``dropnet predict MODEL_DIR --input FILE [--mc-samples T --seed S] [--json]``: in-process prediction."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from dropnet.server.settings import DEVICES

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
    spec = predictor.manifest["input"]
    x = read_input_file(args.input, predictor.input_shape, tuple(spec["value_range"]))
    prediction = predictor.predict(x, mc_samples=args.mc_samples, seed=args.seed)
    if args.json:
        print(json.dumps(to_json(predictor, prediction, args.input, args.mc_samples), indent=2))
    else:
        print(format_table(predictor, prediction, args.mc_samples))
    return 0


def to_json(
    predictor: "Predictor", prediction: "Prediction", input_path: str, mc_samples: int | None
) -> dict[str, Any]:
    """Everything about a prediction as a JSON-serialisable dict."""
    rows = []
    for row, cls in enumerate(prediction.predicted_class.tolist()):
        entry: dict[str, Any] = {
            "row": row,
            "predicted_class": cls,
            "label": prediction.labels[row],
            "confidence": float(prediction.probabilities[row, cls]),
            "probabilities": prediction.probabilities[row].tolist(),
        }
        if mc_samples is not None:
            entry["std"] = prediction.std[row].tolist()
            entry["predictive_entropy"] = float(prediction.predictive_entropy[row])
            entry["mutual_information"] = float(prediction.mutual_information[row])
        rows.append(entry)
    return {
        "model": predictor.name,
        "version": predictor.version,
        "provider": predictor.provider,
        "input": str(input_path),
        "method": "deterministic" if mc_samples is None else "mc",
        "mc_samples": mc_samples,
        "seed": prediction.seed,
        "classes": predictor.classes,
        "rows": rows,
    }


def format_table(predictor: "Predictor", prediction: "Prediction", mc_samples: int | None) -> str:
    """A readable table: one line per row with label and confidence (and MC uncertainties)."""
    mc = mc_samples is not None
    method = f"MC dropout, T={mc_samples}, seed={prediction.seed}" if mc else "weight scaling (deterministic)"
    header = ["row", "label", "confidence"] + (["std", "entropy", "mutual_info"] if mc else [])
    lines = [f"model {predictor.name} v{predictor.version} on {predictor.provider}: {method}", _line(header)]
    for row, cls in enumerate(prediction.predicted_class.tolist()):
        cells = [str(row), prediction.labels[row], f"{prediction.probabilities[row, cls]:.4f}"]
        if mc:
            cells += [
                f"{prediction.std[row, cls]:.4f}",
                f"{prediction.predictive_entropy[row]:.4f}",
                f"{prediction.mutual_information[row]:.4f}",
            ]
        lines.append(_line(cells))
    return "\n".join(lines)


def _line(cells: list[str]) -> str:
    return "  ".join(cell.rjust(11) for cell in cells)
