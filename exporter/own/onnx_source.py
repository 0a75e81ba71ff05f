"""A user's ONNX file read for import: loaded, checked, at dropnet's opset, its Dropout nodes found.

The file must hold one network: one input [B, …] (float32 or int64, a dynamic first axis, every
other axis fixed), one float32 output, standard ONNX operators only (local functions are inlined),
and at least one ``Dropout`` node whose ratio and training_mode inputs are constants (an
initializer or a Constant node; absent means the ONNX defaults) and whose mask output nothing reads.
Every Dropout is a site, whatever its training_mode: the file marks where dropout sits; dropnet
decides when it samples. A first axis fixed in the file (often 1) is refused rather than made
dynamic: a graph traced at one batch size may hold it in its shape constants (Reshape to [1, …]),
which tiling the T samples into the batch would break.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
from onnx import ModelProto, NodeProto, TensorProto, helper, numpy_helper, version_converter

from dropnet.core.errors import ModelPackageError
from dropnet.exporter.onnx_graph import IR_VERSION, OPSET

log = logging.getLogger(__name__)

DROPOUT = "Dropout"
DEFAULT_DOMAINS = ("", "ai.onnx")
INPUT_DTYPES = (TensorProto.FLOAT, TensorProto.INT64)
RANDOM_OPS = frozenset({"Bernoulli", "Multinomial", "RandomNormal", "RandomNormalLike", "RandomUniform",
                        "RandomUniformLike"})
DEFAULT_RATIO = 0.5
"""ONNX's ratio of a Dropout without a ratio input."""
_CONSTANT_ATTRIBUTES = ("value", "value_float", "value_int", "value_floats", "value_ints")


@dataclass(frozen=True)
class DropoutNode:
    """One Dropout node of the source graph, a dropout site."""

    position: int
    """Index in the graph's (topologically sorted) node list."""
    name: str
    """The node's name (an unnamed node is named after its first output)."""
    data: str
    output: str
    retain: float
    """1 - ratio."""


@dataclass(frozen=True)
class OnnxSource:
    """The checked source model: opset :data:`OPSET`, IR :data:`IR_VERSION`, no local functions,
    initializers off the input list, shapes inferred."""

    proto: ModelProto
    original: ModelProto
    """The model as given (local functions inlined), at its own opset: the gates' reference."""
    label: str
    """The model in messages: its file's path, or its graph's name."""
    dropouts: list[DropoutNode]

    @property
    def input(self) -> onnx.ValueInfoProto:
        """The network's input [B, …]."""
        return self.proto.graph.input[0]


def read_source(model: ModelProto | Path | str) -> OnnxSource:
    """``model`` (a ModelProto, or the path of an ONNX file) checked and converted (see the module docstring)."""
    proto, label = _load(model)
    _check(proto, label, "")
    if proto.functions:
        proto = onnx.inliner.inline_local_functions(proto)
    _check_operators(proto.graph, label)
    original = ModelProto()
    original.CopyFrom(proto)
    proto = _convert(proto, label)
    _drop_initializer_inputs(proto.graph)
    _name_nodes(proto.graph)
    _check_signature(proto.graph, label)
    try:
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        raise ModelPackageError(f"{label}: ONNX shape inference fails ({_first_line(exc)}); expected a consistent "
                                "graph") from None
    dropouts = _dropouts(proto.graph, label)
    if not dropouts:
        raise ModelPackageError(f"{label} has no Dropout node; MC dropout needs at least one site")
    if all(d.retain == 1.0 for d in dropouts):
        raise ModelPackageError(
            f"{label}: every Dropout has ratio 0, so MC dropout has nothing to sample; expected a Dropout with "
            "0 < ratio < 1"
        )
    log.info("%s: %d Dropout nodes: %s", label, len(dropouts), ", ".join(d.name for d in dropouts))
    return OnnxSource(proto, original, label, dropouts)


