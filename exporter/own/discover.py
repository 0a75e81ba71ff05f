"""Find a module's dropout sites by running it eagerly, and check what the export relies on.

The module runs in eval mode (its reference output; nothing random allowed), then twice sampled
with every site returning its eval-mode value, on 2 and on 3 rows: the sites are the active
dropout calls, in call order; comparing the two runs finds each site's rows on its first axis;
and the sampled run with neutral sites must give the eval output, or the module does something
else differently in training mode than dropout, which the samples would not be faithful to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dropnet.core.errors import DropnetError, ModelPackageError
from dropnet.exporter.own.intercept import RoutedModule, routed
from dropnet.exporter.own.sites import Granularity, SiteCall, SiteInfo, eval_scale

INPUT_DTYPES = (torch.float32, torch.int64)
DISCOVERY_ROWS = (2, 3)


@dataclass(frozen=True)
class Tolerance:
    """|graph - torch| <= atol + rtol·|torch|, elementwise. The default rtol allows float32 rounding on outputs
    far from 1 (a regression target in the hundreds), where an absolute 1e-5 is below float32 resolution."""

    atol: float = 1e-5
    rtol: float = 1e-5

    def excess(self, actual: np.ndarray, expected: np.ndarray) -> tuple[bool, float]:
        """(within tolerance, max |Δ|)."""
        if actual.shape != expected.shape:
            return False, float("inf")
        delta = np.abs(actual.astype(np.float64) - expected)
        return bool(np.all(delta <= self.atol + self.rtol * np.abs(expected))), float(delta.max(initial=0.0))


@dataclass(frozen=True)
class Discovery:
    """What the eager runs found."""

    sites: list[SiteInfo]
    width: int
    """Size of the output's last axis: classes (C) or regression targets (D)."""


class _Recorder:
    """Site handler of discovery: records each call and its input shape; returns the eval-mode value."""

    def __init__(self) -> None:
        self.calls: list[tuple[SiteCall, tuple[int, ...]]] = []

    def __call__(self, index: int, call: SiteCall, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            raise ModelPackageError(f"{call.where}: {call.kind} on a {x.dtype} tensor; expected float32")
        self.calls.append((call, tuple(x.shape)))
        scale = eval_scale(call)
        return x if scale == 1.0 else x * scale


def take_rows(example: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` rows of ``example``, cycling through its rows."""
    return example[torch.arange(count) % example.shape[0]]


def check_input(module: nn.Module, example: torch.Tensor) -> None:
    """Refuse an example the module cannot take or mc.onnx could not feed."""
    if not isinstance(example, torch.Tensor) or example.dim() < 1 or example.shape[0] < 1:
        raise ModelPackageError(f"example input must be a tensor [B, …] with B >= 1; got {_describe(example)}")
    if example.dtype not in INPUT_DTYPES:
        raise ModelPackageError(f"example input is {example.dtype}; expected one of {INPUT_DTYPES}")
    module.eval()
    with torch.no_grad():
        try:
            module(example)
        except Exception as exc:  # any error of the user's forward
            raise ModelPackageError(
                f"{type(module).__name__} rejects the example input {_describe(example)}: "
                f"{type(exc).__name__}: {_first_line(exc)}; expected an input it accepts, batch on the first axis"
            ) from None


def eval_output(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The eval-mode module's output on ``x`` (float32 [B, D]); refuses randomness and other outputs."""
    with routed(module, None, sampling=False) as net, torch.no_grad():
        out = _forward(module, net, x, "in eval mode")
    if not isinstance(out, torch.Tensor) or out.dtype != torch.float32 or out.dim() != 2 or out.shape[0] != len(x):
        raise ModelPackageError(
            f"{type(module).__name__} returns {_describe(out)} for an input {_describe(x)}; expected a float32 "
            "tensor [B, C] (class logits) or [B, D] (regression targets)"
        )
    return out.numpy()


def sampled_output(module: nn.Module, x: torch.Tensor, handler: Callable[..., torch.Tensor]) -> np.ndarray:
    """The module's output with its dropout sites routed to ``handler``."""
    with routed(module, handler, sampling=True) as net, torch.no_grad():
        out = _forward(module, net, x, "with its dropout sampled (training mode but for normalisation)")
    if not isinstance(out, torch.Tensor):
        raise ModelPackageError(
            f"{type(module).__name__} with its dropout sampled returns {_describe(out)}; expected a float32 tensor"
        )
    return out.numpy()


def _forward(module: nn.Module, net: RoutedModule, x: torch.Tensor, how: str) -> object:
    """``net(x)``; an error of the user's forward (not a refusal of ours) as one ModelPackageError line."""
    try:
        return net(x)
    except DropnetError:
        raise
    except Exception as exc:  # any error of the user's forward
        inside = net.failed_in()
        raise ModelPackageError(
            f"{type(module).__name__} fails {how}{f' in {inside}' if inside else ''} on {_describe(x)}: "
            f"{type(exc).__name__}: {_first_line(exc)}; expected a module that runs on any batch size in both modes"
        ) from None


def discover(module: nn.Module, example: torch.Tensor, tolerance: Tolerance) -> Discovery:
    """The module's sites and output width (see the module docstring)."""
    check_input(module, example)
    runs = []
    for count in DISCOVERY_ROWS:
        rows = take_rows(example, count)
        recorder = _Recorder()
        expected = eval_output(module, rows)  # first: it checks the output is a float32 [B, D] tensor
        sampled = sampled_output(module, rows, recorder)
        within, delta = tolerance.excess(sampled, expected)
        if not within:
            raise ModelPackageError(
                f"{type(module).__name__} in training mode, with its dropout sites neutral, differs from its eval "
                f"mode by max |Δ| = {delta:.3g}: something else than dropout depends on training (its samples "
                "would not be the eval-mode module with dropout); expected only dropout to depend on it"
            )
        runs.append(recorder.calls)
    width = int(sampled.shape[1])
    if [c for c, _ in runs[0]] != [c for c, _ in runs[1]]:
        raise ModelPackageError(
            f"{type(module).__name__} makes different dropout calls for {DISCOVERY_ROWS[0]} and {DISCOVERY_ROWS[1]} "
            "rows; expected the same sites whatever the batch size"
        )
    return Discovery([site_info(i, call, a, b) for i, ((call, a), (_, b)) in enumerate(zip(*runs))], width)


def site_info(index: int, call: SiteCall, small: tuple[int, ...], large: tuple[int, ...]) -> SiteInfo:
    """The site with its per-row shape, from its input shapes at 2 and 3 rows."""
    few, more = DISCOVERY_ROWS
    factor = small[0] // few if small else 0
    if not (factor >= 1 and small[1:] == large[1:] and small[0] == factor * few and large[0] == factor * more):
        raise ModelPackageError(
            f"{call.where}: {call.kind} input is {list(small)} for {few} rows and {list(large)} for {more}; expected "
            "the rows on the first axis, [k·B, …] (for transformers: batch_first=True)"
        )
    if call.granularity is Granularity.CHANNEL and (factor != 1 or len(small) < 2):
        raise ModelPackageError(
            f"{call.where}: channel dropout on {list(small)} for {few} rows; expected a batched input [B, C, …]"
        )
    return SiteInfo(index, call, (factor, *small[1:]))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} {list(value.shape)}"
    return type(value).__name__
