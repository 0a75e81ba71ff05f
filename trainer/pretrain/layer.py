"""What every pretrained layer shares: its parameters, the up pass and the mean down pass.

A layer has ``weight`` W [hidden, visible], ``hidden_bias`` c [hidden] and ``visible_bias`` b
[visible], the same for an RBM and for a (tied-weight) denoising autoencoder, so a stack of either
kind is saved and loaded into a network the same way. Up: p(h | v) = σ(W·v + c). Down:
σ(Wᵀ·h + b) for Bernoulli visible units, Wᵀ·h + b for Gaussian ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dropnet.trainer.pretrain.config import VisibleType
from dropnet.trainer.pretrain.sampling import normal

INIT_STD = 0.01
"""Standard deviation of the initial weights (Hinton's practical guide to RBMs); biases start at 0."""
PARAMETERS = ("weight", "hidden_bias", "visible_bias")
"""The tensors a layer holds, by name (as saved in its safetensors file)."""


class Layer(nn.Module):
    """A layer of ``hidden`` logistic units over ``visible`` units of type ``visible_type``."""

    def __init__(self, visible: int, hidden: int, visible_type: VisibleType) -> None:
        super().__init__()
        self.visible_type = visible_type
        self.weight = nn.Parameter(torch.zeros(hidden, visible))
        self.hidden_bias = nn.Parameter(torch.zeros(hidden))
        self.visible_bias = nn.Parameter(torch.zeros(visible))

    def extra_repr(self) -> str:
        return f"visible={self.weight.shape[1]} ({self.visible_type}), hidden={self.weight.shape[0]}"

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Weights from N(0, INIT_STD²) drawn with ``generator``; biases 0."""
        with torch.no_grad():
            self.weight.copy_(normal(self.weight, generator) * INIT_STD)
            self.hidden_bias.zero_()
            self.visible_bias.zero_()

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        """p(h = 1 | v) = σ(W·v + c), [batch, hidden]."""
        return torch.sigmoid(F.linear(v, self.weight, self.hidden_bias))

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """The mean reconstruction from ``h``, [batch, visible]."""
        activation = h @ self.weight + self.visible_bias
        return torch.sigmoid(activation) if self.visible_type == "bernoulli" else activation

    def train_step(self, v: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Set each parameter's ``.grad`` for one SGD step on the batch ``v``; return the summed squared error of
        the step's reconstruction (a 0-d tensor, not synchronised with the device)."""
        raise NotImplementedError
