"""Fixtures shared by the trainer tests."""

from __future__ import annotations

import pytest

from dropnet.trainer.config import DataConfig


@pytest.fixture(scope="session")
def digits():
    """The bundled digits dataset (1,198 train / 239 val / 360 test), loaded once."""
    from dropnet.trainer.data import load_dataset

    return load_dataset(DataConfig(name="digits"), seed=0)
