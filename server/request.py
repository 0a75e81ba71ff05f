"""One inference request, checked and answered: the path the Predictor and the data plane share.

Every check of a request lives here, once: the mode, the requested outputs (against the output
table of the model's task), the MC sample count (against the model's limit), the seed, the
input (against the manifest's input spec) and what the request costs (rows × T × the model's
activation bytes per row and sample, against the caller's limit). The engine then runs the graph
outputs the request needs (:meth:`Predictor.run_deterministic`, :meth:`Predictor.run_mc`, batched
or not) on what passed, without checking again, and :func:`answer` adds the outputs derived from them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dropnet.core.errors import InvalidInputError, ResourceExhaustedError, quoted, quoted_list
from dropnet.core.manifest import Manifest
from dropnet.core.outputs import PREDICTED_CLASS, Mode, default_output_names, output_names
from dropnet.core.seeding import row_seeds
from dropnet.server.validation import as_batch, check_int, resolve_seed

MODES = tuple(mode.value for mode in Mode)
DEFAULT_MC_SAMPLES = 100
"""MC samples T when an MC request gives none (capped at the model's limit)."""
DERIVED: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    PREDICTED_CLASS: ("probabilities", lambda probabilities: probabilities.argmax(axis=1).astype(np.int64)),
}
"""Outputs the engine derives from a graph output: name → (graph output, derivation)."""


class Model(Protocol):
    """What a request is checked against: the part of :class:`dropnet.server.predictor.Predictor` it needs."""

    @property
    def manifest(self) -> Manifest: ...

    max_mc_samples: int
    """The largest T a request may ask for."""
    sample_bytes: int
    """Activation bytes one row costs per MC sample (the manifest's ``mc.sample_bytes``, or measured)."""


@dataclass(frozen=True)
class CheckedRequest:
    """A request that passed :func:`check_request`: what the engine runs, as it runs it."""

    x: np.ndarray
    """Rows [B, *input shape] in the input's dtype."""
    mode: Mode
    num_samples: int
    """MC samples T; 0 in deterministic mode."""
    seed: int | None
    """The MC seed (given, or drawn from OS entropy); None in deterministic mode."""
    outputs: tuple[str, ...]
    """The output names to answer with, in order, each once."""

    @property
    def graph_outputs(self) -> tuple[str, ...]:
        """The graph outputs the answer needs (a derived output needs the one it comes from)."""
        return tuple(dict.fromkeys(DERIVED[name][0] if name in DERIVED else name for name in self.outputs))

    def row_seeds(self) -> np.ndarray | None:
        """One seed per row (MC), None in deterministic mode."""
        return None if self.seed is None else row_seeds(self.seed, self.x.shape[0])


def check_request(
    model: Model,
    x: Any,
    mode: str = Mode.DETERMINISTIC,
    mc_samples: Any = None,
    seed: Any = None,
    outputs: tuple[str, ...] | None = None,
    max_rows: int | None = None,
    max_cost_bytes: int | None = None,
) -> CheckedRequest:
    """A request for ``model``, checked against its manifest and MC limit; else InvalidInputError saying why.

    ``mode`` is "deterministic" or "mc"; ``mc_samples`` (None: min(:data:`DEFAULT_MC_SAMPLES`,
    ``model.max_mc_samples``)) and ``seed`` (None: drawn) apply to mode "mc" only; ``outputs`` None
    or empty means the mode's defaults; ``max_rows`` (None: no limit) bounds the rows, checked
    before any value is converted. ``max_cost_bytes`` (None: no limit) bounds rows × max(T, 1) ×
    ``model.sample_bytes`` (a deterministic request counts as T = 1); above it the request is
    refused with ResourceExhaustedError.
    """
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {list(MODES)}, got {quoted(mode)}")
    checked_mode = Mode(mode)
    manifest = model.manifest
    names = _check_outputs(manifest, checked_mode, outputs)
    num_samples, used_seed = _check_mc(checked_mode, mc_samples, seed, model.max_mc_samples)
    batch = as_batch(x, manifest.input, max_rows)
    if max_cost_bytes is not None:
        check_cost(batch.shape[0], num_samples, model.sample_bytes, max_cost_bytes)
    return CheckedRequest(batch, checked_mode, num_samples, used_seed, names)


def check_cost(rows: int, num_samples: int, sample_bytes: int, max_cost_bytes: int) -> None:
    """Refuse (ResourceExhaustedError) a request of rows × max(T, 1) × ``sample_bytes`` over ``max_cost_bytes``.

    The message gives the cost, the limit and what would fit: the most rows at this T, or the
    most samples of one row when not even one row fits.
    """
    samples = max(num_samples, 1)
    cost = rows * samples * sample_bytes
    if cost <= max_cost_bytes:
        return
    what = f"{rows} rows × {samples} samples" if num_samples else f"{rows} rows (deterministic: 1 sample)"
    fit_rows, fit_samples = max_cost_bytes // (samples * sample_bytes), max_cost_bytes // sample_bytes
    if fit_rows:
        fits = f"at most {fit_rows} rows fit" + (f" at mc_samples {samples}" if num_samples else "")
    elif fit_samples:
        fits = f"not one row fits at mc_samples {samples}; one row fits up to mc_samples {fit_samples}"
    else:
        fits = "not one row of this model fits"
    raise ResourceExhaustedError(
        f"the request costs {cost} bytes ({what} × {sample_bytes} bytes per row and sample); "
        f"the limit is {max_cost_bytes} bytes per request: {fits}"
    )


def answer(request: CheckedRequest, graph: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The requested outputs in order, from the ``graph`` outputs the request needed (derived ones added)."""
    return {
        name: DERIVED[name][1](graph[DERIVED[name][0]]) if name in DERIVED else graph[name]
        for name in request.outputs
    }


def _check_outputs(manifest: Manifest, mode: Mode, outputs: tuple[str, ...] | None) -> tuple[str, ...]:
    """The requested output names without duplicates, or the mode's defaults."""
    if not outputs:
        return default_output_names(manifest.task, mode)
    known = output_names(manifest.task, mode)
    unknown = [name for name in outputs if name not in known]
    if unknown:
        raise InvalidInputError(f"unknown output(s) {quoted_list(unknown)} for mode {mode.value!r}; expected some of {list(known)}")
    return tuple(dict.fromkeys(outputs))


def _check_mc(mode: Mode, mc_samples: Any, seed: Any, max_mc_samples: int) -> tuple[int, int | None]:
    """MC samples T (0 in deterministic mode) and the seed (drawn when an MC request gives none)."""
    if mode is not Mode.MC:
        for name, value in (("mc_samples", mc_samples), ("seed", seed)):
            if value is not None:
                raise InvalidInputError(f"{name} applies to mode 'mc' only; got {value!r} in mode '{mode.value}'")
        return 0, None
    samples = min(DEFAULT_MC_SAMPLES, max_mc_samples) if mc_samples is None else mc_samples
    used_seed = resolve_seed(seed)
    return check_int("mc_samples", samples, 1, max_mc_samples), used_seed
