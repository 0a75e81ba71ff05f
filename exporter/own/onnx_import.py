"""build_onnx_graphs: an existing ONNX file whose Dropout nodes mark the sites, to deterministic.onnx
and mc.onnx, gated.

The file is read and converted by dropnet.exporter.own.onnx_source. Each Dropout becomes a
``dropnet.DropoutSite`` marker (site index = its order in the graph), so the graph builders of
dropnet.exporter.own make the same two graphs as for a PyTorch module. A Dropout has PyTorch's
semantics: keep 1 - ratio, kept units scaled by 1/(1 - ratio), one decision per element.

Gates, on reproducible generated rows: deterministic.onnx against the source with its Dropouts
in inference mode, each mc.onnx sample against the source with its Dropouts replaced by the masks
the numpy model of the hash rebuilds (both in onnxruntime, dropnet.exporter.own.onnx_reference), and
the reproducibility gate at every onnxruntime optimisation level.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from onnx import ModelProto, helper

from dropnet.core.outputs import Task
from dropnet.exporter.onnx_graph import verify_model
from dropnet.exporter.own import graphs
from dropnet.exporter.own.build import OwnGraphs, parse_task
from dropnet.exporter.own.discover import DISCOVERY_ROWS, Tolerance, site_info
from dropnet.exporter.own.gates import GateReport, check_reproducible, compare_deterministic, compare_samples
from dropnet.exporter.own.marker import DOMAIN, INDEX, OP_TYPE
from dropnet.exporter.own.onnx_reference import OnnxReference
from dropnet.exporter.own.onnx_source import OnnxSource, read_source
from dropnet.exporter.own.sites import Granularity, SiteCall, SiteInfo

log = logging.getLogger(__name__)

GATE_ROWS = 4
MODULE_TYPE = "ONNX Dropout"


def build_onnx_graphs(
    model: ModelProto | Path,
    *,
    task: Task | str = Task.CLASSIFICATION,
    metadata: dict[str, str] | None = None,
    tolerance: Tolerance = Tolerance(),
) -> OwnGraphs:
    """deterministic.onnx and mc.onnx of ``model`` (a ModelProto or an ONNX file's path), after every
    gate passed; see the module docstring and dropnet.exporter.own.onnx_source for what is refused."""
    task = parse_task(task)
    source = read_source(model)
    reference = OnnxReference(source)
    rows = reference.rows(GATE_ROWS)
    sites, width = _sites(source, reference, rows)
    marked = _marked(source)
    deterministic = graphs.build_deterministic(marked, sites, task, width, metadata or {})
    mc = graphs.build_mc(marked, sites, task, width, metadata or {})
    for built in (deterministic, mc):
        verify_model(built)
    x = torch.from_numpy(rows)
    expected, _ = reference.inference(rows)
    in_inference = f"{source.label} with its Dropouts in inference mode"
    det_error = compare_deterministic(deterministic, x, expected, in_inference, task, tolerance)

    def sampled(seeds: np.ndarray, sample: int) -> np.ndarray:
        return reference.sampled(rows, sites, seeds, sample)

    sample_error = compare_samples(mc, x, sampled, source.label, task, tolerance)
    check_reproducible(mc, x, task, tolerance)
    log.info("gates passed: deterministic max |Δ| %.3g, samples max |Δ| %.3g", det_error, sample_error)
    return OwnGraphs(deterministic, mc, sites, GateReport(det_error, sample_error))


def _sites(source: OnnxSource, reference: OnnxReference, rows: np.ndarray) -> tuple[list[SiteInfo], int]:
    """The sites with their per-row shapes (from runs on 2 and 3 rows), and the output's width."""
    few, more = (reference.inference(rows[:count]) for count in DISCOVERY_ROWS)
    sites = [
        site_info(index, _call(dropout.name, dropout.retain), small, large)
        for index, (dropout, small, large) in enumerate(zip(source.dropouts, few[1], more[1]))
    ]
    return sites, int(more[0].shape[1])


def _call(name: str, retain: float) -> SiteCall:
    """A Dropout node as a site: PyTorch's dropout (inverted scaling, element masks)."""
    return SiteCall(name, MODULE_TYPE, "dropout", retain, "inverted", Granularity.ELEMENT)


def _marked(source: OnnxSource) -> ModelProto:
    """The source with each Dropout replaced by the marker of its site."""
    marked = ModelProto()
    marked.CopyFrom(source.proto)
    for index, dropout in enumerate(source.dropouts):
        node = marked.graph.node[dropout.position]
        node.CopyFrom(
            helper.make_node(OP_TYPE, [dropout.data], [dropout.output], name=node.name, domain=DOMAIN, **{INDEX: index})
        )
    return marked
