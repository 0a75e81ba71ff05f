"""The source ONNX as the gates' reference: the model as given (at its own opset, at the lowest IR
that opset allows), in onnxruntime with every optimisation off (no pass may remove a Dropout node).

* inference copy: each Dropout keeps only its data input (training_mode absent: inference mode, the
  identity); the Dropouts' inputs are extra outputs, which give each site's shape;
* masked copy: each Dropout replaced by a multiplication with a mask fed as an extra input, the
  multiplier the numpy model of the hash (dropnet.exporter.own.reference) rebuilds for a seed and a sample.
"""

from __future__ import annotations

import numpy as np
from onnx import GraphProto, ModelProto, TensorProto, helper

from dropnet.core.errors import ModelPackageError
from dropnet.exporter.onnx_graph import OPSET
from dropnet.exporter.own.gates import LEVELS, run_graph, session
from dropnet.exporter.own.onnx_source import DROPOUT, OnnxSource
from dropnet.exporter.own.reference import site_noise
from dropnet.exporter.own.sites import SiteInfo

PROBE, MASK = "dropnet.probe.", "dropnet.mask."
"""Prefixes of the extra outputs (Dropout inputs) and inputs (masks) of the copies."""
DEFAULT_TOKENS = 2
"""int64 rows hold ids below this bound unless the input indexes an embedding table (Gather on a weight)."""


class OnnxReference:
    """The source graph run in inference mode or with given masks."""

    def __init__(self, source: OnnxSource) -> None:
        self._source = source
        self._input = source.input.name
        self._inference = session(_inference_copy(source), LEVELS[0])
        self._masked = session(_masked_copy(source), LEVELS[0])

    def rows(self, count: int) -> np.ndarray:
        """``count`` reproducible gate rows of the input's dtype and shape (int64: valid token ids)."""
        rng = np.random.default_rng(0)
        shape = (count, *(d.dim_value for d in self._source.input.type.tensor_type.shape.dim[1:]))
        if self._source.input.type.tensor_type.elem_type == TensorProto.INT64:
            return rng.integers(0, self._token_bound(), shape, dtype=np.int64)
        return rng.standard_normal(shape, dtype=np.float32)

    def inference(self, x: np.ndarray) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """The output on ``x`` with every Dropout in inference mode, and the shape of each Dropout's input."""
        out = run_graph(self._inference, {self._input: x})
        y = out[self._source.proto.graph.output[0].name]
        if y.dtype != np.float32 or y.ndim != 2 or len(y) != len(x):
            raise ModelPackageError(
                f"{self._source.label} returns {y.dtype} {list(y.shape)} for {len(x)} rows; expected float32 [B, C] "
                "(class logits) or [B, D] (regression targets)"
            )
        return y, [out[PROBE + str(i)].shape for i in range(len(self._source.dropouts))]

    def sampled(self, x: np.ndarray, sites: list[SiteInfo], seeds: np.ndarray, sample: int) -> np.ndarray:
        """The output on ``x`` with each site's input multiplied by the noise of ``sample`` for row ``seeds``."""
        feeds = {self._input: x}
        for site in sites:
            rows = (len(x) * site.shape[0], *site.shape[1:])
            feeds[MASK + str(site.index)] = site_noise(seeds, site, sample).reshape(rows)
        return run_graph(self._masked, feeds)[self._source.proto.graph.output[0].name]

    def _token_bound(self) -> int:
        graph = self._source.proto.graph
        weights = {t.name: t for t in graph.initializer}
        tables = [
            weights[node.input[0]].dims[0]
            for node in graph.node
            if node.op_type == "Gather" and node.input[1] == self._input and node.input[0] in weights
        ]
        return min(tables, default=DEFAULT_TOKENS)


def _inference_copy(source: OnnxSource) -> ModelProto:
    proto, positions = _copy(source)
    graph = proto.graph
    for index, position in enumerate(positions):
        node = graph.node[position]
        del node.input[1:]
        del node.output[1:]
        graph.node.append(helper.make_node("Identity", [node.input[0]], [PROBE + str(index)]))
        graph.output.append(helper.make_tensor_value_info(PROBE + str(index), TensorProto.FLOAT, None))
    _drop_unread_weights(graph)
    return proto


def _masked_copy(source: OnnxSource) -> ModelProto:
    proto, positions = _copy(source)
    graph = proto.graph
    for index, position in enumerate(positions):
        node = graph.node[position]
        mask = MASK + str(index)
        node.CopyFrom(helper.make_node("Mul", [node.input[0], mask], [node.output[0]]))
        graph.input.append(helper.make_tensor_value_info(mask, TensorProto.FLOAT, None))
    _drop_unread_weights(graph)
    return proto


def _copy(source: OnnxSource) -> tuple[ModelProto, list[int]]:
    """A copy of the original model and the positions of its Dropout nodes, in site order."""
    proto = ModelProto()
    proto.CopyFrom(source.original)
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    by_output = {n.output[0]: p for p, n in enumerate(proto.graph.node) if n.op_type == DROPOUT}
    missing = [d.name for d in source.dropouts if d.output not in by_output]
    if missing:
        raise ModelPackageError(
            f"{source.label}: the Dropout nodes {missing} are not in the model as given once converted to opset "
            f"{OPSET}; expected the version converter to keep them"
        )
    return proto, [by_output[d.output] for d in source.dropouts]


def _drop_unread_weights(graph: GraphProto) -> None:
    """Remove the initializers and Constant nodes nothing reads any more (the Dropouts' ratios and modes),
    which onnxruntime warns about."""
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in read]
    del graph.node[:]
    graph.node.extend(nodes)
