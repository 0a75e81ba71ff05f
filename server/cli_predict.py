"""``dropnet predict``: predict the rows of an input file, in-process or by asking a running server.

    dropnet predict MODEL_DIR --input FILE [--mc-samples T --seed S] [--json]
    dropnet predict --server HOST:PORT --model NAME [--version V] --input FILE [--mc-samples T --seed S]
                    [--tls-ca CA.pem] [--tls-cert CLIENT.pem --tls-key CLIENT.key] [--token-file FILE] [--json]

With ``--server`` the model's manifest comes from ``GetModel`` and the prediction from ``Predict``
(:class:`dropnet.server.client.DropnetClient`); the output is the same table or JSON, and a status
the server answers with is one line ``dropnet predict: error: ...`` (exit 2).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from dropnet.core.devices import DEVICES
from dropnet.core.errors import ConfigError, DropnetError
from dropnet.core.manifest import Manifest
from dropnet.core.outputs import Mode, rows_axis

if TYPE_CHECKING:
    import grpc

    from dropnet.server.predictor import Prediction

PLUS_MINUS = " ± "
"""Joins the values of a regression target in a table cell (MC: mean ± std)."""
MIN_WIDTH = 11
"""Narrowest table column."""
LOCAL_FLAGS = ("device", "threads")
"""Flags of in-process prediction (MODEL_DIR) only."""
SERVER_FLAGS = ("model", "version", "tls", "tls_ca", "tls_cert", "tls_key", "token_file")
"""Flags of prediction by a server (``--server``) only."""


class Answerer(Protocol):
    """What answered a prediction: a :class:`dropnet.server.predictor.Predictor`, or a :class:`ServedModel`."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def provider(self) -> str: ...

    @property
    def manifest(self) -> Manifest: ...


@dataclass(frozen=True)
class ServedModel:
    """A model version of a running server, as GetModel describes it."""

    name: str
    version: str
    provider: str
    """Where it ran: ``server HOST:PORT``."""
    manifest: Manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``predict`` flags."""
    parser.add_argument("model_dir", metavar="MODEL_DIR", nargs="?", default=None,
                        help="model package directory (from `dropnet export`); or give --server and --model")
    parser.add_argument("--input", required=True, metavar="FILE",
                        help=".npy array, .npz (array 'x' or its only array) or grayscale .png (one example)")
    parser.add_argument("--mc-samples", type=int, default=None, metavar="T",
                        help="Monte-Carlo model averaging over T dropout samples (default: weight scaling)")
    parser.add_argument("--seed", type=int, default=None, metavar="S",
                        help="seed of the MC dropout masks (default: drawn at random and reported)")
    parser.add_argument("--device", choices=DEVICES, default=None, help="execution device (default: auto)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="onnxruntime intra-op threads")
    parser.add_argument("--json", action="store_true", help="print every value as JSON instead of a table")
    remote = parser.add_argument_group("asking a running `dropnet serve` instead (dropnet.v1 API)")
    remote.add_argument("--server", metavar="HOST:PORT", default=None, help="address of the server")
    remote.add_argument("--model", metavar="NAME", default=None, help="name of the served model")
    remote.add_argument("--version", metavar="V", default=None, help="model version (default: the latest loaded)")
    remote.add_argument("--tls", action="store_true",
                        help="use TLS, trusting the system's CA certificates (implied by --tls-ca, --tls-cert)")
    remote.add_argument("--tls-ca", metavar="FILE", default=None,
                        help="PEM bundle of the CA that signed the server's certificate (implies TLS)")
    remote.add_argument("--tls-cert", metavar="FILE", default=None,
                        help="PEM certificate of this client, for a server with --tls-client-ca (mutual TLS)")
    remote.add_argument("--tls-key", metavar="FILE", default=None, help="PEM private key of --tls-cert")
    remote.add_argument("--token-file", metavar="FILE", default=None,
                        help="file holding the server's bearer token (sent as 'authorization: Bearer TOKEN')")


def run(args: argparse.Namespace) -> int:
    """Predict the input file's rows, with the package in-process or by the server, and print the result."""
    answerer, prediction = _predict_remotely(args) if args.server is not None else _predict_locally(args)
    if args.json:
        print(json.dumps(to_json(answerer, prediction, args.input, args.mc_samples), indent=2))
    else:
        print(format_table(answerer, prediction, args.mc_samples))
    return 0


