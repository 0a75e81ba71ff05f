"""Restricted Boltzmann machines with logistic hidden units, trained by contrastive divergence CD-k.

Energies (h binary; parameters as in :mod:`dropnet.trainer.pretrain.layer`):

* Bernoulli–Bernoulli (v binary; data in [0, 1] act as probabilities):
  E(v, h) = -b·v - c·h - h·W·v
* Gaussian–Bernoulli (v real, unit variance: the data standardised):
  E(v, h) = ½‖v - b‖² - c·h - h·W·v

Both give p(h_j = 1 | v) = σ(c_j + W_j·v); p(v | h) is Bernoulli(σ(b + Wᵀh)) or N(b + Wᵀh, I).
The free energy F(v) = -log Σ_h exp(-E(v, h)) sums the hidden units out in closed form.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dropnet.trainer.pretrain.config import VisibleType
from dropnet.trainer.pretrain.layer import Layer
from dropnet.trainer.pretrain.sampling import bernoulli, normal


@dataclass(frozen=True)
class Statistics:
    """Means over a batch of the sufficient statistics the log-likelihood gradient needs."""

    vh: torch.Tensor
    """[hidden, visible]: mean of h·vᵀ, h replaced by its conditional expectation p(h | v)."""
    v: torch.Tensor
    """[visible]: mean of v."""
    h: torch.Tensor
    """[hidden]: mean of p(h | v)."""


@dataclass(frozen=True)
class CDResult:
    """The two phases of a CD-k step and the reconstruction it made."""

    positive: Statistics
    """Data term: v from the batch, p(h | v) exact."""
    negative: Statistics
    """Model term: v after k Gibbs steps from the data, p(h | v_k)."""
    reconstruction: torch.Tensor
    """E[v | h₀], h₀ sampled from p(h | data): the first step's mean reconstruction."""


class RBM(Layer):
    """An RBM trained by CD-``cd_k``."""

    def __init__(self, visible: int, hidden: int, visible_type: VisibleType, cd_k: int = 1) -> None:
        super().__init__(visible, hidden, visible_type)
        self.cd_k = cd_k

    def sample_visible(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A draw of v from p(v | h)."""
        mean = self.visible_mean(h)
        if self.visible_type == "bernoulli":
            return bernoulli(mean, generator)
        return mean + normal(mean, generator)

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """E(v, h) per row, [batch]."""
        coupling = (F.linear(v, self.weight) * h).sum(dim=1)
        return self._visible_term(v) - h @ self.hidden_bias - coupling

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = -log Σ_h exp(-E(v, h)) per row, [batch]."""
        return self._visible_term(v) - F.softplus(F.linear(v, self.weight, self.hidden_bias)).sum(dim=1)

    def _visible_term(self, v: torch.Tensor) -> torch.Tensor:
        if self.visible_type == "bernoulli":
            return -(v @ self.visible_bias)
        return 0.5 * ((v - self.visible_bias) ** 2).sum(dim=1)

    @torch.no_grad()
    def contrastive_divergence(self, v0: torch.Tensor, k: int, generator: torch.Generator) -> CDResult:
        """The positive and negative statistics of CD-k started at the data ``v0``.

        The chain alternates h ~ p(h | v), v ~ p(v | h) k times; the negative statistics use the
        sampled v_k and the exact p(h | v_k) (the Rao-Blackwellised estimate of the model's h·vᵀ).
        """
        h0 = self.hidden_probs(v0)
        v, h = v0, h0
        reconstruction = None
        for _ in range(k):
            h_sample = bernoulli(h, generator)
            if reconstruction is None:
                reconstruction = self.visible_mean(h_sample)
            v = self.sample_visible(h_sample, generator)
            h = self.hidden_probs(v)
        return CDResult(_statistics(v0, h0), _statistics(v, h), reconstruction)

    def train_step(self, v: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``.grad`` = the CD-k estimate of -∂ log p(v)/∂θ (batch mean): model term minus data term."""
        result = self.contrastive_divergence(v, self.cd_k, generator)
        positive, negative = result.positive, result.negative
        self.weight.grad = negative.vh - positive.vh
        self.hidden_bias.grad = negative.h - positive.h
        self.visible_bias.grad = negative.v - positive.v
        return ((result.reconstruction - v) ** 2).sum()


def _statistics(v: torch.Tensor, h: torch.Tensor) -> Statistics:
    return Statistics(vh=h.T @ v / len(v), v=v.mean(dim=0), h=h.mean(dim=0))
