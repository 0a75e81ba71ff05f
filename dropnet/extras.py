"""The optional ``[train]`` extra: which modules it brings, and a check that finds them without importing them.

``pip install dropnet`` serves and predicts; training, evaluation and export also need
``pip install "dropnet[train]"``. The CLI and the public API call :func:`require_train` first, so a
serving-only install answers with one line naming the extra instead of a traceback.
"""

from __future__ import annotations

import importlib.util

from dropnet.core.errors import DropnetError

TRAIN_MODULES = ("torch", "onnx", "onnxscript", "safetensors", "yaml", "sklearn", "matplotlib", "scipy", "optuna")
"""Import names of the distributions the ``[train]`` extra adds (pyproject.toml), in the order they are reported."""

TRAIN_INSTALL = 'pip install "dropnet[train]"'


class MissingExtraError(DropnetError, ModuleNotFoundError):
    """A feature needs an optional extra that is not installed.

    Also a ``ModuleNotFoundError``, so ``from dropnet import train`` fails the way imports do.
    """


def missing_train_module() -> str | None:
    """The first module of the ``[train]`` extra that cannot be found, or None when all are there."""
    return next((name for name in TRAIN_MODULES if importlib.util.find_spec(name) is None), None)


def require_train() -> None:
    """Raise :class:`MissingExtraError` naming the extra and the missing module unless ``[train]`` is installed."""
    missing = missing_train_module()
    if missing is not None:
        raise MissingExtraError(f"needs the training extra: {TRAIN_INSTALL} ({missing} is not installed)", name=missing)
