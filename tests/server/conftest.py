"""Fixtures of the serving-core tests: models directories built from real exported packages."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from dropnet.server.predictor import Predictor
from tests.factories import make_run_dir
from tests.server.gating import GatedPredictor
from tests.server.helpers import MODEL
from dropnet.trainer.config import ModelConfig


@pytest.fixture(scope="session")
def tiny_package_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second package of the tiny MLP with other weights (seed 1), exported as version "2"."""
    from dropnet.exporter.package import export_package

    run_dir = make_run_dir(tmp_path_factory.mktemp("runs-v2") / "tiny-v2", ModelConfig(hidden=[16, 16]), seed=1)
    return export_package(run_dir, tmp_path_factory.mktemp("packages-v2") / "tiny-v2", name=MODEL, version="2")


@pytest.fixture
def models_dir(tmp_path: Path, tiny_package: Path) -> Path:
    """A models directory holding the tiny package as ``tiny/1``."""
    root = tmp_path / "models"
    shutil.copytree(tiny_package, root / MODEL / "1")
    return root


@pytest.fixture(scope="session")
def tiny_predictor(tiny_package: Path) -> Predictor:
    """The tiny package loaded on the CPU: the reference each request is compared with."""
    return Predictor.load(tiny_package, device="cpu")


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> list[GatedPredictor]:
    """Every Predictor the repository loads from now on, gated (open while loading)."""
    loaded: list[GatedPredictor] = []
    real_load = Predictor.load

    def load(*args: Any, **kwargs: Any) -> GatedPredictor:
        loaded.append(GatedPredictor(real_load(*args, **kwargs)))
        return loaded[-1]

    monkeypatch.setattr("dropnet.server.repository.Predictor.load", load)
    return loaded
