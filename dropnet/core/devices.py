"""The device names every stage accepts: the trainer's torch device and the server's execution provider."""

from __future__ import annotations

from typing import Literal, get_args

from dropnet.core.errors import ConfigError

Device = Literal["auto", "cpu", "cuda"]
""""auto" (CUDA when usable, else CPU), "cpu" or "cuda"."""
DEVICES: tuple[str, ...] = get_args(Device)


def check_device(name: object) -> str:
    """``name`` if it is one of :data:`DEVICES`, else a :class:`ConfigError` listing them."""
    if name not in DEVICES:
        raise ConfigError(f"device must be one of {list(DEVICES)}, got {name!r}")
    return str(name)
