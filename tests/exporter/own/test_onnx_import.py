"""ONNX files with Dropout nodes (a training-mode torch export, a hand-built graph) to the two graphs."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from dropnet.core.errors import ModelPackageError
from dropnet.core.outputs import SAMPLES
from dropnet.core.seeding import row_seeds
from dropnet.exporter.onnx_graph import IR_VERSION, OPSET
from dropnet.exporter.own import OwnGraphs
from dropnet.exporter.own.onnx_import import build_onnx_graphs
from dropnet.exporter.own.reference import site_noise
from dropnet.exporter.own.sites import SiteInfo
from tests.exporter.own.helpers import mc_feeds, run

SEED, SAMPLES_T = 2024, 3


def _mlp() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 8), nn.Tanh(), nn.Dropout(0.1), nn.Linear(8, 5)
    )
    return module, torch.randn(4, 6)


class _Cnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.drop = nn.Dropout(0.25)
        self.head = nn.Sequential(nn.Linear(4 * 6 * 6, 12), nn.ReLU(), nn.Dropout(0.5), nn.Linear(12, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.relu(self.conv(x))).flatten(1))


def _cnn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(1)
    return _Cnn(), torch.randn(4, 1, 8, 8)


BUILDERS = {"mlp": _mlp, "cnn": _cnn}
NodeProtos = list[onnx.NodeProto]


@cache
def _imported(name: str) -> tuple[nn.Module, torch.Tensor, OwnGraphs]:
    """The module, rows, and the graphs built from its training-mode dynamo export (torch's default opset)."""
    module, x = BUILDERS[name]()
    program = torch.onnx.export(
        module.train(), (x,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("b")},), verbose=False, report=False
    )
    return module.eval(), x, build_onnx_graphs(program.model_proto)


def _masked_torch(module: nn.Module, x: torch.Tensor, sites: list[SiteInfo], seeds: np.ndarray, t: int) -> np.ndarray:
    """The eval-mode module with each nn.Dropout (in call order) multiplying by the rebuilt masks."""
    calls = iter(sites)

    def hook(_: nn.Module, __: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        return out * torch.from_numpy(site_noise(seeds, next(calls), t)).reshape(out.shape)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Dropout)]
    try:
        with torch.no_grad():
            return module(x).numpy()
    finally:
        for handle in handles:
            handle.remove()


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_torch_export_round_trips(name: str) -> None:
    module, x, graphs = _imported(name)
    assert graphs.gates.deterministic <= 1e-5 and graphs.gates.samples <= 1e-5
    with torch.no_grad():
        expected = module(x).numpy()
    assert np.abs(run(graphs.deterministic, {"x": x.numpy()})["logits"] - expected).max() <= 1e-5
    samples = run(graphs.mc, mc_feeds(x, SAMPLES_T, [SEED]))[SAMPLES]
    seeds = row_seeds(SEED, len(x))
    for t in range(SAMPLES_T):
        masked = _softmax(_masked_torch(module, x, graphs.sites, seeds, t))
        assert np.abs(samples[t] - masked).max() <= 1e-5
    assert not np.allclose(samples[0], samples[1])
    for proto in (graphs.deterministic, graphs.mc):
        assert (proto.ir_version, [(o.domain, o.version) for o in proto.opset_import]) == (IR_VERSION, [("", OPSET)])


def test_sites_are_the_dropout_nodes() -> None:
    *_, mlp = _imported("mlp")
    assert [(s.index, s.call.kind, s.call.module_type, s.shape) for s in mlp.sites] == [
        (0, "dropout", "ONNX Dropout", (1, 16)), (1, "dropout", "ONNX Dropout", (1, 8)),
    ]
    assert [s.manifest_entry()["retain"] for s in mlp.sites] == [0.7, 0.9]  # float32 ratios read as written
    entry = mlp.sites[0].manifest_entry()
    assert entry["kind"] == "inverted" and entry["granularity"] == "element" and entry["path"].startswith("node_")
    *_, cnn = _imported("cnn")
    assert [s.shape for s in cnn.sites] == [(1, 4, 6, 6), (1, 12)]