def _load(model: ModelProto | Path | str) -> tuple[ModelProto, str]:
    """A copy of the model (the caller's is left alone) and its label."""
    if isinstance(model, ModelProto):
        proto = ModelProto()
        proto.CopyFrom(model)
        return proto, f"ONNX model {model.graph.name!r}"
    path = Path(model)
    try:
        return onnx.load(path), str(path)
    except OSError as exc:
        raise ModelPackageError(f"cannot read {path}: {exc.strerror or exc}; expected a readable ONNX file") from None
    except Exception as exc:  # protobuf's DecodeError, onnx's external-data errors
        raise ModelPackageError(
            f"{path} is not an ONNX model ({type(exc).__name__}: {_first_line(exc)}); expected an ONNX ModelProto file"
        ) from None


def _check(proto: ModelProto, label: str, stage: str) -> None:
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ModelPackageError(
            f"{label} fails the ONNX checker{stage} ({_first_line(exc)}); expected a valid ONNX model"
        ) from None


def _check_operators(graph: onnx.GraphProto, label: str) -> None:
    """Standard ONNX operators only, and no randomness but the Dropout nodes'."""
    foreign = sorted({f"{n.domain}.{n.op_type}" for n in graph.node if n.domain not in DEFAULT_DOMAINS})
    if foreign:
        raise ModelPackageError(
            f"{label} uses operators outside the ONNX default domain ({', '.join(foreign)}); expected standard "
            "ONNX operators only"
        )
    random = sorted({n.op_type for n in graph.node if n.op_type in RANDOM_OPS})
    if random:
        raise ModelPackageError(
            f"{label} draws random numbers outside Dropout nodes ({', '.join(random)}; e.g. torch's Dropout2d in "
            "training mode); expected dropout only as ONNX Dropout nodes (for a PyTorch module: export the module)"
        )


def _convert(proto: ModelProto, label: str) -> ModelProto:
    """The model at the default-domain opset :data:`OPSET` (onnx's version converter) and IR :data:`IR_VERSION`."""
    version = next((o.version for o in proto.opset_import if o.domain in DEFAULT_DOMAINS), None)
    if version is None:
        raise ModelPackageError(f"{label} imports no ONNX default-domain opset; expected standard ONNX operators")
    if version != OPSET:
        try:
            proto = version_converter.convert_version(proto, OPSET)
        except Exception as exc:  # the converter raises RuntimeError and others
            raise ModelPackageError(
                f"{label} is at opset {version} and onnx's version converter cannot bring it to opset {OPSET} "
                f"({_first_line(exc)}); expected a model at opset {OPSET} or one the converter handles (from torch: "
                f"torch.onnx.export(..., opset_version={OPSET}))"
            ) from None
        log.info("%s: converted from opset %d to %d", label, version, OPSET)
    proto.ir_version = IR_VERSION
    _check(proto, label, f" after conversion to opset {OPSET}, IR {IR_VERSION}")
    return proto


def _drop_initializer_inputs(graph: onnx.GraphProto) -> None:
    """Remove initializers listed as graph inputs (older exporters list every weight there)."""
    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    del graph.input[:]
    graph.input.extend(inputs)


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give every node a unique name (an unnamed one its first output's): the graph builders name copies after them."""
    used: set[str] = set()
    for node in graph.node:
        base = name = node.name or node.output[0]
        suffix = 0
        while name in used:
            suffix += 1
            name = f"{base}_{suffix}"
        node.name = name
        used.add(name)


def _check_signature(graph: onnx.GraphProto, label: str) -> None:
    """One input [B, …] of a supported dtype with a dynamic first axis and fixed others; one float32 output."""
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ModelPackageError(
            f"{label} has {len(graph.input)} inputs {[i.name for i in graph.input]} and {len(graph.output)} outputs "
            f"{[o.name for o in graph.output]}; expected one input [B, …] and one output [B, C] or [B, D]"
        )
    source, output = graph.input[0], graph.output[0]
    tensor = source.type.tensor_type
    if tensor.elem_type not in INPUT_DTYPES:
        raise ModelPackageError(
            f"{label}: input {source.name!r} is {_dtype(tensor.elem_type)}; expected one of "
            f"{[_dtype(t) for t in INPUT_DTYPES]}"
        )
    dims = tensor.shape.dim
    shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in dims]
    if not dims or not dims[0].dim_param:
        raise ModelPackageError(
            f"{label}: input {source.name!r} has shape {shape}; expected a dynamic batch axis first (re-export with "
            "one, e.g. dynamic_shapes in torch.onnx.export): a batch fixed in the graph cannot hold the T samples"
        )
    if any(not d.HasField("dim_value") or d.dim_value < 1 for d in dims[1:]):
        raise ModelPackageError(
            f"{label}: input {source.name!r} has shape {shape}; expected every axis but the first fixed"
        )
    if output.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ModelPackageError(
            f"{label}: output {output.name!r} is {_dtype(output.type.tensor_type.elem_type)}; expected float32"
        )


