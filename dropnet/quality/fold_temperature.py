"""Temperature scaling folded into a classification package's graphs, so that servers need no change.

deterministic.onnx: the node that outputs ``logits`` outputs :data:`UNCALIBRATED` instead, and a
``Div`` by a float32 initializer τ produces ``logits`` from it; every reader of ``logits`` (the
Softmax giving ``probabilities``) then reads the calibrated logits. mc.onnx: a ``Div`` by τ is
inserted in front of the Softmax that outputs ``samples``, so each sample, and every summary of the
samples (the mean, std, entropy and mutual information, in the graph and in the Predictor's
chunked path), is calibrated. Both graphs keep their metadata and gain ``temperature``. This holds
for dropnet's own packages and for own-model packages (exporter/own/): both name these tensors
after the output table.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dropnet.core.errors import ModelPackageError
from dropnet.core.manifest import DETERMINISTIC_FILE, INPUT_NAME, MC_FILE, NUM_SAMPLES_INPUT, SEED_INPUT
from dropnet.core.outputs import SAMPLES, Mode, Task
from dropnet.exporter.onnx_graph import merge_metadata, verify_model
from dropnet.exporter.ort_check import check_outputs, expect_close, softmax
from dropnet.server.providers import CPU
from dropnet.server.sessions import create_session, run_session

LOGITS = "logits"
UNCALIBRATED = "logits_uncalibrated"
"""deterministic.onnx's logits before τ (an inner tensor, not a graph output)."""
TEMPERATURE_KEY = "temperature"
"""The metadata key (and the initializer name stem) holding τ."""
MC_LOGITS = "logit_samples_calibrated"
"""mc.onnx's per-sample logits divided by τ, the Softmax's new input."""
CHECK_SAMPLES = 4
CHECK_SEED = 0


def fold_deterministic(proto: onnx.ModelProto, tau: float) -> onnx.ModelProto:
    """A copy of deterministic.onnx ``proto`` whose ``logits`` (and so ``probabilities``) are divided by ``tau``."""
    folded = _copy(proto, tau)
    graph = folded.graph
    if any(UNCALIBRATED in node.output for node in graph.node):
        raise ModelPackageError(
            f"{DETERMINISTIC_FILE} already divides its logits by a temperature ({UNCALIBRATED} exists); expected "
            "an uncalibrated graph"
        )
    position, producer = _producer(graph, LOGITS, DETERMINISTIC_FILE)
    producer.output[list(producer.output).index(LOGITS)] = UNCALIBRATED
    divide = helper.make_node("Div", [UNCALIBRATED, _add_temperature(graph, tau)], [LOGITS], name="calibration/Div")
    graph.node.insert(position + 1, divide)
    verify_model(folded)
    return folded


def fold_mc(proto: onnx.ModelProto, tau: float) -> onnx.ModelProto:
    """A copy of mc.onnx ``proto`` whose every sample is softmax(logits / ``tau``)."""
    folded = _copy(proto, tau)
    graph = folded.graph
    position, softmax_node = _producer(graph, SAMPLES, MC_FILE)
    if softmax_node.op_type != "Softmax" or len(softmax_node.input) != 1:
        raise ModelPackageError(
            f"{MC_FILE}: {SAMPLES} comes from a {softmax_node.op_type} node; expected the Softmax of the sample "
            "logits (a classification graph)"
        )
    if any(MC_LOGITS in node.output for node in graph.node):
        raise ModelPackageError(
            f"{MC_FILE} already divides its sample logits by a temperature ({MC_LOGITS} exists); expected an "
            "uncalibrated graph"
        )
    divide = helper.make_node(
        "Div", [softmax_node.input[0], _add_temperature(graph, tau)], [MC_LOGITS], name="calibration/Div"
    )
    softmax_node.input[0] = MC_LOGITS
    graph.node.insert(position, divide)
    verify_model(folded)
    return folded


def sample_logits_name(folded_mc: onnx.ModelProto) -> str:
    """The tensor of folded mc.onnx holding each sample's logits before τ (the calibration Div's first input)."""
    return next(node.input[0] for node in folded_mc.graph.node if MC_LOGITS in node.output)


