"""ONNX nodes for the deterministic layer steps, shared by both graphs.

Every emitter maps activations [N, *features] to [N, *features'] for any N, so the same code
serves deterministic.onnx (N = batch) and mc.onnx (N = batch before the first dropout site,
samples·batch after it). Weights are rounded to float32 here, once.
"""

from __future__ import annotations

import numpy as np

from dropnet.exporter.onnx_graph import GraphBuilder
from dropnet.exporter.steps import Activation, Conv, Dense, Flatten, Maxout, MaxPool, Pad, Standardize, Step


def emit_layer(g: GraphBuilder, step: Step, x: str, out: str | None = None) -> str:
    """Append the nodes computing ``step`` on ``x``; return the output tensor's name (``out`` if given)."""
    if isinstance(step, Dense):
        return g.op("Gemm", x, _weights(g, step.weight, "weight"), _weights(g, step.bias, "bias"), transB=1, out=out)
    if isinstance(step, Conv):
        return g.op(
            "Conv",
            x,
            _weights(g, step.weight, "weight"),
            _weights(g, step.bias, "bias"),
            kernel_shape=list(step.weight.shape[2:]),
            strides=list(step.strides),
            pads=list(step.pads),
            dilations=list(step.dilations),
            group=step.group,
            out=out,
        )
    if isinstance(step, Standardize):
        return g.op("Div", g.op("Sub", x, g.f32(step.mean)), g.f32(step.std), out=out)
    if isinstance(step, Pad):
        top, left, bottom, right = step.pads
        pads = g.i64([0, 0, top, left, 0, 0, bottom, right])
        return g.op("Pad", x, pads, g.f32(step.value), mode="constant", out=out)
    if isinstance(step, Activation):
        return g.op(step.op, x, out=out)
    if isinstance(step, Maxout):
        channels, *spatial = step.features
        grouped = g.op("Reshape", x, g.i64([0, channels // step.pieces, step.pieces, *spatial]))
        return g.op("ReduceMax", grouped, g.i64([2]), keepdims=0, out=out)
    if isinstance(step, MaxPool):
        return g.op(
            "MaxPool", x, kernel_shape=list(step.kernel), strides=list(step.strides), pads=list(step.pads), out=out
        )
    if isinstance(step, Flatten):
        return g.op("Flatten", x, axis=1, out=out)
    raise TypeError(f"{type(step).__name__} is not a deterministic layer step")


def _weights(g: GraphBuilder, value: np.ndarray, hint: str) -> str:
    return g.const(value.astype(np.float32), hint)