def _dropouts(graph: onnx.GraphProto, label: str) -> list[DropoutNode]:
    """The graph's Dropout nodes, refused unless their ratio and mode are constants and their mask is unused."""
    constants = _Constants(graph)
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    dtypes = {t.name: t.data_type for t in graph.initializer}
    dtypes.update({v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info)})
    found = []
    for position, node in enumerate(graph.node):
        if node.op_type != DROPOUT or node.domain not in DEFAULT_DOMAINS:
            continue
        where = f"{label}: Dropout {node.name!r}"
        data, ratio_name, mode_name = (*node.input, "", "")[:3]
        if len(node.output) > 1 and node.output[1] in read:
            raise ModelPackageError(
                f"{where}: its mask output {node.output[1]!r} is read; expected only the dropped-out tensor to be "
                "used (the mask has no meaning once dropnet draws its own)"
            )
        if dtypes.get(data) != TensorProto.FLOAT:
            raise ModelPackageError(f"{where} works on {_dtype(dtypes.get(data, 0))} data; expected float32")
        ratio = _shortest(constants.scalar(ratio_name, where, "ratio")) if ratio_name else DEFAULT_RATIO
        if not 0.0 <= ratio < 1.0:
            raise ModelPackageError(f"{where} has ratio {ratio:g}; expected 0 ≤ ratio < 1")
        if mode_name:
            training = bool(constants.scalar(mode_name, where, "training_mode"))
            log.debug("%s: training_mode %s in the file; a site either way", where, training)
        found.append(DropoutNode(position, node.name, data, node.output[0], 1.0 - ratio))
    return found


class _Constants:
    """Values of the graph's initializers and Constant nodes, converted on demand."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self._initializers = {t.name: t for t in graph.initializer}
        self._nodes: dict[str, NodeProto] = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}

    def scalar(self, name: str, where: str, what: str) -> np.ndarray:
        """The one-element constant ``name`` (the ``what`` input of ``where``), or a refusal."""
        value = self._value(name)
        if value is None:
            raise ModelPackageError(
                f"{where}: its {what} {name!r} is computed in the graph; expected a constant (an initializer or a "
                "Constant node)"
            )
        if value.size != 1:
            raise ModelPackageError(f"{where}: its {what} has shape {list(value.shape)}; expected a scalar")
        return value.reshape(())

    def _value(self, name: str) -> np.ndarray | None:
        if name in self._initializers:
            return numpy_helper.to_array(self._initializers[name])
        node = self._nodes.get(name)
        attribute = node.attribute[0] if node is not None and len(node.attribute) == 1 else None
        if attribute is None or attribute.name not in _CONSTANT_ATTRIBUTES:
            return None
        value = helper.get_attribute_value(attribute)
        if isinstance(value, TensorProto):
            return numpy_helper.to_array(value)
        floats = attribute.type in (onnx.AttributeProto.FLOAT, onnx.AttributeProto.FLOATS)
        return np.asarray(value, np.float32 if floats else np.int64)


def _shortest(value: np.ndarray) -> float:
    """The shortest decimal that is ``value`` in its own dtype (a float32 0.3 is 0.3, not 0.30000001)."""
    return float(np.format_float_positional(value[()], unique=True))


def _dtype(elem_type: int | None) -> str:
    """The numpy name of an ONNX element type ("float32"), or ONNX's for one numpy lacks."""
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type or 0)).name
    except (KeyError, TypeError):
        return TensorProto.DataType.Name(elem_type or 0).lower()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
