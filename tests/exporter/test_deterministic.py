"""deterministic.onnx reproduces the torch test-time network, for every flavour and architecture."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator
from torch import nn

from dropnet.core.errors import ModelPackageError
from dropnet.exporter.graphs import IR_VERSION, OPSET, build_deterministic, verify_model
from tests.exporter.helpers import network, rows, run, session, torch_logits
from dropnet.trainer.config import FLAVOURS
from dropnet.trainer.dropout import Dropout

TOLERANCE = 1e-5
NETS = {
    "mlp-relu": dict(hidden=[24, 16]),
    "mlp-sigmoid": dict(hidden=[24, 16], activation="sigmoid"),
    "mlp-maxout": dict(hidden=[12, 8], activation="maxout", maxout_pieces=3),
    "mlp-relu-bn": dict(hidden=[24, 16], batch_norm=True),
    "mlp-maxout-bn": dict(hidden=[12], activation="maxout", batch_norm=True),
    "conv-relu": dict(arch="conv", conv_channels=[4, 6], conv_kernel=3, hidden=[12]),
    "conv-sigmoid-k5-bn": dict(arch="conv", conv_channels=[3], conv_kernel=5, hidden=[8], activation="sigmoid", batch_norm=True),
    "conv-maxout-bn": dict(arch="conv", conv_channels=[3, 4], conv_kernel=3, hidden=[8], activation="maxout", batch_norm=True),
}
PLAIN_OPS = {"Gemm", "Conv", "Pad", "Relu", "Sigmoid", "Reshape", "ReduceMax", "MaxPool", "Flatten", "Softmax"}


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("net", NETS)
def test_matches_the_torch_test_time_network(tmp_path: Path, net: str, flavour: str) -> None:
    model, spec = network(tmp_path, flavour=flavour, **NETS[net])
    proto = build_deterministic(model, spec, {"flavour": flavour})
    verify_model(proto)
    x = rows(spec, 16)
    expected = torch_logits(model, x)
    out = run(session(proto), x=x)
    reference = ReferenceEvaluator(proto).run(["logits"], {"x": x})
    assert np.abs(out["logits"] - expected).max() <= TOLERANCE
    assert np.abs(reference[0] - expected).max() <= TOLERANCE
    softmax = np.exp(expected - expected.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out["probabilities"], softmax / softmax.sum(axis=1, keepdims=True), atol=1e-6)
    assert {node.op_type for node in proto.graph.node} <= PLAIN_OPS  # no Dropout, no random op, no Sub/Div


@pytest.mark.parametrize("net", ["mlp-relu", "conv-relu"])
def test_scaling_follows_the_flavour(tmp_path: Path, net: str) -> None:
    """Paper-flavour weights are scaled by p, inverted ones are not; the parity tolerance tells them apart."""
    x = rows(network(tmp_path / "spec", **NETS[net])[1], 16)
    for flavour, wrong in (("paper", "inverted"), ("inverted", "paper")):
        model, spec = network(tmp_path / flavour, flavour=flavour, **NETS[net])
        logits = run(session(build_deterministic(model, spec, {})), x=x)["logits"]
        assert np.abs(logits - torch_logits(model, x)).max() <= TOLERANCE
        assert np.abs(logits - torch_logits(_with_flavour(model, wrong), x)).max() > 1000 * TOLERANCE


def test_standardize_is_folded_and_conv_padding_keeps_its_meaning(tmp_path: Path) -> None:
    """A padded first conv absorbs (x - m)/s·p by padding the raw input with m (which standardises to 0)."""
    model, spec = network(tmp_path, **NETS["conv-relu"])
    proto = build_deterministic(model, spec, {})
    pads = [node for node in proto.graph.node if node.op_type == "Pad"]
    assert len(pads) == 1 and proto.graph.node[0] is pads[0]
    value = next(i for i in proto.graph.initializer if i.name == pads[0].input[2])
    assert onnx.numpy_helper.to_array(value) == pytest.approx(spec.mean, rel=1e-6)
    first_conv = next(node for node in proto.graph.node if node.op_type == "Conv")
    assert list(next(a for a in first_conv.attribute if a.name == "pads").ints) == [0, 0, 0, 0]


def test_model_header_and_metadata(tmp_path: Path) -> None:
    model, spec = network(tmp_path, hidden=[8])
    proto = build_deterministic(model, spec, {"flavour": "paper", "classes": "0,1"})
    assert proto.ir_version == IR_VERSION and IR_VERSION <= 13  # onnxruntime 1.31 reads IR <= 13
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)]
    assert {p.key: p.value for p in proto.metadata_props} == {"flavour": "paper", "classes": "0,1", "graph": "deterministic"}
    (x,) = proto.graph.input
    assert x.name == "x" and [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim] == ["batch", 1, 8, 8]
    assert [o.name for o in proto.graph.output] == ["probabilities", "logits"]  # the output table's order


def test_metadata_that_contradicts_the_graph_is_refused(tmp_path: Path) -> None:
    model, spec = network(tmp_path, hidden=[8])
    with pytest.raises(ModelPackageError, match="graph='mc'"):
        build_deterministic(model, spec, {"graph": "mc"})
    with pytest.raises(ModelPackageError, match="str to str"):
        build_deterministic(model, spec, {"retain": 0.5})  # type: ignore[dict-item]


def test_verify_model_refuses_an_inconsistent_graph(tmp_path: Path) -> None:
    model, spec = network(tmp_path, hidden=[8])
    proto = build_deterministic(model, spec, {})
    logits = next(o for o in proto.graph.output if o.name == "logits")
    logits.type.tensor_type.elem_type = onnx.TensorProto.INT64
    with pytest.raises(ModelPackageError, match="dropnet_deterministic.*fails verification.*int64"):
        verify_model(proto)
    dangling = build_deterministic(model, spec, {})
    dangling.graph.node[0].input[0] = "missing"
    with pytest.raises(ModelPackageError, match="missing"):
        verify_model(dangling)


def test_unsupported_networks_are_refused_by_name(tmp_path: Path) -> None:
    model, spec = network(tmp_path, hidden=[8])
    with pytest.raises(ModelPackageError, match=r"module 4 \(Tanh\) cannot be exported"):
        build_deterministic(nn.Sequential(*list(model)[:4], nn.Tanh(), *list(model)[5:]), spec, {})
    with pytest.raises(ModelPackageError, match="must directly follow a Linear or Conv2d"):
        build_deterministic(nn.Sequential(*list(model)[:5], nn.BatchNorm1d(8), *list(model)[5:]), spec, {})
    with pytest.raises(ModelPackageError, match="does not accept activations of shape"):
        build_deterministic(model, replace(spec, shape=(1, 4, 4)), {})
    with pytest.raises(ModelPackageError, match="expected the nn.Sequential"):
        build_deterministic(nn.ModuleList(model), spec, {})  # type: ignore[arg-type]


def _with_flavour(model: nn.Sequential, flavour: str) -> nn.Sequential:
    """A copy of ``model`` whose dropout sites use ``flavour`` (same retain probabilities)."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if isinstance(module, Dropout):
            module.flavour = flavour
    return twin