def check_folded(
    source: Mapping[Mode, bytes], deterministic: bytes, mc: bytes, taus: Mapping[Mode, float], x: np.ndarray
) -> None:
    """Raise ModelPackageError unless the folded graphs answer ``x`` as the source graphs with τ applied.

    Every output finite and of its shape, the MC summaries those of the samples
    (:func:`dropnet.exporter.ort_check.check_outputs`); deterministic ``logits`` = source logits / τ and
    ``probabilities`` their softmax; each MC sample = softmax(source sample logits / τ) for the same
    seed, the sample logits read from the folded graph and checked against the source's ``samples``.
    """
    source_det = _run(source[Mode.DETERMINISTIC], Mode.DETERMINISTIC, (LOGITS,), {INPUT_NAME: x})[LOGITS]
    classes = source_det.shape[1]
    det = check_outputs(deterministic, mc, Task.CLASSIFICATION, x, classes)
    expected = source_det.astype(np.float64) / np.float32(taus[Mode.DETERMINISTIC])
    where = f"{DETERMINISTIC_FILE} with the temperature folded in"
    expect_close(where, LOGITS, det[LOGITS], expected)
    expect_close(where, "probabilities", det["probabilities"], softmax(expected))
    feeds = {
        INPUT_NAME: x,
        NUM_SAMPLES_INPUT: np.array(CHECK_SAMPLES, np.int64),
        SEED_INPUT: np.array([CHECK_SEED], np.int64),
    }
    source_samples = _run(source[Mode.MC], Mode.MC, (SAMPLES,), feeds)[SAMPLES]
    proto = onnx.load_from_string(mc)
    logits_name = sample_logits_name(proto)
    proto.graph.output.append(helper.make_empty_tensor_value_info(logits_name))
    folded = _run(proto.SerializeToString(), Mode.MC, (SAMPLES, logits_name), feeds)
    logits = folded[logits_name].astype(np.float64).reshape(source_samples.shape)
    where = f"{MC_FILE} with the temperature folded in"
    expect_close(where, f"softmax of the sample logits (vs the source's {SAMPLES})", softmax(logits), source_samples)
    expect_close(where, SAMPLES, folded[SAMPLES], softmax(logits / np.float32(taus[Mode.MC])))


def _copy(proto: onnx.ModelProto, tau: float) -> onnx.ModelProto:
    """A deep copy of ``proto`` with ``temperature`` added to its metadata; τ checked."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.floating)) or not 0 < tau < np.inf:
        raise ModelPackageError(f"temperature must be a positive finite number, got {tau!r}")
    folded = onnx.ModelProto()
    folded.CopyFrom(proto)
    props = {prop.key: prop.value for prop in proto.metadata_props}
    if TEMPERATURE_KEY in props:
        raise ModelPackageError(
            f"graph {proto.graph.name!r} already carries a temperature ({props[TEMPERATURE_KEY]}); expected an "
            "uncalibrated graph"
        )
    helper.set_model_props(folded, merge_metadata(props, {TEMPERATURE_KEY: repr(float(np.float32(tau)))}))
    return folded


def _producer(graph: onnx.GraphProto, name: str, file_name: str) -> tuple[int, onnx.NodeProto]:
    """(position, node) of the node that outputs ``name``; refused when none does."""
    for position, node in enumerate(graph.node):
        if name in node.output:
            return position, node
    raise ModelPackageError(
        f"{file_name}: no node outputs {name!r}; expected the graph of a classification package written by "
        "`dropnet export` (temperature scaling needs its logits)"
    )


def _add_temperature(graph: onnx.GraphProto, tau: float) -> str:
    """A new float32 scalar initializer holding ``tau``; its name."""
    taken = {init.name for init in graph.initializer} | {n for node in graph.node for n in (*node.input, *node.output)}
    name, suffix = TEMPERATURE_KEY, 0
    while name in taken:
        suffix += 1
        name = f"{TEMPERATURE_KEY}_{suffix}"
    graph.initializer.append(numpy_helper.from_array(np.array(tau, dtype=np.float32), name))
    return name


def _run(model: bytes, mode: Mode, outputs: tuple[str, ...], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    file_name = DETERMINISTIC_FILE if mode is Mode.DETERMINISTIC else MC_FILE
    session = create_session(model, file_name, CPU, tuple(feeds), outputs)
    return run_session(session, file_name, outputs, feeds)
