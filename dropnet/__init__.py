"""dropnet: dropout neural networks — train, export to ONNX, serve over gRPC.

The public API, imported on first use so that ``import dropnet`` stays light and needs no torch::

    from dropnet import Predictor       # serving install: load a model package, predict in-process
    from dropnet import train           # [train] extra: train a TrainConfig into a run directory
    from dropnet import export_package  # [train] extra: export a run directory to a model package
    from dropnet import export_module   # [train] extra: export your own nn.Module with dropout
    from dropnet import export_onnx     # [train] extra: export an ONNX file with Dropout nodes
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from dropnet.exporter.own.package import export_module, export_onnx
    from dropnet.exporter.package import export_package
    from dropnet.server.predictor import Predictor
    from dropnet.trainer.loop import train

_LAZY: dict[str, tuple[str, bool]] = {
    # name: (module, needs the [train] extra)
    "Predictor": ("dropnet.server.predictor", False),
    "export_module": ("dropnet.exporter.own.package", True),
    "export_onnx": ("dropnet.exporter.own.package", True),
    "export_package": ("dropnet.exporter.package", True),
    "train": ("dropnet.trainer.loop", True),
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import a public name on first access; without the ``[train]`` extra, its names raise MissingExtraError."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, needs_train = _LAZY[name]
    if needs_train:
        from dropnet.extras import require_train

        require_train()
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
