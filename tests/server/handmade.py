"""Hand-built ONNX model packages for tests of what the exporter does not make yet (other tasks, input dtypes)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from dropnet.core.manifest import MANIFEST_FILE, MAX_MC_SAMPLES, NUM_SAMPLES_INPUT, SEED_INPUT, Manifest, seal_manifest
from dropnet.core.outputs import SAMPLES
from dropnet.exporter.onnx_graph import IR_VERSION, OPSET


def repeated_samples(source: str, width: int) -> tuple[list[onnx.NodeProto], list[onnx.ValueInfoProto]]:
    """What an mc graph adds to compute ``source`` [batch, width] deterministically: its nodes making
    ``samples`` [T, batch, width] (T copies of ``source``) and the ``num_samples`` and ``seed`` inputs."""
    nodes = [
        helper.make_node("Constant", [], ["samples_shape_1"], value_ints=[1]),
        helper.make_node("Constant", [], ["samples_axis_0"], value_ints=[0]),
        helper.make_node("Reshape", [NUM_SAMPLES_INPUT, "samples_shape_1"], ["samples_t"]),
        helper.make_node("Shape", [source], ["samples_b_w"]),
        helper.make_node("Concat", ["samples_t", "samples_b_w"], ["samples_t_b_w"], axis=0),
        helper.make_node("Unsqueeze", [source, "samples_axis_0"], ["samples_1_b_w"]),
        helper.make_node("Expand", ["samples_1_b_w", "samples_t_b_w"], [SAMPLES]),
    ]
    inputs = [
        helper.make_tensor_value_info(NUM_SAMPLES_INPUT, TensorProto.INT64, []),
        helper.make_tensor_value_info(SEED_INPUT, TensorProto.INT64, ["seeds"]),
    ]
    return nodes, inputs


def samples_output(width: int) -> onnx.ValueInfoProto:
    """The ``samples`` output [T, batch, width] of :func:`repeated_samples`."""
    return helper.make_tensor_value_info(SAMPLES, TensorProto.FLOAT, [NUM_SAMPLES_INPUT, "batch", width])


def serialised(
    nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto],
) -> bytes:
    """The model of one graph, at the exporter's opset and IR version."""
    graph = helper.make_graph(nodes, "handmade", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    return model.SerializeToString()


def write_package(directory: Path, draft: Manifest, graphs: dict[str, bytes]) -> Path:
    """The package of ``graphs`` (file name → serialised ONNX) in ``directory``, sealed from ``draft``."""
    directory.mkdir(parents=True)
    for file_name, data in graphs.items():
        (directory / file_name).write_bytes(data)
    (directory / MANIFEST_FILE).write_text(json.dumps(seal_manifest(draft, graphs, MAX_MC_SAMPLES).to_dict()))
    return directory
