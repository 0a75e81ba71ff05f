"""What the benchmarks share: the paper's MNIST network with seeded random weights, as a run dir or a package.

The network is the paper's 784-1024-1024-1024-10 ReLU MLP (input retain 0.8, hidden 0.5, paper
flavour) on MNIST-shaped 1×28×28 inputs in 0..255. Scripts import this as ``benchmarks._common``
after putting the repository root first on ``sys.path`` (``tests.factories`` builds the run dir).
"""

from __future__ import annotations

from pathlib import Path

from tests.factories import make_run_dir
from dropnet.trainer.config import ModelConfig
from dropnet.trainer.models import InputSpec

MNIST_SPEC = InputSpec(
    shape=(1, 28, 28), num_classes=10, mean=33.32, std=78.57, value_range=(0.0, 255.0),
    class_labels=tuple(str(d) for d in range(10)),
)
PAPER_NET = ModelConfig(arch="mlp", hidden=[1024, 1024, 1024], activation="relu",
                        retain_input=0.8, retain_hidden=0.5, flavour="paper")
PAPER_NET_DESCRIPTION = "784-1024-1024-1024-10 ReLU, retain 0.8/0.5, paper flavour, random weights"


def paper_run_dir(run_dir: Path, seed: int = 0) -> Path:
    """A run directory of the paper's network with seeded random weights."""
    return make_run_dir(run_dir, PAPER_NET, MNIST_SPEC, seed)


def paper_package(work_dir: Path, out_dir: Path, name: str = "paper-mlp", version: str = "1") -> Path:
    """Export the paper's network (run dir written under ``work_dir``) as a model package in ``out_dir``."""
    from dropnet.exporter.package import export_package  # here, so importing this module stays light

    return export_package(paper_run_dir(work_dir / name), out_dir, name=name, version=version)
