"""Read a trained dropnet network into plain layer steps, and fold scalings into weights.

:func:`read_network` turns the ``nn.Sequential`` of ``dropnet.trainer.models`` into a list of steps that
hold float64 numpy weights (batch norm, eval statistics, already folded into the preceding
weight layer). The graph builders rewrite that list — a dropout site becomes noise (mc) or a
scalar :class:`Affine` (deterministic) — and :func:`fold_affines` folds every scalar affine map
into the next weight layer, in double precision, so the weights are rounded to float32 once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from dropnet.core.errors import ModelPackageError
from dropnet.trainer.dropout import Dropout
from dropnet.trainer.models import InputSpec, Maxout as MaxoutModule, Standardize as StandardizeModule


@dataclass(frozen=True)
class Standardize:
    """(x - mean) / std with scalar statistics."""

    mean: float
    std: float


@dataclass(frozen=True)
class Affine:
    """x * scale + shift, to be folded into the next weight layer."""

    scale: float
    shift: float = 0.0


@dataclass(frozen=True)
class Dense:
    """x @ weight.T + bias; weight [out, in]."""

    weight: np.ndarray
    bias: np.ndarray


@dataclass(frozen=True)
class Conv:
    """2-D convolution; weight [out, in/group, kh, kw]; pads (top, left, bottom, right)."""

    weight: np.ndarray
    bias: np.ndarray
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilations: tuple[int, int]
    group: int


@dataclass(frozen=True)
class Pad:
    """Constant padding of the two spatial dims with ``value``; pads (top, left, bottom, right)."""

    pads: tuple[int, int, int, int]
    value: float


@dataclass(frozen=True)
class Activation:
    """An elementwise non-linearity, by its ONNX op name ("Relu" or "Sigmoid")."""

    op: str


@dataclass(frozen=True)
class Maxout:
    """Max over groups of ``pieces`` consecutive channels of an input with feature shape ``features``."""

    pieces: int
    features: tuple[int, ...]


@dataclass(frozen=True)
class MaxPool:
    """2-D max pooling (floor mode); pads (top, left, bottom, right)."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]


@dataclass(frozen=True)
class Flatten:
    """[N, *features] -> [N, prod(features)]."""


@dataclass(frozen=True)
class Noise:
    """Dropout site number ``site`` (network order) on activations of feature shape ``features``."""

    site: int
    retain: float
    flavour: str
    features: tuple[int, ...]
    test_scale: float
    """Factor of the deterministic test-time network (p for the paper flavour, else 1)."""


Step = Standardize | Affine | Dense | Conv | Pad | Activation | Maxout | MaxPool | Flatten | Noise


def read_network(model: nn.Sequential, spec: InputSpec) -> list[Step]:
    """The steps of ``model`` (eval semantics, batch norm folded) for inputs of shape ``spec.shape``."""
    if not isinstance(model, nn.Sequential):
        raise ModelPackageError(f"expected the nn.Sequential of dropnet.trainer.models.build_model, got {type(model).__name__}")
    steps: list[Step] = []
    features = tuple(spec.shape)
    sites = 0
    with torch.no_grad():
        probe = torch.zeros(1, *features)
        for position, module in enumerate(model):
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                if not steps or not isinstance(steps[-1], (Dense, Conv)):
                    raise ModelPackageError(
                        f"module {position} ({module}) must directly follow a Linear or Conv2d layer to be folded"
                    )
                steps[-1] = _fold_batch_norm(steps[-1], module, position)
                continue
            steps.append(_step(module, position, features, sites))
            sites += isinstance(module, Dropout)
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.MaxPool2d, nn.Flatten, MaxoutModule)):
                try:
                    probe = module(probe)
                except RuntimeError as exc:
                    raise ModelPackageError(
                        f"module {position} ({module}) does not accept activations of shape {features} "
                        f"(network input {tuple(spec.shape)}): {exc}"
                    ) from None
                features = tuple(probe.shape[1:])
    return steps


def output_features(steps: list[Step]) -> int:
    """Number of outputs of the final Linear layer (the classes)."""
    if not steps or not isinstance(steps[-1], Dense):
        raise ModelPackageError("the network must end with a Linear layer producing the logits")
    return int(steps[-1].weight.shape[0])


def fold_affines(steps: list[Step]) -> list[Step]:
    """Fold every :class:`Affine` into the next Dense/Conv step (through Flatten); no Affine is left.

    W(a·x + c) + b = (a·W)x + (b + c·ΣW). For a padded conv and c ≠ 0 the zero padding of
    the affine-mapped input equals padding the raw input with -c/a, so an explicit :class:`Pad`
    precedes the folded, unpadded conv.
    """
    folded: list[Step] = []
    pending: Affine | None = None
    for step in steps:
        if isinstance(step, Affine):
            pending = step if pending is None else _compose(pending, step)
        elif pending is None or isinstance(step, Flatten):
            folded.append(step)
        elif isinstance(step, (Dense, Conv)):
            folded.extend(_absorb(step, pending))
            pending = None
        else:
            raise ModelPackageError(
                f"cannot fold the scaling of a dropout site or Standardize into a {type(step).__name__} step; "
                "expected a Linear or Conv2d layer (after an optional Flatten) to follow it"
            )
    if pending is not None:
        raise ModelPackageError("the network ends with a dropout site or Standardize; expected a Linear layer last")
    return folded


