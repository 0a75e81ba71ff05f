"""Network builders: MLPs and conv nets with dropout at every site.

A network is an ``nn.Sequential`` of a small, fixed set of module types — :class:`Standardize`,
``nn.Flatten``, :class:`~dropnet.trainer.dropout.Dropout`, ``nn.Linear``, ``nn.Conv2d``,
``nn.BatchNorm1d/2d``, ``nn.ReLU``, ``nn.Sigmoid``, :class:`Maxout`, ``nn.MaxPool2d`` — so that
the exporter can translate it layer by layer. Block order:

* MLP: Standardize → Flatten → Dropout(p_in) → [Linear → (BN) → act → Dropout(p_h)]* → Linear
* conv: Standardize → Dropout(p_in) → [Conv → (BN) → act → MaxPool → Dropout(p_conv)]* → Flatten
  → [Linear → (BN) → act → Dropout(p_h)]* → Linear

The network's input is the raw data (e.g. MNIST pixels 0..255); :class:`Standardize` holds the
training set's scalar mean and standard deviation as buffers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dropnet.core.errors import ConfigError
from dropnet.trainer.config import ModelConfig
from dropnet.trainer.dropout import Dropout


@dataclass(frozen=True)
class InputSpec:
    """Shape and normalisation of the network's input, measured on the training set."""

    shape: tuple[int, ...]
    """Shape of one example: (features,) or (channels, height, width)."""
    num_classes: int
    mean: float
    """Scalar mean subtracted from every input value."""
    std: float
    """Scalar standard deviation every centred input value is divided by."""
    value_range: tuple[float, float]
    """Range of raw input values in the data (e.g. (0, 255) for MNIST pixels)."""
    class_labels: tuple[str, ...]
    """Name of each class, indexed by the class id the network predicts."""


class Standardize(nn.Module):
    """(x - mean) / std with scalar, fixed statistics."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Maxout(nn.Module):
    """Max over groups of ``pieces`` consecutive channels/features (dimension 1)."""

    def __init__(self, pieces: int) -> None:
        super().__init__()
        self.pieces = pieces

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(1, (-1, self.pieces)).amax(dim=2)


def _activation(cfg: ModelConfig) -> nn.Module:
    if cfg.activation == "relu":
        return nn.ReLU()
    if cfg.activation == "sigmoid":
        return nn.Sigmoid()
    return Maxout(cfg.maxout_pieces)


def build_model(cfg: ModelConfig, spec: InputSpec) -> nn.Sequential:
    """Build the training-time network described by ``cfg`` for inputs described by ``spec``.

    Raises :class:`ConfigError` when ``cfg`` is invalid or does not fit ``spec`` (a conv net on flat
    inputs, more pooling stages than the input's height and width allow).
    """
    cfg.validate()
    retain = iter(cfg.resolved_retain())
    pieces = cfg.maxout_pieces if cfg.activation == "maxout" else 1
    layers: list[nn.Module] = [Standardize(spec.mean, spec.std)]
    shape = spec.shape
    if cfg.arch == "conv":
        if len(shape) != 3:
            raise ConfigError(
                f"--arch conv (model.arch: conv) needs (channels, height, width) inputs, got shape {shape}; "
                "use --arch mlp for flat feature vectors"
            )
        layers.append(Dropout(next(retain), cfg.flavour))
        channels, height, width = shape
        for block, out_channels in enumerate(cfg.conv_channels):
            if height < cfg.pool or width < cfg.pool:
                raise ConfigError(
                    f"{shape[1]}×{shape[2]} inputs allow at most {block} pooling stages of {cfg.pool}, got "
                    f"{len(cfg.conv_channels)} conv blocks (one per entry of model.conv_channels / --conv-channels)"
                )
            layers.append(nn.Conv2d(channels, out_channels * pieces, cfg.conv_kernel, padding=cfg.conv_kernel // 2))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm2d(out_channels * pieces))
            layers += [_activation(cfg), nn.MaxPool2d(cfg.pool), Dropout(next(retain), cfg.flavour)]
            channels, height, width = out_channels, height // cfg.pool, width // cfg.pool
        layers.append(nn.Flatten())
        features = channels * height * width
    else:
        layers += [nn.Flatten(), Dropout(next(retain), cfg.flavour)]
        features = 1
        for dim in shape:
            features *= dim
    for width in cfg.hidden:
        layers.append(nn.Linear(features, width * pieces))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm1d(width * pieces))
        layers += [_activation(cfg), Dropout(next(retain), cfg.flavour)]
        features = width
    layers.append(nn.Linear(features, spec.num_classes))
    return nn.Sequential(*layers)


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The Linear and Conv2d layers of ``model`` in network order."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def dropout_layers(model: nn.Module) -> list[Dropout]:
    """The dropout sites of ``model`` in network order."""
    return [m for m in model.modules() if isinstance(m, Dropout)]
