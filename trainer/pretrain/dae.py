"""Denoising autoencoders with tied weights: encode a corrupted input, reconstruct the clean one.

Encoder h = σ(W·ṽ + c) of the corrupted input ṽ; decoder r = σ(Wᵀ·h + b) (Bernoulli visible
units, cross-entropy loss) or Wᵀ·h + b (Gaussian visible units, ½ squared error: the Gaussian
negative log-likelihood at unit variance). The decoder reuses the encoder's W (tied weights): the
layer has exactly an RBM's parameters, W fits fewer numbers, and the stack is loaded into a network
the same way for both kinds. Corruption: "mask" sets each input to 0 with probability ``level``
(for standardised inputs 0 is the mean); "gaussian" adds N(0, level²) noise. The loss is summed
over the visible units and averaged over the batch, so a weight's gradient has the scale of an
RBM's CD gradient and the same learning rates suit both.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from dropnet.trainer.pretrain.config import VisibleType
from dropnet.trainer.pretrain.layer import Layer
from dropnet.trainer.pretrain.sampling import bernoulli, normal

Corruption = Literal["mask", "gaussian"]


class DenoisingAutoencoder(Layer):
    """A tied-weight denoising autoencoder with ``corruption`` of strength ``level``."""

    def __init__(
        self, visible: int, hidden: int, visible_type: VisibleType, corruption: Corruption = "mask", level: float = 0.2,
    ) -> None:
        super().__init__(visible, hidden, visible_type)
        self.corruption = corruption
        self.level = level

    def corrupt(self, v: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A corrupted copy of ``v``."""
        if self.corruption == "mask":
            return v * bernoulli(torch.full_like(v, 1.0 - self.level), generator)
        return v + self.level * normal(v, generator)

    def loss(self, v: torch.Tensor, corrupted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction loss of the clean ``v`` from ``corrupted``, batch mean; the mean reconstruction)."""
        activation = self.hidden_probs(corrupted) @ self.weight + self.visible_bias
        if self.visible_type == "bernoulli":
            per_row = F.binary_cross_entropy_with_logits(activation, v, reduction="none").sum(dim=1)
            return per_row.mean(), torch.sigmoid(activation)
        return 0.5 * ((activation - v) ** 2).sum(dim=1).mean(), activation

    def train_step(self, v: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``.grad`` = the gradient of :meth:`loss` on a fresh corruption of ``v``."""
        for param in self.parameters():
            param.grad = None
        loss, reconstruction = self.loss(v, self.corrupt(v, generator))
        loss.backward()
        return ((reconstruction.detach() - v) ** 2).sum()
