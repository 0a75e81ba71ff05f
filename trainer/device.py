"""Choose the torch device a run trains on."""

from __future__ import annotations

import logging

import torch

from dropnet.core.devices import check_device
from dropnet.core.errors import ConfigError

logger = logging.getLogger(__name__)


def cuda_usable() -> bool:
    """True when CUDA is available and a tiny computation on it really runs."""
    if not torch.cuda.is_available():
        return False
    try:
        return torch.ones(2, device="cuda").add_(1).sum().item() == 4.0
    except (RuntimeError, AssertionError) as exc:  # no CUDA build, driver/arch mismatch, out of memory
        logger.warning("CUDA is present but unusable: %s", exc)
        return False


def resolve_device(name: str) -> torch.device:
    """Map "auto", "cpu" or "cuda" to a device; "cuda" that does not work is a :class:`ConfigError`."""
    if check_device(name) == "cpu":
        return torch.device("cpu")
    if name == "auto":
        return torch.device("cuda" if cuda_usable() else "cpu")
    if not cuda_usable():
        raise ConfigError(
            "device 'cuda' was requested but CUDA is not usable here (no GPU, no CUDA build of "
            "torch, or a tiny test computation failed); use --device cpu or --device auto"
        )
    return torch.device("cuda")
