"""Builders of small, real artifacts for tests: a run directory with seeded random weights."""

from __future__ import annotations

from pathlib import Path

import torch

from dropnet.trainer.config import ModelConfig, TrainConfig
from dropnet.trainer.models import InputSpec, build_model
from dropnet.trainer.rundir import WEIGHTS_FILE, cpu_state_dict, save_weights, write_config

DIGITS_SPEC = InputSpec(
    shape=(1, 8, 8), num_classes=10, mean=4.88, std=6.02, value_range=(0.0, 16.0),
    class_labels=tuple(str(d) for d in range(10)),
)


def make_run_dir(run_dir: Path, model: ModelConfig, spec: InputSpec = DIGITS_SPEC, seed: int = 0) -> Path:
    """Write a run directory whose network has seeded random weights (biases and BN stats too)."""
    torch.manual_seed(seed)
    net = build_model(model, spec)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith(("bias", "running_mean")):
                tensor.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
    config = TrainConfig(model=model, seed=seed)
    write_config(run_dir, config, spec, {"name": "synthetic", "train": 0, "val": 0, "test": 0})
    save_weights(run_dir / WEIGHTS_FILE, cpu_state_dict(net))
    return run_dir


def make_package(tmp_path: Path, **model_overrides: object) -> Path:
    """Export a model package (MLP on the digits spec, seeded random weights) into ``tmp_path / "package"``.

    ``model_overrides`` are :class:`ModelConfig` fields; the default network is 64-16-16-10.
    """
    from dropnet.exporter.package import export_package  # here, so trainer-only tests never import onnx

    model = ModelConfig(**{"hidden": [16, 16], **model_overrides})
    return export_package(make_run_dir(tmp_path / "tiny-digits", model), tmp_path / "package")
