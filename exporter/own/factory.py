"""A user's module from the command line: a factory ``package.module:callable`` and a weights file.

The factory is imported with the current directory on ``sys.path`` and called without arguments;
it must return an ``nn.Module``. Weights come from a safetensors file (``.safetensors``) or a
state dict saved with ``torch.save`` (read with ``torch.load(weights_only=True)``), and must
match the module's parameters and buffers key for key.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dropnet.core.errors import ConfigError

log = logging.getLogger(__name__)

LISTED_KEYS = 8
"""Keys named in a missing/unexpected-keys message; the rest are counted."""


def load_module(factory: str, weights: Path | None) -> tuple[nn.Module, dict[str, Any]]:
    """The module ``factory`` builds, with ``weights`` loaded, in eval mode; and how it was made (for the manifest)."""
    module = _build(factory)
    made: dict[str, Any] = {"factory": factory}
    if weights is not None:
        data = _read(weights)
        _load_state(module, _state_dict(weights, data), weights)
        made["weights"] = {"file": weights.name, "sha256": hashlib.sha256(data).hexdigest()}
    return module.eval(), made


def _build(factory: str) -> nn.Module:
    module_name, _, attribute = factory.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"factory {factory!r} is not MODULE:CALLABLE; expected e.g. my_pkg.models:build")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or any error the module raises while it is imported
        raise ConfigError(
            f"factory {factory}: cannot import {module_name} ({type(exc).__name__}: {_first_line(exc)}); "
            f"expected a module importable from {cwd}"
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"factory {factory}: {module_name} has no attribute {attribute}; expected a callable")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"factory {factory} is a {type(target).__name__}, not callable; expected a callable")
    try:
        module = target()
    except Exception as exc:  # any error of the user's factory
        raise ConfigError(
            f"factory {factory} raised {type(exc).__name__}: {_first_line(exc)}; expected it to build the module "
            "when called without arguments"
        ) from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"factory {factory} returned a {type(module).__name__}; expected a torch.nn.Module")
    return module


def _read(weights: Path) -> bytes:
    try:
        return weights.read_bytes()
    except OSError as exc:
        raise ConfigError(f"weights file {weights} cannot be read ({exc.strerror or exc})") from None


def _state_dict(weights: Path, data: bytes) -> Mapping[str, torch.Tensor]:
    """The tensors of the weights file: safetensors by suffix, else a torch.save'd state dict."""
    safetensors = weights.suffix == ".safetensors"
    expected = "a safetensors file" if safetensors else "a state dict saved with torch.save (.pt/.pth)"
    try:
        if safetensors:
            from safetensors.torch import load as load_safetensors

            state = load_safetensors(data)
        else:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)  # the bytes hashed
    except Exception as exc:  # safetensors' and torch's own errors, unpickling errors
        raise ConfigError(f"weights file {weights}: {type(exc).__name__}: {_first_line(exc)}; expected {expected}") \
            from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ConfigError(
            f"weights file {weights} holds a {type(state).__name__}, not a state dict; expected {expected} "
            "mapping parameter names to tensors"
        )
    return state


def _load_state(module: nn.Module, state: Mapping[str, torch.Tensor], weights: Path) -> None:
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    problems = [f"missing keys {_listed(missing)}"] if missing else []
    problems += [f"unexpected keys {_listed(unexpected)}"] if unexpected else []
    problems += [
        f"{key} is {list(state[key].shape)} but the module's is {list(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ][:LISTED_KEYS]
    if problems:
        raise ConfigError(
            f"weights file {weights} does not fit {type(module).__name__}: {'; '.join(problems)}; "
            "expected the module's state_dict keys and shapes"
        )
    module.load_state_dict(state)
    log.info("loaded %d tensors from %s", len(state), weights)


def _listed(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:LISTED_KEYS])
    return f"[{shown}{f', … ({len(keys) - LISTED_KEYS} more)' if len(keys) > LISTED_KEYS else ''}]"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
