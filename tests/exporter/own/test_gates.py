"""The gates fail when the graphs and the module disagree, or when the noise is not the seed's."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from dropnet.core.errors import ModelPackageError
from dropnet.core.outputs import Task
from dropnet.exporter.onnx_graph import GraphBuilder
from dropnet.exporter.own import Tolerance
from dropnet.exporter.own.gates import check_deterministic, check_reproducible, check_samples
from tests.exporter.own.helpers import exported

TOLERANCE = Tolerance()


def _perturbed(module: torch.nn.Module) -> torch.nn.Module:
    other = copy.deepcopy(module)
    with torch.no_grad():
        next(other.parameters()).add_(1e-2)
    return other


def test_deterministic_gate_catches_a_different_module() -> None:
    module, x, graphs = exported("mlp")
    with pytest.raises(ModelPackageError, match=r"deterministic\.onnx: logits \[4, 5\] differs .* by max"):
        check_deterministic(graphs.deterministic, _perturbed(module), x, Task.CLASSIFICATION, TOLERANCE)


def test_sample_gate_catches_a_different_module() -> None:
    module, x, graphs = exported("cnn")
    with pytest.raises(ModelPackageError, match=r"mc\.onnx: sample 0 for seed 0 differs"):
        check_samples(graphs.mc, _perturbed(module), x, graphs.sites, Task.CLASSIFICATION, TOLERANCE)


def test_sample_gate_catches_other_masks() -> None:
    """The sites' hash indices swapped: each sample is some dropout sample, but not the drawn one."""
    module, x, graphs = exported("mlp")
    swapped = [dataclasses.replace(site, index=1 - site.index) for site in graphs.sites]
    with pytest.raises(ModelPackageError, match="differs from the module run with the same masks"):
        check_samples(graphs.mc, module, x, swapped, Task.CLASSIFICATION, TOLERANCE)


def _random_mc() -> GraphBuilder:
    """A regression 'mc graph' whose samples come from RandomUniformLike (ONNX's own, seedless noise)."""
    g = GraphBuilder()
    shape = g.op("Concat", g.op("Reshape", "num_samples", g.i64([1])), g.op("Shape", "x"), axis=0)
    tiled = g.op("Expand", "x", shape)
    samples = g.op("Add", tiled, g.op("RandomUniformLike", tiled), out="samples")
    g.op("ReduceMean", samples, g.i64([0]), keepdims=0, out="mean")
    g.op("Identity", "mean", out="std")
    return g


def test_reproducibility_gate_catches_seedless_noise() -> None:
    g = _random_mc()
    floats = TensorProto.FLOAT
    proto = g.model(
        "random",
        [helper.make_tensor_value_info("x", floats, ["batch", 2]),
         helper.make_tensor_value_info("num_samples", TensorProto.INT64, []),
         helper.make_tensor_value_info("seed", TensorProto.INT64, ["seeds"])],
        [helper.make_tensor_value_info(n, floats, None) for n in ("mean", "std", "samples")],
        {},
        "",
    )
    with pytest.raises(ModelPackageError, match=r"mc\.onnx at onnxruntime ORT_DISABLE_ALL: a second run differs"):
        check_reproducible(proto, torch.from_numpy(np.ones((2, 2), np.float32)), Task.REGRESSION, TOLERANCE)
