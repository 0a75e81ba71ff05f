"""What a dropout site is: where it sits in the module, how it draws its noise, how it scales."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from math import prod


class Granularity(str, Enum):
    """What one keep decision covers."""

    ELEMENT = "element"
    CHANNEL = "channel"
    """One decision per (row, channel), shared by the channel's spatial positions (Dropout1d/2d/3d)."""


@dataclass(frozen=True)
class SiteCall:
    """One dropout call seen while the module runs: where and what, before its shape is known."""

    path: str
    """The dropout module's qualified name; for a functional call, the calling module's name (empty
    for the root) and "/kind[n]", its n-th such call, e.g. "encoder.layers.0.self_attn/attention[0]"."""
    module_type: str
    kind: str
    """"dropout", "dropout1d"…"dropout3d", "attention", or "dropnet-paper"/"-inverted"/"-gaussian"."""
    retain: float
    """Probability of keeping a unit (1 - PyTorch's p); for the gaussian flavour it sets σ² = (1-p)/p."""
    flavour: str
    """Noise and scaling as in dropnet.trainer.dropout: PyTorch's dropout is "inverted" (scale 1/(1-p))."""
    granularity: Granularity

    @property
    def where(self) -> str:
        """The site's place in words, for messages."""
        return f"{self.path or '<root>'} ({self.module_type})"


@dataclass(frozen=True)
class SiteInfo:
    """A dropout site of an exported module, numbered in call order (the hash's site index)."""

    index: int
    call: SiteCall
    shape: tuple[int, ...]
    """Shape of the site's input for a batch of one row; its first axis is the rows factor k: the
    input's first axis is k·B, row b owning slices b·k … b·k + k - 1 (k = heads for attention
    weights returned by nn.MultiheadAttention, else 1)."""

    @property
    def drop_probability(self) -> float:
        """PyTorch's p: 1 - retain."""
        return 1.0 - self.call.retain

    @property
    def units(self) -> int:
        """Keep decisions per row and sample: elements of a row, or its channels."""
        if self.call.granularity is Granularity.CHANNEL:
            return self.shape[1]
        return prod(self.shape)

    def manifest_entry(self) -> dict[str, object]:
        """The site in the manifest's terms (dropnet.core.manifest.DropoutSite): kind is the flavour."""
        call = self.call
        return {"path": call.path, "kind": call.flavour, "retain": call.retain, "granularity": call.granularity.value}


def eval_scale(call: SiteCall) -> float:
    """Factor the eval-mode module applies at the site: p for dropnet's paper flavour, else 1."""
    return call.retain if call.flavour == "paper" else 1.0


def keep_scale(call: SiteCall) -> float:
    """Factor a kept unit is multiplied by while sampling: 1/p for inverted dropout, else 1."""
    return 1.0 / call.retain if call.flavour == "inverted" else 1.0
