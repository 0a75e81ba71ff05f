"""deterministic.onnx: the test-time network as a plain Gemm/Conv chain with no randomness.

Test-time scaling is folded into weights: a dropout site of the paper flavour multiplies the
next layer's weights (not its bias) by p; inverted and gaussian sites are the identity. The
input standardisation is folded into the first weight layer too (nothing random lies between
them on this path), and batch norm (eval statistics) into the layer before it. Outputs: the
deterministic classification rows of the output table (``dropnet.core.outputs``) the graph
computes, ``probabilities`` (softmax) and ``logits``, float32 [batch, classes].
"""

from __future__ import annotations

from onnx import ModelProto, TensorProto, helper
from torch import nn

from dropnet.core.manifest import INPUT_NAME
from dropnet.core.outputs import Mode, Task
from dropnet.exporter.layers import emit_layer
from dropnet.exporter.onnx_graph import GraphBuilder, merge_metadata, table_outputs
from dropnet.exporter.steps import Affine, Noise, Standardize, Step, fold_affines, output_features, read_network
from dropnet.trainer.models import InputSpec

GRAPH_NAME = "dropnet_deterministic"
BATCH = "batch"


def build_deterministic(model: nn.Sequential, spec: InputSpec, metadata: dict[str, str]) -> ModelProto:
    """deterministic.onnx of ``model``: input ``x`` [batch, *spec.shape]; outputs ``probabilities``, ``logits``."""
    steps = read_network(model, spec)
    classes = output_features(steps)
    g = GraphBuilder()
    activations = INPUT_NAME
    layers = fold_affines([_test_time(step) for step in steps])
    for position, step in enumerate(layers):
        with g.scope(f"layer{position}"):
            activations = emit_layer(g, step, activations, out="logits" if position == len(layers) - 1 else None)
    g.op("Softmax", "logits", out="probabilities", axis=1)
    return g.model(
        GRAPH_NAME,
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH, *spec.shape])],
        outputs=table_outputs(Task.CLASSIFICATION, Mode.DETERMINISTIC, {"B": BATCH, "C": classes}),
        metadata=merge_metadata(metadata, {"graph": "deterministic"}),
        doc=__doc__ or "",
    )


def _test_time(step: Step) -> Step:
    """Standardize and dropout sites as the scalar maps they are at test time."""
    if isinstance(step, Standardize):
        return Affine(1.0 / step.std, -step.mean / step.std)
    if isinstance(step, Noise):
        return Affine(step.test_scale)
    return step
