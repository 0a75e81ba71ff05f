"""Random draws from a caller's ``torch.Generator`` (on the tensors' device), so every sample is seeded."""

from __future__ import annotations

import torch


def bernoulli(p: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """0/1 draws with success probabilities ``p``, in ``p``'s dtype."""
    return (torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p).to(p.dtype)


def normal(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal draws shaped, placed and typed like ``like``."""
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
