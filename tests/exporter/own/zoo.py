"""The model zoo of the own-model export tests: small modules built in code, seeded weights.

Each entry builds a module in eval mode (batch norm with non-trivial running statistics) and an
example input of 4 rows. Nothing is downloaded; the regression MLP trains briefly on
scikit-learn's bundled diabetes data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dropnet.trainer.dropout import Dropout as DropnetDropout

ROWS = 4
VOCABULARY, TOKENS = 50, 12


@dataclass(frozen=True)
class Entry:
    """A zoo model: its builder, task, and the sites export must find, as (kind, granularity) in call order."""

    build: Callable[[], tuple[nn.Module, torch.Tensor]]
    task: str
    sites: tuple[tuple[str, str], ...]


def _settle_batch_norm(module: nn.Module, x: torch.Tensor) -> None:
    """Give batch norm running statistics that are not (0, 1): a few forward passes in training mode."""
    module.train()
    with torch.no_grad():
        for _ in range(3):
            module(x + torch.randn_like(x))
    module.eval()


def mlp() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 32), nn.Tanh(), nn.Dropout(0.5), nn.Linear(32, 5)
    )
    return module.eval(), torch.randn(ROWS, 20)


def cnn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(1)
    module = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout2d(0.25),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(16 * 4 * 4, 10),
    )
    x = torch.randn(ROWS, 1, 8, 8)
    _settle_batch_norm(module, x)
    return module, x


class _Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    """Stem, two residual blocks, global average pooling, dropout before the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(_Block(8), _Block(8))
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(self.stem(x)).mean(dim=(2, 3))
        return self.head(self.dropout(features))


def resnet() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(2)
    module, x = ResNet(), torch.randn(ROWS, 3, 8, 8)
    _settle_batch_norm(module, x)
    return module, x


class TextClassifier(nn.Module):
    """Token embedding, a 2-layer nn.TransformerEncoder (dropout 0.1), mean pooling, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCABULARY, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embedding(tokens)).mean(dim=1))


def transformer() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(3)
    return TextClassifier().eval(), torch.randint(0, VOCABULARY, (ROWS, TOKENS))


class FunctionalNet(nn.Module):
    """Dropout called in forward: F.dropout2d on feature maps, F.dropout on the hidden layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3, padding=1)
        self.hidden = nn.Linear(6 * 10, 24)
        self.out = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout1d(F.relu(self.conv(x)), 0.2, training=self.training)
        h = F.dropout(F.relu(self.hidden(h.flatten(1))), p=0.4, training=self.training)
        return self.out(h)


def functional() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(4)
    return FunctionalNet().eval(), torch.randn(ROWS, 4, 10)


def diabetes_regression() -> tuple[nn.Module, torch.Tensor]:
    """An MLP trained for 200 full-batch Adam steps on the standardised diabetes data (442 rows)."""
    from sklearn.datasets import load_diabetes

    torch.manual_seed(5)
    features, target = load_diabetes(return_X_y=True)
    x = torch.tensor(features, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(target, dtype=torch.float32)[:, None]
    y = (y - y.mean()) / y.std()
    module = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 32), nn.ReLU(),
                           nn.Dropout(0.1), nn.Linear(32, 1))
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-2)
    module.train()
    for _ in range(200):
        optimiser.zero_grad()
        F.mse_loss(module(x), y).backward()
        optimiser.step()
    return module.eval(), x[:ROWS]


class DropnetFlavours(nn.Module):
    """dropnet's own Dropout in its three flavours."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs = DropnetDropout(0.8, "paper")
        self.hidden = nn.Linear(12, 16)
        self.gaussian = DropnetDropout(0.5, "gaussian")
        self.inverted = DropnetDropout(0.75, "inverted")
        self.out = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.inverted(self.gaussian(torch.relu(self.hidden(self.inputs(x))))))


def dropnet_flavours() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(6)
    return DropnetFlavours().eval(), torch.randn(ROWS, 12)


class Attention(nn.Module):
    """nn.MultiheadAttention returning its weights, and a causal F.scaled_dot_product_attention."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(16, 2, dropout=0.2, batch_first=True)
        self.qkv = nn.Linear(16, 48)
        self.p = 0.3
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.attention(x, x, x)
        q, k, v = self.qkv(h).view(x.shape[0], -1, 2, 24).transpose(1, 2).chunk(3, dim=-1)
        scale = 1.0 / math.sqrt(8)
        p = self.p if self.training else 0.0
        h = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, scale=scale)
        return self.head(h.transpose(1, 2).flatten(2).mean(1))


def attention() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(7)
    return Attention().eval(), torch.randn(ROWS, 5, 16)


ZOO: dict[str, Entry] = {
    "mlp": Entry(mlp, "classification", (("dropout", "element"),) * 2),
    "cnn": Entry(cnn, "classification", (("dropout2d", "channel"), ("dropout", "element"))),
    "resnet": Entry(resnet, "classification", (("dropout", "element"),)),
    "transformer": Entry(
        transformer, "classification", (("attention", "element"), ("dropout", "element"), ("dropout", "element"),
                                        ("dropout", "element")) * 2,
    ),
    "functional": Entry(functional, "classification", (("dropout1d", "channel"), ("dropout", "element"))),
    "diabetes": Entry(diabetes_regression, "regression", (("dropout", "element"),) * 2),
    "dropnet": Entry(
        dropnet_flavours, "classification",
        (("dropnet-paper", "element"), ("dropnet-gaussian", "element"), ("dropnet-inverted", "element")),
    ),
    "attention": Entry(attention, "classification", (("attention", "element"), ("attention", "element"))),
}
