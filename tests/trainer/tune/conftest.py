"""Fixtures of the search tests: a tiny base config on the bundled digits and a two-parameter space."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from dropnet.trainer.config import TrainConfig
from dropnet.trainer.tune.space import Space, parse_space

TINY_SPACE = {"retain_hidden": {"low": 0.4, "high": 0.9}, "lr": {"low": 0.05, "high": 0.5, "log": True}}
"""Two parameters: trials differ, and a 2-epoch 64-16-10 net trains in well under a second."""


@pytest.fixture
def base() -> TrainConfig:
    """A 64-16-10 ReLU MLP on digits, 2 epochs of batches of 200, on the CPU."""
    config = TrainConfig(device="cpu", seed=0, preset="tiny")
    config.model.hidden = [16]
    config.optim.epochs, config.optim.batch_size = 2, 200
    return config


@pytest.fixture
def space() -> Space:
    return parse_space(TINY_SPACE)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny nets train faster on one thread than on two contending ones (CI shares its cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
