"""The exported, marked network as a graph to copy from: its nodes, weights, shapes and sites."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import onnx
from onnx import ModelProto, NodeProto

from dropnet.core.errors import ModelPackageError
from dropnet.exporter.onnx_graph import GraphBuilder
from dropnet.exporter.own.marker import DOMAIN, INDEX, OP_TYPE

WEIGHTS = "w/"
"""Prefix of the network's initializers in the built graphs (GraphBuilder's names never hold a '/')."""

MarkerRule = Callable[[int, str, str], str]
"""(site index, marker input as exported, marker input as copied) -> the tensor replacing the marker's output."""


@dataclass(frozen=True)
class MarkedNetwork:
    """A torch.onnx export whose dropout sites are ``dropnet.DropoutSite`` nodes."""

    graph: onnx.GraphProto
    input: str
    output: str
    batch: str
    """The symbol of the input's dynamic first axis."""

    @classmethod
    def read(cls, proto: ModelProto) -> MarkedNetwork:
        """Check the export's form: one input with a symbolic first axis, one output, no control flow."""
        graph = proto.graph
        if len(graph.input) != 1 or len(graph.output) != 1:
            raise ModelPackageError(
                f"the exported graph has {len(graph.input)} inputs and {len(graph.output)} outputs; "
                "expected a module taking one tensor and returning one tensor"
            )
        flow = sorted({n.op_type for n in graph.node if any(a.type in (a.GRAPH, a.GRAPHS) for a in n.attribute)})
        if flow:
            raise ModelPackageError(f"the exported graph has control flow ({', '.join(flow)}); expected none")
        batch = graph.input[0].type.tensor_type.shape.dim[0].dim_param
        if not batch:
            raise ModelPackageError("the exported graph's input has a fixed first axis; expected a dynamic batch axis")
        return cls(graph, graph.input[0].name, graph.output[0].name, batch)

    def site_index(self, node: NodeProto) -> int | None:
        """The site a node marks, or None for a node of the network."""
        if node.domain != DOMAIN or node.op_type != OP_TYPE:
            return None
        return next(a.i for a in node.attribute if a.name == INDEX)

    def after_sites(self) -> set[int]:
        """Positions of the nodes that depend on a site's output (the markers included)."""
        tainted: set[str] = set()
        positions: set[int] = set()
        for position, node in enumerate(self.graph.node):
            if self.site_index(node) is not None or tainted.intersection(node.input):
                positions.add(position)
                tainted.update(node.output)
        return positions

    def rows_first(self, name: str) -> int | None:
        """The rank of tensor ``name`` if its first axis is the batch axis (B rows), else None."""
        for info in (*self.graph.input, *self.graph.value_info):
            if info.name == name:
                dims = info.type.tensor_type.shape.dim
                return len(dims) if dims and dims[0].dim_param == self.batch else None
        return None

    def add_weights(self, g: GraphBuilder) -> None:
        """Copy the network's initializers into ``g`` under :data:`WEIGHTS`."""
        for tensor in self.graph.initializer:
            copy = onnx.TensorProto()
            copy.CopyFrom(tensor)
            copy.name = WEIGHTS + tensor.name
            g.initializers.append(copy)

    def emit(
        self, g: GraphBuilder, prefix: str, positions: Iterable[int], rename: dict[str, str], rule: MarkerRule
    ) -> dict[str, str]:
        """Copy the nodes at ``positions`` into ``g``: tensors named ``prefix`` + name unless ``rename``
        maps them, weights shared; each marker replaced by what ``rule`` returns. Returns the names used."""
        weights = {t.name for t in self.graph.initializer}
        names = dict(rename)

        def resolve(name: str) -> str:
            if not name:
                return name
            return names.get(name) or (WEIGHTS + name if name in weights else prefix + name)

        for position in sorted(positions):
            node = self.graph.node[position]
            site = self.site_index(node)
            if site is not None:
                names[node.output[0]] = rule(site, node.input[0], resolve(node.input[0]))
                continue
            copy = NodeProto()
            copy.CopyFrom(node)
            copy.name = prefix + node.name
            copy.ClearField("input")
            copy.ClearField("output")
            copy.input.extend(resolve(name) for name in node.input)
            copy.output.extend(prefix + name for name in node.output)
            g.nodes.append(copy)
        return names

    def resolved(self, names: dict[str, str], prefix: str, name: str) -> str:
        """Name of the exported tensor ``name`` in a copy made with ``prefix`` (see :meth:`emit`)."""
        return names.get(name, prefix + name)


def prune(g: GraphBuilder, outputs: Iterable[str]) -> None:
    """Drop the nodes and initializers of ``g`` that no output depends on."""
    needed = set(outputs)
    kept: list[NodeProto] = []
    for node in reversed(g.nodes):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    g.nodes = kept[::-1]
    g.initializers = [t for t in g.initializers if t.name in needed]
