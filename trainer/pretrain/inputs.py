"""What the first layer sees: the raw examples flattened and mapped affinely, v = x·scale + shift per input.

* Bernoulli visible units: x scaled into [0, 1] by the data's value range (MNIST: pixel / 255),
  one scale and shift for every input.
* Gaussian visible units: each input standardised with its own training-split mean and standard
  deviation (unit variance, as the Gaussian–Bernoulli energy assumes). A standard deviation is
  floored at :data:`STD_FLOOR` times the data's overall one, so near-constant inputs (MNIST's
  border pixels) are not blown up; constant ones map to 0.

The map is saved with the run, and :mod:`dropnet.trainer.pretrain.init` folds it into the first
weight layer of a fine-tuning network, whose own input is raw data standardised by one scalar mean
and standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dropnet.trainer.models import InputSpec
from dropnet.trainer.pretrain.config import VisibleType

STD_FLOOR = 0.1
"""Smallest per-input standard deviation, as a fraction of the data's overall one (Gaussian visible units)."""


@dataclass(frozen=True)
class VisibleMap:
    """v = x·scale + shift, x the flattened raw example."""

    visible_type: VisibleType
    scale: torch.Tensor
    """float32 [features]."""
    shift: torch.Tensor
    """float32 [features]."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The visible units of the raw examples ``x`` [batch, *shape]."""
        return x.flatten(1) * self.scale.to(x.device) + self.shift.to(x.device)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The map's tensors, as saved."""
        return {"scale": self.scale.contiguous(), "shift": self.shift.contiguous()}


def resolve_visible(setting: str, spec: InputSpec) -> VisibleType:
    """The first layer's visible type: ``setting``, or for "auto" bernoulli when the data are non-negative."""
    if setting != "auto":
        return setting  # type: ignore[return-value]
    return "bernoulli" if spec.value_range[0] >= 0 else "gaussian"


def visible_map(visible_type: VisibleType, train_x: np.ndarray, spec: InputSpec) -> VisibleMap:
    """The map of ``visible_type`` measured on the training split ``train_x`` [N, *shape] (raw values)."""
    features = int(np.prod(spec.shape))
    if visible_type == "bernoulli":
        low, high = spec.value_range
        scale = np.full(features, 1.0 / (high - low))
        shift = np.full(features, -low / (high - low))
    else:
        flat = train_x.reshape(len(train_x), features).astype(np.float64)
        mean = flat.mean(axis=0)
        std = np.maximum(flat.std(axis=0), STD_FLOOR * spec.std)
        scale, shift = 1.0 / std, -mean / std
    return VisibleMap(
        visible_type, torch.from_numpy(scale.astype(np.float32)), torch.from_numpy(shift.astype(np.float32)),
    )
