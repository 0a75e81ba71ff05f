"""Device resolution: CUDA only when it really works."""

from __future__ import annotations

import pytest
import torch

from dropnet.core.errors import ConfigError
from dropnet.trainer.device import cuda_usable, resolve_device


def test_cpu_is_always_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")


def test_without_cuda_auto_falls_back_and_cuda_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device cpu or --device auto"):
        resolve_device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA computations fail")
def test_cuda_that_reports_available_but_cannot_compute_is_not_used(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cuda_usable() is False
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_working_cuda_is_chosen_by_auto() -> None:
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")


def test_unknown_device_name_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"device must be one of \['auto', 'cpu', 'cuda'\], got 'tpu'"):
        resolve_device("tpu")
