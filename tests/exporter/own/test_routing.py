"""The attention-dropout routing swaps F.dropout process-wide: other threads must not be routed."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from dropnet.exporter.own.intercept import _Interceptor  # the routing is internal; tested directly


def test_other_threads_get_the_original_dropout_while_one_export_routes() -> None:
    routed: list[str] = []
    owner = SimpleNamespace(
        _dropout=lambda func, args, kwargs: routed.append("dropout") or args[0],
        _attention=lambda func, args, kwargs: routed.append("attention") or args[0],
    )
    original = F.dropout
    x = torch.ones(1000)
    other: list[torch.Tensor] = []
    with _Interceptor._inner_calls_routed(owner):
        thread = threading.Thread(target=lambda: other.append(F.dropout(x, 0.5, training=True)))
        thread.start()
        thread.join()
        assert F.dropout(x, 0.5, training=True) is x  # this thread is routed
    assert routed == ["dropout"]
    dropped = (other[0] == 0).float().mean().item()
    assert 0.4 < dropped < 0.6  # the other thread's call really dropped units: 1000 draws, p = 0.5, ±6σ
    assert F.dropout is original