def _hand_built(
    *, dropout: NodeProtos | None = None, inputs: int = 1, batch: str | int = "N"
) -> onnx.ModelProto:
    """Another framework's graph at opset 13: x [N, 4] → MatMul → Relu → Dropout (ratio from a Constant node,
    training_mode True) → MatMul → Dropout (ratio initializer, no training_mode) → Add → y [N, 3]."""
    rng = np.random.default_rng(3)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 10)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((10, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b"),
        numpy_helper.from_array(np.array(0.4, np.float32), "ratio2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("Constant", [], ["ratio1"], value_float=0.2),
        helper.make_node("Constant", [], ["train"], value=helper.make_tensor("t", TensorProto.BOOL, [], [True])),
        *(dropout or [helper.make_node("Dropout", ["a1", "ratio1", "train"], ["d1", "mask1"], name="drop1")]),
        helper.make_node("MatMul", ["d1", "w2"], ["h2"]),
        helper.make_node("Dropout", ["h2", "ratio2"], ["d2"], name="drop2"),
        helper.make_node("Add", ["d2", "b"], ["y"]),
    ]
    graph_inputs = [helper.make_tensor_value_info(f"x{i}" if i else "x", TensorProto.FLOAT, [batch, 4])
                    for i in range(inputs)]
    graph = helper.make_graph(
        nodes, "framework", graph_inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])], weights
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)


def test_hand_built_graph_round_trips() -> None:
    proto = _hand_built()
    graphs = build_onnx_graphs(proto, task="regression", metadata={"source": "framework"})
    assert [(s.call.path, s.call.retain, s.shape) for s in graphs.sites] == [
        ("drop1", 0.8, (1, 10)), ("drop2", 0.6, (1, 3))
    ]
    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    x = np.random.default_rng(5).standard_normal((5, 4)).astype(np.float32)

    def numpy_net(m1: np.ndarray | float = 1.0, m2: np.ndarray | float = 1.0) -> np.ndarray:
        return (np.maximum(x @ weights["w1"], 0) * m1) @ weights["w2"] * m2 + weights["b"]

    assert np.abs(run(graphs.deterministic, {"x": x})["prediction"] - numpy_net()).max() <= 1e-5
    samples = run(graphs.mc, mc_feeds(torch.from_numpy(x), SAMPLES_T, [SEED]))[SAMPLES]
    seeds = row_seeds(SEED, len(x))
    for t in range(SAMPLES_T):
        masks = (site_noise(seeds, site, t) for site in graphs.sites)
        assert np.abs(samples[t] - numpy_net(*masks)).max() <= 1e-5
    assert {p.key: p.value for p in graphs.mc.metadata_props}["source"] == "framework"
    assert proto.opset_import[0].version == 13  # the caller's model is left alone


def test_old_opset_dropout_with_a_ratio_attribute() -> None:
    """Opset 10: the ratio is an attribute; the version converter turns it into a constant input."""
    weight = numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Dropout", ["h"], ["y"], ratio=0.25)],
        "old",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)], ir_version=5)
    graphs = build_onnx_graphs(model, task="regression")
    assert [(s.call.path, s.call.retain) for s in graphs.sites] == [("y", 0.75)]  # unnamed: named after its output
    assert graphs.gates.deterministic == 0.0 and graphs.gates.samples <= 1e-6