def _predict_locally(args: argparse.Namespace) -> tuple[Answerer, "Prediction"]:
    from dropnet.server.input_files import read_input_file
    from dropnet.server.predictor import Predictor

    if args.model_dir is None:
        raise ConfigError("give MODEL_DIR (a model package) or --server HOST:PORT with --model NAME")
    _refuse_given(args, SERVER_FLAGS, "without --server", "with --server")
    predictor = Predictor.load(args.model_dir, device=args.device or "auto", intra_op_threads=args.threads)
    x = read_input_file(args.input, predictor.input_shape, predictor.manifest.input.value_range)
    return predictor, predictor.predict(x, mc_samples=args.mc_samples, seed=args.seed)


def _predict_remotely(args: argparse.Namespace) -> tuple[Answerer, "Prediction"]:
    import grpc

    from dropnet.server.client import DropnetClient
    from dropnet.server.input_files import read_input_file
    from dropnet.server.predictor import Prediction
    from dropnet.server.security import read_token

    if args.model_dir is not None:
        raise ConfigError(f"MODEL_DIR {args.model_dir} and --server {args.server} both given; expected one of them")
    if args.model is None:
        raise ConfigError("--server needs --model NAME (the served model to ask)")
    _refuse_given(args, LOCAL_FLAGS, "with --server", "with MODEL_DIR")
    token = None if args.token_file is None else read_token(args.token_file, "--token-file")
    client = DropnetClient(args.server, tls=args.tls, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                           tls_key=args.tls_key, token=token)
    with client:
        try:
            described = client.get_model(args.model, args.version)
            where = f"GetModel({args.model!r}).manifest_json"
            manifest = Manifest.from_dict(json.loads(described.manifest_json), where)
            x = read_input_file(args.input, manifest.input.shape, manifest.input.value_range)
            out = client.predict(args.model, x, args.mc_samples, args.seed, version=described.version)
        except grpc.RpcError as exc:
            raise rpc_error(exc, args.server) from None
    mode = Mode.DETERMINISTIC if args.mc_samples is None else Mode.MC
    outputs = {spec.name: out[spec.name] for spec in manifest.outputs(mode) if spec.name in out}
    served = ServedModel(described.name, described.version, f"server {args.server}", manifest)
    return served, Prediction(outputs, manifest.classes, out.get("seed"))


def rpc_error(exc: "grpc.RpcError", server: str) -> DropnetError:
    """The dropnet error of a status a server answered with: the class its code stands for (UNAUTHENTICATED:
    ConfigError, the token flag being wrong), else DropnetError; the message names the server and the code."""
    from dropnet.server.status_codes import CODE_BY_ERROR

    code = exc.code()  # type: ignore[attr-defined]  # a call's RpcError is also a grpc.Call
    by_code = {name: error for error, name in CODE_BY_ERROR if issubclass(error, DropnetError)}
    error_class = ConfigError if code.name == "UNAUTHENTICATED" else by_code.get(code.name, DropnetError)
    return error_class(f"server {server} answered {code.name}: {exc.details()}")  # type: ignore[attr-defined]


def _refuse_given(args: argparse.Namespace, flags: tuple[str, ...], where: str, expected: str) -> None:
    """Refuse the ``flags`` given (not None, not False) where they mean nothing."""
    given = [f"--{flag.replace('_', '-')}" for flag in flags if getattr(args, flag) not in (None, False)]
    if given:
        raise ConfigError(f"{', '.join(given)} cannot be used {where}; expected them only {expected}")


def to_json(
    predictor: Answerer, prediction: "Prediction", input_path: str, mc_samples: int | None
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


def format_table(predictor: Answerer, prediction: "Prediction", mc_samples: int | None) -> str:
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
