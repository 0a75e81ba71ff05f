"""Dropout layers in the paper's three flavours.

``retain`` is the paper's p: the probability that a unit is *kept*.

* ``paper``: training multiplies by r ~ Bernoulli(p) with no rescaling; the test-time network
  uses W·p for the weights that consume the dropped layer. Scaling a layer's input by p is the
  same as scaling the consuming weights by p (biases are not scaled), so at test time this module
  multiplies by p and the exporter folds that factor into the next layer's weights.
* ``inverted``: PyTorch's convention — masks divided by p during training, identity at test time.
* ``gaussian``: multiplicative noise N(1, (1-p)/p) (paper §10); identity at test time.

In every flavour E_mask[training output] equals the test-time output, unit by unit.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dropnet.trainer.config import FLAVOURS


class Dropout(nn.Module):
    """Dropout with retain probability ``retain`` in one of :data:`FLAVOURS`.

    Masks are drawn while the module is training, or while ``mc_sampling`` is set (Monte-Carlo
    model averaging at evaluation time, with batch norm kept in eval mode).
    """

    def __init__(self, retain: float, flavour: str) -> None:
        super().__init__()
        if flavour not in FLAVOURS:
            raise ValueError(f"unknown dropout flavour {flavour!r}; expected one of {FLAVOURS}")
        if not 0.0 < retain <= 1.0:
            raise ValueError(f"retain probability must lie in (0, 1], got {retain}")
        self.retain = float(retain)
        self.flavour = flavour
        self.mc_sampling = False

    def extra_repr(self) -> str:
        return f"retain={self.retain}, flavour={self.flavour}"

    def test_scale(self) -> float:
        """Factor the deterministic test-time network applies to this layer's output."""
        return self.retain if self.flavour == "paper" else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.retain >= 1.0:
            return x
        if self.training or self.mc_sampling:
            return x * self.sample_noise(x)
        scale = self.test_scale()
        return x if scale == 1.0 else x * scale

    def sample_noise(self, x: torch.Tensor) -> torch.Tensor:
        """One draw of the multiplicative noise for a tensor shaped like ``x``."""
        p = self.retain
        if self.flavour == "gaussian":
            noise = torch.randn_like(x)
            return noise.mul_(math.sqrt((1.0 - p) / p)).add_(1.0)
        keep = torch.rand_like(x).lt_(p)  # a float 0/1 mask: no bool→float copies forward or backward
        return keep if self.flavour == "paper" else keep.mul_(1.0 / p)


def set_mc_sampling(model: nn.Module, enabled: bool) -> None:
    """Switch Monte-Carlo mask sampling on or off for every :class:`Dropout` in ``model``."""
    for module in model.modules():
        if isinstance(module, Dropout):
            module.mc_sampling = enabled