def test_token_ids_input() -> None:
    """int64 token ids into an embedding (Gather) with dropout on the embeddings: gate rows are valid ids."""
    rng = np.random.default_rng(4)
    weights = [
        numpy_helper.from_array(rng.standard_normal((30, 8)).astype(np.float32), "embedding"),
        numpy_helper.from_array(rng.standard_normal((8, 2)).astype(np.float32), "head"),
        numpy_helper.from_array(np.array(0.1, np.float32), "ratio"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("Gather", ["embedding", "tokens"], ["e"]),
        helper.make_node("Dropout", ["e", "ratio"], ["d"], name="embedding_dropout"),
        helper.make_node("ReduceMean", ["d", "axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "head"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "tokens", [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["B", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 2])], weights,
    )
    graphs = build_onnx_graphs(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8))
    assert [(s.call.path, s.shape) for s in graphs.sites] == [("embedding_dropout", (1, 5, 8))]
    assert graphs.mc.graph.input[0].type.tensor_type.elem_type == TensorProto.INT64
    assert graphs.gates.deterministic <= 1e-6 and graphs.gates.samples <= 1e-6


def _write(tmp_path: Path, proto: onnx.ModelProto) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save(proto, path)
    return path


def _computed_ratio() -> NodeProtos:
    return [
        helper.make_node("Identity", ["ratio1"], ["ratio1b"]),
        helper.make_node("Dropout", ["a1", "ratio1b", "train"], ["d1"], name="drop1"),
    ]


def _mask_read() -> NodeProtos:
    return [
        helper.make_node("Dropout", ["a1", "ratio1", "train"], ["d0", "mask1"], name="drop1"),
        helper.make_node("Cast", ["mask1"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["d0", "maskf"], ["d1"]),
    ]


def _computed_mode() -> NodeProtos:
    return [
        helper.make_node("Not", ["train"], ["train1"]),
        helper.make_node("Not", ["train1"], ["train2"]),
        helper.make_node("Dropout", ["a1", "ratio1", "train2"], ["d1"], name="drop1"),
    ]


def _random_noise() -> NodeProtos:
    return [
        helper.make_node("RandomUniformLike", ["a1"], ["u"]),
        helper.make_node("Mul", ["a1", "u"], ["d1"]),
    ]


def _without_dropouts() -> onnx.ModelProto:
    proto = _hand_built()
    for node in proto.graph.node:
        if node.op_type == "Dropout":
            node.CopyFrom(helper.make_node("Identity", [node.input[0]], [node.output[0]]))
    return proto


CASES = {
    "no dropout": (_without_dropouts, r"model\.onnx has no Dropout node; MC dropout needs at least one site$"),
    "computed ratio": (
        lambda: _hand_built(dropout=_computed_ratio()),
        r"model\.onnx: Dropout 'drop1': its ratio 'ratio1b' is computed in the graph; expected a constant",
    ),
    "two inputs": (lambda: _hand_built(inputs=2), r"model\.onnx has 2 inputs \['x', 'x1'\] .* expected one input"),
    "mask read": (lambda: _hand_built(dropout=_mask_read()), r"Dropout 'drop1': its mask output 'mask1' is read"),
    "fixed batch": (lambda: _hand_built(batch=1), r"input 'x' has shape \[1, 4\]; expected a dynamic batch axis"),
    "computed mode": (
        lambda: _hand_built(dropout=_computed_mode()),
        r"Dropout 'drop1': its training_mode 'train2' is computed in the graph; expected a constant",
    ),
    "random op": (
        lambda: _hand_built(dropout=_random_noise()),
        r"draws random numbers outside Dropout nodes \(RandomUniformLike;",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_models_are_refused(case: str, tmp_path: Path) -> None:
    build, message = CASES[case]
    path = _write(tmp_path, build())
    with pytest.raises(ModelPackageError, match=message) as refused:
        build_onnx_graphs(path)
    assert "\n" not in str(refused.value) and str(path) in str(refused.value)


def test_not_an_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("not a model\n")
    with pytest.raises(ModelPackageError, match=rf"^{path} is not an ONNX model \(DecodeError: ") as refused:
        build_onnx_graphs(path)
    assert "\n" not in str(refused.value)
    with pytest.raises(ModelPackageError, match=rf"^cannot read {tmp_path / 'missing.onnx'}: "):
        build_onnx_graphs(tmp_path / "missing.onnx")
