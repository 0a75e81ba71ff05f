"""The run directory: what a training run writes and what the exporter reads.

Layout::

    RUN_DIR/config.json        everything needed to rebuild the model (see RUN_FORMAT)
    RUN_DIR/model.safetensors  best-by-validation weights (state_dict, no pickle)
    RUN_DIR/metrics.jsonl      one JSON object per epoch
    RUN_DIR/curves.png         learning curves
    RUN_DIR/checkpoint/        latest state for --resume (weights, optimiser, RNG, epoch)

A killed run can leave temporary files of these (``.NAME.XXXXXXXX.tmp``); ``--resume`` removes
them (:func:`remove_interrupted_writes`).

``config.json`` holds ``format``, ``dropnet_version``, ``config`` (a :class:`TrainConfig` dict),
``input`` (an :class:`InputSpec` dict), ``dataset`` (name, split sizes), ``versions`` (python,
torch, numpy), ``created`` (UTC ISO time), ``command`` (argv) and, once training ends,
``final_metrics``.
"""

from __future__ import annotations

import logging
import platform
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

import dropnet
from dropnet.core.errors import ConfigError, RunDirError
from dropnet.core.fileio import atomic_write_bytes, atomic_write_json, read_json, remove_temp_files
from dropnet.trainer.checkpoint import CHECKPOINT_DIR, CHECKPOINT_FILES
from dropnet.trainer.config import TrainConfig
from dropnet.trainer.models import InputSpec, build_model

RUN_FORMAT = "dropnet-run/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
RUN_FILES = (CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE, CURVES_FILE)
"""The files training writes at the top of a run directory."""

log = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    """Versions of the software that made an artifact."""
    return {
        "dropnet": dropnet.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def spec_to_dict(spec: InputSpec) -> dict[str, Any]:
    """JSON form of an :class:`InputSpec`."""
    return asdict(spec)


def spec_from_dict(raw: dict[str, Any]) -> InputSpec:
    """Inverse of :func:`spec_to_dict`."""
    return InputSpec(
        shape=tuple(int(d) for d in raw["shape"]),
        num_classes=int(raw["num_classes"]),
        mean=float(raw["mean"]),
        std=float(raw["std"]),
        value_range=(float(raw["value_range"][0]), float(raw["value_range"][1])),
        class_labels=tuple(str(c) for c in raw["class_labels"]),
    )


def write_config(run_dir: Path, config: TrainConfig, spec: InputSpec, dataset: dict[str, Any]) -> None:
    """Write ``config.json`` describing a run that is about to start."""
    atomic_write_json(
        Path(run_dir) / CONFIG_FILE,
        {
            "format": RUN_FORMAT,
            "dropnet_version": dropnet.__version__,
            "config": config.to_dict(),
            "input": spec_to_dict(spec),
            "dataset": dataset,
            "versions": versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": sys.argv,
        },
    )


def update_config(run_dir: Path, **fields: Any) -> None:
    """Add or replace top-level fields of an existing ``config.json``."""
    raw = read_config(run_dir)
    raw.update(fields)
    atomic_write_json(Path(run_dir) / CONFIG_FILE, raw)


def reopen_config(
    run_dir: Path, raw: dict[str, Any], config: dict[str, Any], stored: InputSpec, spec: InputSpec,
    verb: str = "trained",
) -> None:
    """Rewrite a resumed run's config.json (read as ``raw``) with its ``config`` and without its stale final
    metrics; refuse if the data's input spec ``spec`` differs from the ``stored`` one the run was ``verb`` on."""
    if stored != spec:
        raise RunDirError(
            f"cannot resume {run_dir}: it was {verb} on inputs {stored}, but the data now gives {spec}; "
            "resume with the same data or start a new run"
        )
    raw.pop("final_metrics", None)
    atomic_write_json(Path(run_dir) / CONFIG_FILE, {**raw, "config": config})


def read_config(run_dir: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of ``run_dir`` (with ``config`` and ``input`` objects), or a :class:`RunDirError`."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a dropnet run directory: {CONFIG_FILE} is missing")
    raw = read_json(path, RunDirError)
    if not isinstance(raw, dict) or raw.get("format") != RUN_FORMAT:
        raise RunDirError(f"{path}: expected format {RUN_FORMAT!r}, got {raw.get('format') if isinstance(raw, dict) else raw!r}")
    for key in ("config", "input"):
        if not isinstance(raw.get(key), dict):
            raise RunDirError(f"{path}: expected an object under {key!r}, got {raw.get(key)!r}")
    return raw


def load_config(run_dir: Path) -> tuple[TrainConfig, InputSpec]:
    """The validated training config and input spec recorded in ``run_dir``'s ``config.json``."""
    path = Path(run_dir) / CONFIG_FILE
    raw = read_config(run_dir)
    try:
        config = TrainConfig.from_dict(raw["config"])
        config.validate()
        spec = spec_from_dict(raw["input"])
    except KeyError as exc:
        raise RunDirError(f"{path}: incomplete, 'input' lacks {exc}") from None
    except (TypeError, ValueError, IndexError, ConfigError) as exc:
        raise RunDirError(f"{path}: invalid ({exc})") from None
    return config, spec


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state_dict as contiguous CPU tensors, as safetensors stores them."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_weights(path: Path, weights: dict[str, torch.Tensor]) -> None:
    """Write ``weights`` (a :func:`cpu_state_dict`) as safetensors, atomically and durably."""
    atomic_write_bytes(path, save(weights, metadata={"format": "pt"}))


def remove_interrupted_writes(run_dir: Path) -> list[Path]:
    """Delete the temporary files that writes of a killed run left in ``run_dir`` and its checkpoint; log each.

    Only ``atomic_write``'s temporary files of the files training writes (:data:`RUN_FILES`,
    the checkpoint's files) are touched; anything else in the directory stays.
    """
    run_dir = Path(run_dir)
    removed = remove_temp_files(run_dir, RUN_FILES) + remove_temp_files(run_dir / CHECKPOINT_DIR, CHECKPOINT_FILES)
    for path in removed:
        log.info("removed %s, a temporary file left by an interrupted write", path)
    return removed


def load_weights(path: Path, model: nn.Module) -> None:
    """Load safetensors weights into ``model``, refusing missing, corrupt or mismatched files."""
    if not Path(path).is_file():
        raise RunDirError(f"weights file {path} is missing")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunDirError(f"{path}: not a readable safetensors file ({exc})") from None
    expected = model.state_dict()
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise RunDirError(f"{path}: tensors do not match the configured model (missing {missing}, unexpected {extra})")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise RunDirError(
                f"{path}: tensor {name} has shape {tuple(tensor.shape)}, the config expects {tuple(expected[name].shape)}"
            )
    model.load_state_dict(state)


def load_run(run_dir: str | Path) -> tuple[TrainConfig, InputSpec, nn.Sequential]:
    """Rebuild a run's network from ``config.json`` and load its best weights, in eval mode."""
    run_dir = Path(run_dir)
    config, spec = load_config(run_dir)
    try:
        model = build_model(config.model, spec)
    except ConfigError as exc:
        raise RunDirError(
            f"{run_dir / CONFIG_FILE}: the recorded model does not fit the recorded input ({exc})"
        ) from None
    load_weights(run_dir / WEIGHTS_FILE, model)
    model.eval()
    return config, spec, model
