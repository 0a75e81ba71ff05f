"""The pretraining run directory: what ``dropnet pretrain`` writes and ``dropnet train --init`` reads.

Layout::

    RUN_DIR/config.json          format dropnet-pretrain/1 (see write_config)
    RUN_DIR/input.safetensors    the first layer's visible map v = x·scale + shift (inputs.VisibleMap)
    RUN_DIR/layer-K.safetensors  layer K's weight, hidden_bias, visible_bias (K = 1, 2, ...), once it is trained
    RUN_DIR/metrics.jsonl        one record per layer and epoch
    RUN_DIR/checkpoint/          state.json + layer-K-epoch-NNNNN.safetensors, for --resume (checkpoint.py)

Every file is written with ``dropnet.core.fileio``'s atomic writes (``metrics.jsonl`` appended by
``trainer.metrics.append_record``); ``--resume`` removes the temporary files a killed run left
(:func:`remove_interrupted_writes`). The tensors files hold no pickle.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save

import dropnet
from dropnet.core.errors import ConfigError, RunDirError
from dropnet.core.fileio import atomic_write_bytes, atomic_write_json, read_json, remove_temp_files
from dropnet.trainer.models import InputSpec
from dropnet.trainer.pretrain.checkpoint import CHECKPOINT_DIR, CHECKPOINT_FILES
from dropnet.trainer.pretrain.config import PretrainConfig
from dropnet.trainer.pretrain.inputs import VisibleMap
from dropnet.trainer.pretrain.layer import Layer
from dropnet.trainer.rundir import (
    CONFIG_FILE, METRICS_FILE, RUN_FORMAT, cpu_state_dict, load_weights, spec_from_dict, spec_to_dict, versions,
)

PRETRAIN_FORMAT = "dropnet-pretrain/1"
INPUT_FILE = "input.safetensors"
LAYER_FILES = "layer-*.safetensors"
RUN_FILES = (CONFIG_FILE, INPUT_FILE, LAYER_FILES, METRICS_FILE)
"""The files pretraining writes at the top of a run directory (names and patterns)."""

log = logging.getLogger(__name__)


def layer_file(index: int) -> str:
    """File name of the layer at 0-based ``index`` (layer-1.safetensors for the bottom layer)."""
    return f"layer-{index + 1}.safetensors"


def write_config(
    run_dir: Path, config: PretrainConfig, spec: InputSpec, dataset: dict[str, Any], layers: list[dict[str, Any]],
) -> None:
    """Write ``config.json`` of a pretraining run that is about to start.

    It holds ``format``, ``dropnet_version``, ``config`` (a PretrainConfig dict, its seed included),
    ``input`` (the data's InputSpec), ``dataset`` (name, split sizes, source files with SHA-256),
    ``layers`` (per layer: kind, visible and hidden units, visible type, file), ``versions``,
    ``created`` and ``command``; ``final_metrics`` is added when the last layer is done.
    """
    atomic_write_json(
        Path(run_dir) / CONFIG_FILE,
        {
            "format": PRETRAIN_FORMAT,
            "dropnet_version": dropnet.__version__,
            "config": config.to_dict(),
            "input": spec_to_dict(spec),
            "dataset": dataset,
            "layers": layers,
            "versions": versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": sys.argv,
        },
    )


def read_config(run_dir: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a pretraining run, or a RunDirError saying what ``run_dir`` is instead."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        what = "does not exist" if not run_dir.exists() else f"has no {CONFIG_FILE}"
        raise RunDirError(f"{run_dir} is not a pretraining run directory (written by dropnet pretrain): it {what}")
    raw = read_json(path, RunDirError)
    found = raw.get("format") if isinstance(raw, dict) else None
    if found == RUN_FORMAT:
        raise RunDirError(
            f"{run_dir} is a training run directory (dropnet train), not a pretraining run; expected a directory "
            "written by dropnet pretrain"
        )
    if found != PRETRAIN_FORMAT:
        raise RunDirError(f"{path}: expected format {PRETRAIN_FORMAT!r}, got {found!r}")
    for key, kind in (("config", dict), ("input", dict), ("layers", list)):
        if not isinstance(raw.get(key), kind):
            raise RunDirError(f"{path}: expected {kind.__name__} under {key!r}, got {raw.get(key)!r}")
    return raw


def update_config(run_dir: Path, **fields: Any) -> None:
    """Add or replace top-level fields of the run's ``config.json``."""
    raw = read_config(run_dir)
    raw.update(fields)
    atomic_write_json(Path(run_dir) / CONFIG_FILE, raw)


def load_config(run_dir: Path) -> tuple[PretrainConfig, InputSpec, list[dict[str, Any]]]:
    """The validated config, input spec and layer plan recorded in ``run_dir``'s ``config.json``."""
    raw = read_config(run_dir)
    path = Path(run_dir) / CONFIG_FILE
    try:
        config = PretrainConfig.from_dict(raw["config"])
        spec = spec_from_dict(raw["input"])
        layers = [
            {"visible": int(e["visible"]), "hidden": int(e["hidden"]), "visible_type": str(e["visible_type"])}
            for e in raw["layers"]
        ]
    except KeyError as exc:
        raise RunDirError(f"{path}: incomplete, lacks {exc}") from None
    except (TypeError, ValueError, IndexError, ConfigError) as exc:
        raise RunDirError(f"{path}: invalid ({exc})") from None
    if [entry["hidden"] for entry in layers] != config.pretrain.hidden:
        raise RunDirError(f"{path}: 'layers' does not match config.pretrain.hidden {config.pretrain.hidden}")
    return config, spec, layers


def save_layer(run_dir: Path, index: int, layer: Layer) -> None:
    """Write the trained layer at 0-based ``index``."""
    atomic_write_bytes(Path(run_dir) / layer_file(index), save(cpu_state_dict(layer), metadata={"format": "pt"}))


def save_visible_map(run_dir: Path, visible: VisibleMap) -> None:
    """Write the first layer's visible map."""
    atomic_write_bytes(Path(run_dir) / INPUT_FILE, save(visible.tensors(), metadata={"format": "pt"}))


def load_layer(run_dir: Path, index: int, plan: dict[str, Any]) -> Layer:
    """The layer at 0-based ``index`` as ``plan`` (an entry of config.json's ``layers``) describes it."""
    layer = Layer(plan["visible"], plan["hidden"], plan["visible_type"])
    load_weights(Path(run_dir) / layer_file(index), layer)
    return layer


def load_visible_map(run_dir: Path, visible_type: str, features: int) -> VisibleMap:
    """The first layer's visible map of ``features`` inputs."""
    path = Path(run_dir) / INPUT_FILE
    if not path.is_file():
        raise RunDirError(f"{path} is missing; expected the first layer's visible map (scale, shift)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunDirError(f"{path}: not a readable safetensors file ({exc})") from None
    for name in ("scale", "shift"):
        if name not in tensors or tuple(tensors[name].shape) != (features,):
            found = tuple(tensors[name].shape) if name in tensors else "missing"
            raise RunDirError(f"{path}: expected a tensor {name!r} of shape ({features},), got {found}")
    return VisibleMap(visible_type, tensors["scale"], tensors["shift"])  # type: ignore[arg-type]


def remove_interrupted_writes(run_dir: Path) -> list[Path]:
    """Delete the temporary files a killed pretraining run left in ``run_dir`` and its checkpoint; log each."""
    run_dir = Path(run_dir)
    removed = remove_temp_files(run_dir, RUN_FILES) + remove_temp_files(run_dir / CHECKPOINT_DIR, CHECKPOINT_FILES)
    for path in removed:
        log.info("removed %s, a temporary file left by an interrupted write", path)
    return removed

