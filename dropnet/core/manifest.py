"""The model package's ``manifest.json`` and the ONNX ``metadata_props``: schema, builder, checks.

This module is the contract between the exporter (which writes packages) and the server (which
reads them), so it imports the standard library only: a serving install can use it without torch
or onnx.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from dropnet.core.errors import ModelPackageError

FORMAT = "dropnet-model/1"
MANIFEST_FILE = "manifest.json"
DETERMINISTIC_FILE = "deterministic.onnx"
MC_FILE = "mc.onnx"
ONNX_FILES = (DETERMINISTIC_FILE, MC_FILE)
INPUT_NAME = "x"
DETERMINISTIC_INPUTS = (INPUT_NAME,)
DETERMINISTIC_OUTPUTS = ("logits", "probabilities")
MC_INPUTS = (INPUT_NAME, "num_samples", "seed")
MC_OUTPUTS = ("probabilities", "std", "predictive_entropy", "mutual_information", "samples")
MAX_MC_SAMPLES = 1000
"""Default bound on T; lower when the mc graph's noise counters allow fewer samples."""
REQUIRED_FIELDS = (
    "format", "name", "version", "created", "dropnet_version", "versions", "source_run", "input",
    "classes", "architecture", "dropout", "max_norm", "onnx", "files", "mc", "metrics",
)


def data_digest(data: bytes) -> dict[str, Any]:
    """``{"sha256": hex digest, "bytes": size}`` of ``data``."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def build_manifest(
    *,
    name: str,
    version: str,
    created: str,
    dropnet_version: str,
    versions: dict[str, str],
    run_config: dict[str, Any],
    retain: list[float],
    max_norm: list[float | None],
    opset: int,
    ir_version: int,
    rng: str,
) -> dict[str, Any]:
    """The draft manifest of a package exported from a run whose parsed ``config.json`` is ``run_config``.

    ``retain`` (per dropout site) and ``max_norm`` (per weight layer) are the model config's resolved
    values. The draft gives the graphs their :func:`onnx_metadata`; :func:`seal_manifest` then adds
    what is known only once the graphs exist.
    """
    spec = run_config["input"]
    model = run_config["config"]["model"]
    return {
        "format": FORMAT,
        "name": name,
        "version": version,
        "created": created,
        "dropnet_version": dropnet_version,
        "versions": versions,
        "source_run": {key: run_config.get(key) for key in ("config", "created", "command")},
        "input": {
            "name": INPUT_NAME,
            "shape": list(spec["shape"]),
            "dtype": "float32",
            "value_range": list(spec["value_range"]),
            "normalisation": {"mean": spec["mean"], "std": spec["std"], "in_graph": True},
        },
        "classes": list(spec["class_labels"]),
        "architecture": model,
        "dropout": {"flavour": model["flavour"], "retain": retain},
        "max_norm": max_norm,
        "onnx": {"opset": opset, "ir_version": ir_version},
        "files": {},
        "mc": {"max_samples": MAX_MC_SAMPLES, "rng": rng},
        "metrics": run_config.get("final_metrics") or {},
    }


def seal_manifest(draft: dict[str, Any], graphs: dict[str, bytes], rng_max_samples: int) -> dict[str, Any]:
    """``draft`` with the SHA-256 and size of each serialised graph, and T bounded by the noise scheme's limit."""
    return {
        **draft,
        "files": {file_name: data_digest(data) for file_name, data in graphs.items()},
        "mc": {**draft["mc"], "max_samples": min(draft["mc"]["max_samples"], rng_max_samples)},
    }


def onnx_metadata(manifest: dict[str, Any]) -> dict[str, str]:
    """The ``metadata_props`` both graphs carry: the key facts of ``manifest``, so a bare .onnx says what it is.

    Values are strings (JSON for lists and mappings). The graph builders add their own keys (the
    graph kind, and for mc.onnx the noise scheme).
    """
    facts: dict[str, Any] = {
        "format": manifest["format"],
        "name": manifest["name"],
        "version": manifest["version"],
        "flavour": manifest["dropout"]["flavour"],
        "retain": manifest["dropout"]["retain"],
        "max_norm": manifest["max_norm"],
        "classes": manifest["classes"],
        "input_shape": manifest["input"]["shape"],
        "value_range": manifest["input"]["value_range"],
        "normalisation": manifest["input"]["normalisation"],
        "dropnet_version": manifest["dropnet_version"],
    }
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in facts.items()}


def check_manifest(raw: Any, where: str) -> dict[str, Any]:
    """Return ``raw`` if it is a well-formed manifest, else raise :class:`ModelPackageError`.

    ``where`` names the manifest file in messages.
    """
    if not isinstance(raw, dict):
        raise ModelPackageError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    if raw.get("format") != FORMAT:
        raise ModelPackageError(f"{where}: expected format {FORMAT!r}, got {raw.get('format')!r}")
    missing = [key for key in REQUIRED_FIELDS if key not in raw]
    if missing:
        raise ModelPackageError(f"{where}: missing required field(s) {missing}")
    shape = raw["input"].get("shape") if isinstance(raw["input"], dict) else None
    if not (isinstance(shape, list) and shape and all(isinstance(d, int) and d >= 1 for d in shape)):
        raise ModelPackageError(f"{where}: input.shape must be a non-empty list of positive ints, got {shape!r}")
    value_range = raw["input"].get("value_range")
    if not (isinstance(value_range, list) and len(value_range) == 2 and all(_is_number(v) for v in value_range)):
        raise ModelPackageError(f"{where}: input.value_range must be [low, high], got {value_range!r}")
    classes = raw["classes"]
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise ModelPackageError(f"{where}: classes must be a non-empty list of strings, got {classes!r}")
    for file_name in ONNX_FILES:
        entry = raw["files"].get(file_name) if isinstance(raw["files"], dict) else None
        if not _is_file_entry(entry):
            raise ModelPackageError(f"{where}: files.{file_name} must be {{sha256: str, bytes: int}}, got {entry!r}")
    max_samples = raw["mc"].get("max_samples") if isinstance(raw["mc"], dict) else None
    if not (isinstance(max_samples, int) and max_samples >= 1):
        raise ModelPackageError(f"{where}: mc.max_samples must be a positive integer, got {max_samples!r}")
    for key in ("name", "version"):
        if not isinstance(raw[key], str) or not raw[key]:
            raise ModelPackageError(f"{where}: {key} must be a non-empty string, got {raw[key]!r}")
    return raw


def _is_file_entry(entry: Any) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and isinstance(entry.get("bytes"), int)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
