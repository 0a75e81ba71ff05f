"""Shared pieces of the own-model export tests: cached exports of the zoo, runs in onnxruntime."""

from __future__ import annotations

from functools import cache

import numpy as np
import onnx
import torch
from torch import nn

from dropnet.exporter.own import OwnGraphs, build_own_graphs
from dropnet.exporter.own.gates import mc_feeds, run_graph, session
from tests.exporter.own.zoo import ZOO

__all__ = ["exported", "mc_feeds", "run"]


@cache
def exported(name: str) -> tuple[nn.Module, torch.Tensor, OwnGraphs]:
    """The zoo model ``name``, its example input and its graphs (built once per test session)."""
    entry = ZOO[name]
    module, x = entry.build()
    return module, x, build_own_graphs(module, x, task=entry.task)


def run(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of one run on the CPU, by name."""
    return run_graph(session(proto), feeds)
