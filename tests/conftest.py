"""Fixtures shared across the test packages: a tiny run directory and its exported model package.

Both are session-scoped and must be treated as read-only; copy them (shutil.copytree) to alter them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.factories import make_run_dir
from dropnet.trainer.config import ModelConfig

TINY_NAME = "tiny-digits"


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run directory of a 64-16-16-10 ReLU MLP on the digits spec (1×8×8 inputs in 0..16), seeded weights."""
    return make_run_dir(tmp_path_factory.mktemp("runs") / TINY_NAME, ModelConfig(hidden=[16, 16]))


@pytest.fixture(scope="session")
def tiny_package(tiny_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model package exported from :func:`tiny_run_dir` (name "tiny-digits", version "1")."""
    from dropnet.exporter.package import export_package

    return export_package(tiny_run_dir, tmp_path_factory.mktemp("packages") / TINY_NAME)