def _compose(first: Affine, then: Affine) -> Affine:
    """The affine map ``then`` ∘ ``first``."""
    return Affine(first.scale * then.scale, first.shift * then.scale + then.shift)


def _absorb(layer: Dense | Conv, affine: Affine) -> list[Step]:
    reduce_axes = tuple(range(1, layer.weight.ndim))
    weight = layer.weight * affine.scale
    bias = layer.bias + affine.shift * layer.weight.sum(axis=reduce_axes)
    if isinstance(layer, Dense):
        return [Dense(weight, bias)]
    if affine.shift == 0.0 or not any(layer.pads):
        return [replace(layer, weight=weight, bias=bias)]
    return [Pad(layer.pads, -affine.shift / affine.scale), replace(layer, weight=weight, bias=bias, pads=(0, 0, 0, 0))]


def _step(module: nn.Module, position: int, features: tuple[int, ...], site: int) -> Step:
    if isinstance(module, StandardizeModule):
        return Standardize(float(module.mean), float(module.std))
    if isinstance(module, Dropout):
        return Noise(site, module.retain, module.flavour, features, module.test_scale())
    if isinstance(module, nn.Linear):
        return Dense(_array(module.weight), _bias(module.bias, module.out_features))
    if isinstance(module, nn.Conv2d):
        return _conv(module, position)
    if isinstance(module, nn.ReLU):
        return Activation("Relu")
    if isinstance(module, nn.Sigmoid):
        return Activation("Sigmoid")
    if isinstance(module, MaxoutModule):
        return Maxout(module.pieces, features)
    if isinstance(module, nn.MaxPool2d):
        return _max_pool(module, position)
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise ModelPackageError(f"module {position}: Flatten must have start_dim=1, end_dim=-1, got {module}")
        return Flatten()
    raise ModelPackageError(
        f"module {position} ({type(module).__name__}) cannot be exported; expected one of Standardize, Flatten, "
        "Dropout, Linear, Conv2d, BatchNorm1d/2d, ReLU, Sigmoid, Maxout, MaxPool2d"
    )


def _conv(module: nn.Conv2d, position: int) -> Conv:
    if isinstance(module.padding, str) or module.padding_mode != "zeros":
        raise ModelPackageError(
            f"module {position} ({module}): expected integer zero padding, got padding={module.padding!r}, "
            f"padding_mode={module.padding_mode!r}"
        )
    pad_h, pad_w = module.padding
    return Conv(
        weight=_array(module.weight),
        bias=_bias(module.bias, module.out_channels),
        strides=_pair(module.stride),
        pads=(pad_h, pad_w, pad_h, pad_w),
        dilations=_pair(module.dilation),
        group=module.groups,
    )


def _max_pool(module: nn.MaxPool2d, position: int) -> MaxPool:
    if module.ceil_mode or module.return_indices or _pair(module.dilation) != (1, 1):
        raise ModelPackageError(f"module {position} ({module}): expected floor mode, dilation 1 and no indices")
    pad_h, pad_w = _pair(module.padding)
    return MaxPool(_pair(module.kernel_size), _pair(module.stride), (pad_h, pad_w, pad_h, pad_w))


def _fold_batch_norm(layer: Dense | Conv, bn: nn.BatchNorm1d | nn.BatchNorm2d, position: int) -> Dense | Conv:
    """y = γ(Wx + b - μ)/√(σ² + ε) + β as one weight layer (eval statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ModelPackageError(
            f"module {position} ({bn}) has no running statistics; expected track_running_stats=True"
        )
    gain = 1.0 / np.sqrt(_array(bn.running_var) + bn.eps)
    shift = np.zeros_like(gain)
    if bn.weight is not None:
        gain = gain * _array(bn.weight)
        shift = _array(bn.bias)
    if gain.shape[0] != layer.weight.shape[0]:
        raise ModelPackageError(
            f"module {position} ({bn}) normalises {gain.shape[0]} channels; "
            f"the layer before it has {layer.weight.shape[0]}"
        )
    weight = layer.weight * gain.reshape(-1, *([1] * (layer.weight.ndim - 1)))
    return replace(layer, weight=weight, bias=(layer.bias - _array(bn.running_mean)) * gain + shift)


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64).numpy()


def _bias(bias: torch.Tensor | None, size: int) -> np.ndarray:
    return _array(bias) if bias is not None else np.zeros(size)


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
