"""Modules the own-model export must refuse, each for one reason."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DataDependentGate(nn.Module):
    """Control flow on a tensor's value: torch.export cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x


class DataDependentBranch(nn.Module):
    """A network with a DataDependentGate inside."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.5), DataDependentGate())
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class NoisyInEval(nn.Module):
    """Adds gaussian noise whatever its mode."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x + 0.1 * torch.randn_like(x))


class DropoutAlwaysOn(nn.Module):
    """F.dropout without training=self.training: active in eval mode too."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(F.dropout(x, 0.5))


class TrainingShortcut(nn.Module):
    """Behaves differently in training mode in a way that is not dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(6, 2)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(x)
        return self.layer(h * 2 if self.training else h)


class SequenceFirst(nn.Module):
    """A sequence-first transformer layer: its dropout sees the rows on axis 1."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(x.transpose(0, 1)).mean(0))


def no_dropout() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.0), nn.Linear(8, 2))


def alpha_dropout() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.SELU(), nn.AlphaDropout(0.2), nn.Linear(8, 2))
