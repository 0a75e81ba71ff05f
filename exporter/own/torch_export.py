"""torch.onnx (dynamo) export of a module with its dropout sites marked.

The module is traced as sampled (dropout active, everything else in eval mode) with each site
returning the marker op, at dropnet's opset with a dynamic batch axis; the result is the marked
network the graph builders copy from.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings

import onnx
import onnx.inliner
import torch
from torch import nn

from dropnet.core.errors import ModelPackageError
from dropnet.exporter.onnx_graph import OPSET
from dropnet.exporter.own.intercept import routed
from dropnet.exporter.own.marker import TRANSLATION_TABLE, dropout_site
from dropnet.exporter.own.sites import SiteCall, SiteInfo

log = logging.getLogger(__name__)

BATCH = "batch"
MESSAGE_LIMIT = 300
"""Characters of torch.onnx's error kept in the message."""
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _Marker:
    """Site handler of the export trace: the marker op, after checking the site is the one discovered."""

    def __init__(self, sites: list[SiteInfo]) -> None:
        self._sites = sites

    def __call__(self, index: int, call: SiteCall, x: torch.Tensor) -> torch.Tensor:
        if index >= len(self._sites) or self._sites[index].call != call:
            raise ModelPackageError(
                f"dropout site {index} at {call.where} was not found at that position when the module ran "
                f"eagerly ({len(self._sites)} sites); expected the same dropout calls in the same order on every run"
            )
        return dropout_site(x, index)


def export_marked(module: nn.Module, rows: torch.Tensor, sites: list[SiteInfo]) -> onnx.ModelProto:
    """The ONNX model of ``module`` sampled, with a ``dropnet.DropoutSite`` node per site.

    ``rows``: an example input with at least 2 rows (a batch of 1 would fix the batch axis).
    """
    chatter = io.StringIO()
    with (
        routed(module, _Marker(sites), sampling=True) as net,
        warnings.catch_warnings(),
        contextlib.redirect_stdout(chatter),
        contextlib.redirect_stderr(chatter),
    ):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                net,
                (rows,),
                dynamo=True,
                opset_version=OPSET,
                dynamic_shapes=({0: torch.export.Dim(BATCH)},),
                custom_translation_table=TRANSLATION_TABLE,
                optimize=True,
                verbose=False,
                report=False,
            )
        except Exception as exc:  # torch.onnx raises many types; ours (ModelPackageError) may be wrapped
            own = _own_error(exc)
            if own is not None:
                raise own from None
            inside = net.failed_in()
            where = f" (in {inside})" if inside else ""
            raise ModelPackageError(f"torch.onnx cannot export {type(module).__name__}{where}: {_short(exc)}") from None
        finally:
            log.debug("torch.onnx printed: %s", chatter.getvalue())
    proto = onnx.inliner.inline_local_functions(program.model_proto)
    versions = {o.domain: o.version for o in proto.opset_import}
    if versions.get("", versions.get("ai.onnx")) != OPSET:
        raise ModelPackageError(f"torch.onnx wrote opset {versions}; expected default-domain opset {OPSET}")
    log.info("exported %s: %d nodes, %d dropout sites", type(module).__name__, len(proto.graph.node), len(sites))
    return proto


def _own_error(exc: BaseException) -> ModelPackageError | None:
    """Our refusal raised inside the trace, found in the chain of torch's wrapping exceptions."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ModelPackageError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _short(exc: BaseException) -> str:
    """The innermost cause's first line, without colour codes, at most MESSAGE_LIMIT characters."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"
