"""Every zoo model exports, passes the gates, and its graphs keep dropnet's interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto
from torch import nn

from dropnet.core.outputs import Mode, graph_output_names
from dropnet.exporter.onnx_graph import IR_VERSION, OPSET
from dropnet.exporter.own import build_own_graphs
from tests.exporter.own.helpers import exported, mc_feeds, run
from tests.exporter.own.zoo import ZOO

NAMES = sorted(ZOO)


@pytest.mark.parametrize("name", NAMES)
def test_gates_pass_within_1e5(name: str) -> None:
    *_, graphs = exported(name)
    assert graphs.gates.deterministic <= 1e-5 and graphs.gates.samples <= 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_sites_are_found_in_call_order(name: str) -> None:
    *_, graphs = exported(name)
    assert [(s.call.kind, s.call.granularity.value) for s in graphs.sites] == list(ZOO[name].sites)
    assert [s.index for s in graphs.sites] == list(range(len(graphs.sites)))


def test_site_records_name_module_probability_and_granularity() -> None:
    *_, graphs = exported("transformer")
    first = graphs.sites[0]
    assert first.manifest_entry() == {
        "path": "encoder.layers.0.self_attn/attention[0]", "kind": "inverted", "retain": 0.9, "granularity": "element",
    }
    assert first.call.module_type == "MultiheadAttention" and first.drop_probability == pytest.approx(0.1)
    *_, cnn = exported("cnn")
    assert cnn.sites[0].manifest_entry() == {"path": "3", "kind": "inverted", "retain": 0.75, "granularity": "channel"}
    *_, flavours = exported("dropnet")
    assert [s.manifest_entry()["kind"] for s in flavours.sites] == ["paper", "gaussian", "inverted"]


@pytest.mark.parametrize("name", NAMES)
def test_graph_interface(name: str) -> None:
    _, x, graphs = exported(name)
    task = ZOO[name].task
    dtype = TensorProto.INT64 if x.dtype.is_floating_point is False else TensorProto.FLOAT
    for proto, mode in ((graphs.deterministic, Mode.DETERMINISTIC), (graphs.mc, Mode.MC)):
        assert (proto.ir_version, [(o.domain, o.version) for o in proto.opset_import]) == (IR_VERSION, [("", OPSET)])
        assert [o.name for o in proto.graph.output] == list(graph_output_names(task, mode))
        first = proto.graph.input[0]
        assert first.name == "x" and first.type.tensor_type.elem_type == dtype
        assert first.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [i.name for i in graphs.mc.graph.input] == ["x", "num_samples", "seed", "first_sample"]


@pytest.mark.parametrize("name", NAMES)
def test_rows_depend_on_their_own_seed_alone(name: str) -> None:
    """Row 0 alone (B = 1) and in a batch of 4 with other rows and seeds: the same samples."""
    _, x, graphs = exported(name)
    alone = run(graphs.mc, mc_feeds(x[:1], 5, [11]))
    batch = run(graphs.mc, mc_feeds(x, 5, [11, 12, 13, 14]))
    np.testing.assert_allclose(batch["samples"][:, :1], alone["samples"], atol=1e-6)
    first = "logits" if ZOO[name].task == "classification" else "prediction"
    single = run(graphs.deterministic, {"x": x[:1].numpy()})[first]
    np.testing.assert_allclose(run(graphs.deterministic, {"x": x.numpy()})[first][:1], single, atol=1e-6)


def test_the_first_part_runs_once_per_row_before_tiling() -> None:
    """The transformer's embedding and first attention scores are computed on B rows, not T·B."""
    *_, graphs = exported("transformer")
    embedding = [n.name for n in graphs.mc.graph.node if any(i.endswith("embedding.weight") for i in n.input)]
    assert embedding and all(name.startswith("once/") for name in embedding)
    assert any(n.op_type == "Softmax" and n.name.startswith("once/") for n in graphs.mc.graph.node)


class _AttentionOnly(nn.Module):
    """Its only dropout is nn.MultiheadAttention's, on the attention weights."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attention(x, x, x, need_weights=False)[0].mean(1))


def test_attention_dropout_is_a_sampled_site() -> None:
    """torch.onnx alone would drop it; here it is the one site, and the samples vary by it."""
    torch.manual_seed(0)
    x = torch.randn(3, 6, 8)
    graphs = build_own_graphs(_AttentionOnly().eval(), x)
    assert [(s.call.kind, s.call.path, s.shape) for s in graphs.sites] == [
        ("attention", "attention/attention[0]", (1, 2, 6, 6))
    ]
    assert run(graphs.mc, mc_feeds(x, 50, [1]))["std"].max() > 1e-3


def test_samples_vary_and_mc_mean_is_near_deterministic() -> None:
    _, x, graphs = exported("mlp")
    out = run(graphs.mc, mc_feeds(x, 400, [3]))
    assert out["std"].max() > 0.01
    det = run(graphs.deterministic, {"x": x.numpy()})["probabilities"]
    assert np.abs(out["probabilities"] - det).max() < 0.1


def test_in_place_and_noiseless_sites() -> None:
    """nn.Dropout(inplace=True) is a site like any; p = 2^-20 rounds to keep-all and only scales."""
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Linear(6, 8), nn.ReLU(inplace=True), nn.Dropout(0.5, inplace=True), nn.Linear(8, 4), nn.Dropout(2**-20),
        nn.Linear(4, 3),
    ).eval()
    graphs = build_own_graphs(module, torch.randn(4, 6))
    assert [s.call.path for s in graphs.sites] == ["2", "4"]
    assert not any(n.name.startswith("site1.") for n in graphs.mc.graph.node)
