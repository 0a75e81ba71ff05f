"""build_own_graphs: a user's nn.Module to deterministic.onnx and mc.onnx, gated."""

from __future__ import annotations

import logging
from typing import NamedTuple

import onnx
import torch
from torch import nn

from dropnet.core.errors import ModelPackageError
from dropnet.core.outputs import Task
from dropnet.exporter.onnx_graph import verify_model
from dropnet.exporter.own import graphs
from dropnet.exporter.own.discover import Tolerance, discover, take_rows
from dropnet.exporter.own.gates import GateReport, run_gates
from dropnet.exporter.own.sites import SiteInfo
from dropnet.exporter.own.torch_export import export_marked

log = logging.getLogger(__name__)

RECOGNISED = (
    "nn.Dropout, nn.Dropout1d/2d/3d, F.dropout/dropout1d/2d/3d with training=self.training, dropnet's Dropout, "
    "attention dropout (nn.MultiheadAttention, nn.Transformer*Layer, F.scaled_dot_product_attention(dropout_p=…))"
)


class OwnGraphs(NamedTuple):
    """The two graphs, the dropout sites (in hash-index order) and the measured parity errors."""

    deterministic: onnx.ModelProto
    mc: onnx.ModelProto
    sites: list[SiteInfo]
    gates: GateReport


def build_own_graphs(
    module: nn.Module,
    example_input: torch.Tensor,
    *,
    task: Task | str = Task.CLASSIFICATION,
    metadata: dict[str, str] | None = None,
    tolerance: Tolerance = Tolerance(),
) -> OwnGraphs:
    """deterministic.onnx and mc.onnx of ``module`` (see dropnet.exporter.own), after every gate passed.

    ``example_input``: rows [B, …] (float32 or int64) the module accepts; the gates run on them and
    every axis but the first is fixed to its shape. A module without an active dropout site is
    refused: MC dropout needs one. The module's training flags are restored on return.
    """
    task = parse_task(task)
    flags = {sub: sub.training for sub in module.modules()}
    try:
        found = discover(module, example_input, tolerance)
        if not found.sites:
            raise ModelPackageError(
                f"{type(module).__name__} has no active dropout site, so MC dropout has nothing to sample; "
                f"expected at least one of: {RECOGNISED}"
            )
        log.info("%d dropout sites: %s", len(found.sites), ", ".join(s.call.where for s in found.sites))
        marked = export_marked(module, take_rows(example_input, max(2, len(example_input))), found.sites)
        deterministic = graphs.build_deterministic(marked, found.sites, task, found.width, metadata or {})
        mc = graphs.build_mc(marked, found.sites, task, found.width, metadata or {})
        for model in (deterministic, mc):
            verify_model(model)
        report = run_gates(deterministic, mc, module, example_input, found.sites, task, tolerance)
    finally:
        for sub, training in flags.items():
            sub.training = training
    log.info("gates passed: deterministic max |Δ| %.3g, samples max |Δ| %.3g", report.deterministic, report.samples)
    return OwnGraphs(deterministic, mc, found.sites, report)


def parse_task(task: Task | str) -> Task:
    """``task`` as a Task; an unknown name is refused."""
    try:
        return Task(task)
    except ValueError:
        raise ModelPackageError(f"task {task!r} is unknown; expected one of {[t.value for t in Task]}") from None
