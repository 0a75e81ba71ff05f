"""Max-norm constraint: ‖w_i‖₂ ≤ c for each unit's incoming weight vector.

For ``nn.Linear`` the incoming vector of unit i is row i of the [out, in] weight; for
``nn.Conv2d`` it is output channel i's whole filter [in, kh, kw]. Rows already inside the ball
are multiplied by exactly 1.0, which leaves them bit-for-bit unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def project_max_norm(weight: torch.Tensor, c: float) -> None:
    """Project each output unit's incoming weights of ``weight`` onto the ball of radius ``c``, in place."""
    norms = torch.linalg.vector_norm(weight.flatten(1), dim=1)
    factors = (c / norms).clamp_(max=1.0)
    weight.mul_(factors.view(-1, *([1] * (weight.dim() - 1))))


class MaxNorm:
    """Applies per-layer max-norm bounds to a list of weight layers after each optimiser step."""

    def __init__(self, layers: list[nn.Module], bounds: list[float | None]) -> None:
        if len(layers) != len(bounds):
            raise ValueError(f"{len(layers)} weight layers but {len(bounds)} max-norm bounds")
        self.constrained = [(layer.weight, c) for layer, c in zip(layers, bounds) if c is not None]

    def __call__(self) -> None:
        for weight, c in self.constrained:
            project_max_norm(weight, c)
