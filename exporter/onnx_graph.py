"""A small ONNX graph builder, the format constants, the graph outputs of the output table, and verification."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import onnx
from onnx import helper, numpy_helper

import dropnet
from dropnet.core.errors import ModelPackageError
from dropnet.core.outputs import Mode, Task, output_specs

OPSET = 18
"""Default-domain opset: BitwiseXor/BitwiseAnd (the noise hash) exist from opset 18."""
IR_VERSION = 8
"""IR of onnx 1.13, the release that introduced opset 18. onnx 1.23 would write IR 14, which
onnxruntime 1.31 refuses (it reads IR <= 13); IR 8 loads in every onnxruntime that runs opset 18."""
SMALL_CONSTANT = 64
"""Constants with at most this many elements are shared between nodes that use the same value."""


class GraphBuilder:
    """Collects nodes and initializers; every generated tensor name is unique."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._used: Counter[str] = Counter()
        self._shared: dict[tuple[str, tuple[int, ...], bytes], str] = {}
        self._scope = ""

    @contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Name the nodes added inside the block "name/Op_n" (for profiles and graph viewers)."""
        outer, self._scope = self._scope, name
        try:
            yield
        finally:
            self._scope = outer

    def fresh(self, hint: str) -> str:
        """A new tensor or node name starting with ``hint``."""
        self._used[hint] += 1
        return f"{hint}_{self._used[hint]}"

    def const(self, value: np.ndarray, hint: str = "const") -> str:
        """Name of an initializer holding ``value`` (small equal constants are stored once)."""
        array = np.ascontiguousarray(value)
        key = (array.dtype.str, array.shape, array.tobytes()) if array.size <= SMALL_CONSTANT else None
        if key is not None and key in self._shared:
            return self._shared[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        if key is not None:
            self._shared[key] = name
        return name

    def f32(self, value: float | Iterable[float]) -> str:
        """A float32 constant."""
        return self.const(np.asarray(value, dtype=np.float32), "f32")

    def i64(self, value: int | Iterable[int]) -> str:
        """An int64 constant (shapes, axes, indices)."""
        return self.const(np.asarray(value, dtype=np.int64), "i64")

    def u32(self, value: int | Iterable[int]) -> str:
        """A uint32 constant (hash arithmetic)."""
        return self.const(np.asarray(value, dtype=np.uint32), "u32")

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: object) -> str:
        """Append one node with a single output (named ``out`` or a fresh name); return the output."""
        out = out or self.fresh(op_type.lower())
        node_name = self.fresh(f"{self._scope}/{op_type}" if self._scope else op_type)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=node_name, **attrs))
        return out

    def model(
        self,
        name: str,
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
        metadata: Mapping[str, str],
        doc: str,
    ) -> onnx.ModelProto:
        """The model of the collected nodes, at :data:`OPSET` and :data:`IR_VERSION`, with ``metadata``."""
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ModelPackageError(f"ONNX metadata must map str to str, got {key!r}: {value!r}")
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.initializers, doc_string=doc)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name="dropnet",
            producer_version=dropnet.__version__,
        )
        helper.set_model_props(model, dict(metadata))
        return model


def table_outputs(task: Task, mode: Mode, dims: Mapping[str, int | str]) -> list[onnx.ValueInfoProto]:
    """The graph outputs of ``mode`` for ``task``, from the output table, in its order.

    ``dims`` gives each shape symbol its size or the name of a dynamic dimension (e.g.
    ``{"B": "batch", "C": 10}``).
    """
    return [
        helper.make_tensor_value_info(
            spec.name, helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype)), [dims[s] for s in spec.shape]
        )
        for spec in output_specs(task, mode)
        if spec.in_graph
    ]


def merge_metadata(caller: Mapping[str, str], own: Mapping[str, str]) -> dict[str, str]:
    """``caller``'s metadata plus the builder's ``own`` keys; a key both set differently is refused."""
    clashes = {key for key in own if key in caller and caller[key] != own[key]}
    if clashes:
        details = ", ".join(f"{key}={caller[key]!r} (graph: {own[key]!r})" for key in sorted(clashes))
        raise ModelPackageError(f"metadata keys {details} are set by the graph builder; expected them absent or equal")
    return {**caller, **own}


def verify_model(model_proto: onnx.ModelProto) -> None:
    """Run the full ONNX checker and strict, type-checking shape inference; raise ModelPackageError on failure."""
    graph = model_proto.graph.name or "model"
    errors = (onnx.checker.ValidationError, onnx.shape_inference.InferenceError)
    try:
        onnx.checker.check_model(model_proto, full_check=True)
        onnx.shape_inference.infer_shapes(model_proto, check_type=True, strict_mode=True, data_prop=True)
    except errors as exc:
        raise ModelPackageError(
            f"ONNX graph {graph!r} fails verification (checker with full_check, then strict shape inference "
            f"with data propagation): {exc}; expected a valid model with consistent types and shapes"
        ) from None
