"""The protocol-free data plane both gRPC services call: validate, route, batch, answer, measure.

It never imports grpc. Requests name a model and (optionally) a version of the repository, are
checked against the server's limits and the model's input spec, queued on the batcher, and answered
with the outputs they asked for. Every request is counted and timed here, labelled with the
status code name of its outcome (:mod:`server.status_codes`), so the gRPC layer records nothing:
it hands over the decoding of a wire message (:meth:`DataPlane.infer_encoded`), so that requests
refused for their encoding are counted too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dropnet.core.errors import DropnetError, InvalidInputError
from dropnet.core.seeding import row_seeds
from dropnet.server.batcher import Batcher, Outputs, RunSpec
from dropnet.server.metrics import ServerMetrics
from dropnet.server.providers import choose_provider
from dropnet.server.repository import LoadedModel, ModelRef, ModelRepository
from dropnet.server.settings import ServerSettings
from dropnet.server.status_codes import status_code_name
from dropnet.server.validation import check_int, resolve_seed

log = logging.getLogger(__name__)

MODES = ("deterministic", "mc")
PREDICTED_CLASS = "predicted_class"
OUTPUT_NAMES = {
    "deterministic": ("probabilities", PREDICTED_CLASS, "logits"),
    "mc": ("probabilities", PREDICTED_CLASS, "std", "predictive_entropy", "mutual_information", "samples"),
}
"""Every output a request may name, per mode."""
DEFAULT_OUTPUTS = {mode: tuple(name for name in names if name != "samples") for mode, names in OUTPUT_NAMES.items()}
"""Outputs returned when a request names none: all but ``samples``."""
DEFAULT_MC_SAMPLES = 100
"""MC samples T when an MC request gives none (capped at the model's limit, ``Predictor.max_mc_samples``)."""
UNKNOWN_LABEL = "_unknown"
"""Metric label for a model or mode the server does not have, so clients cannot grow the label set."""


@dataclass
class InferRequest:
    """One inference request, as either gRPC service hands it over."""

    model: str
    version: str | None
    """None (or "") for the latest loaded version."""
    x: np.ndarray
    """Rows of the model's input, any numeric dtype; validated by the Predictor."""
    mode: str = "deterministic"
    """"deterministic" or "mc"."""
    mc_samples: int | None = None
    """MC samples T (mc mode; None: the server's default); must be None in deterministic mode."""
    seed: int | None = None
    """MC mask seed (None: drawn from OS entropy and reported); must be None in deterministic mode."""
    outputs: tuple[str, ...] | None = None
    """Output names to return; None (or empty) for the mode's defaults."""


@dataclass
class InferResult:
    """The answer to an :class:`InferRequest`."""

    model: str
    version: str
    """The version that answered (resolved when the request named none)."""
    outputs: dict[str, np.ndarray]
    """The requested outputs, in the requested order."""
    seed: int | None
    """The MC seed used (given or drawn); None in deterministic mode."""


@dataclass(frozen=True)
class ModelInfo:
    """A served model version, as the metadata RPCs describe it."""

    name: str
    version: str
    """The served version (the directory name in a versioned layout, which may differ from the manifest's)."""
    versions: tuple[str, ...]
    """Every loaded version of the model, oldest first."""
    manifest: dict[str, Any]
    max_mc_samples: int
    """The largest mc_samples a request may ask for: the server's limit, lowered to the package's own."""


class DataPlane:
    """Serves the model packages of ``settings.models_dir``: the one entry point of both gRPC services."""

    def __init__(self, settings: ServerSettings, metrics: ServerMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or ServerMetrics()
        self.repository = ModelRepository(settings, on_unload=self._forget)
        self.metrics.track_models_loaded(self.repository.loaded_count)
        self.metrics_port: int | None = None
        """Bound port of the /metrics endpoint once started (None when ``settings.metrics_port`` is None)."""
        self._batcher: Batcher | None = None
        self._live = False

    async def start(self) -> None:
        """Choose the execution provider, load every package, start hot reload, the batcher and the metrics endpoint.

        The provider is chosen first, so a device that cannot be used (``cuda`` without a usable GPU)
        is a ConfigError before anything loads, not a server with no model.
        """
        provider = await asyncio.to_thread(choose_provider, self.settings.device)  # the CUDA probe can take seconds
        log.info("execution provider: %s", provider)
        await self.repository.start()
        self._batcher = Batcher(self.settings, self.metrics)
        if self.settings.metrics_port is not None:
            try:
                self.metrics_port = self.metrics.start_http(self.settings.metrics_port, self.settings.host)
            except BaseException:
                await self.stop()
                raise
        self._live = True

    async def stop(self) -> None:
        """Stop hot reload, let queued and running batches finish, stop the metrics endpoint."""
        self._live = False
        await self.repository.stop()
        if self._batcher is not None:
            await self._batcher.drain()
        if self.metrics_port is not None:
            self.metrics.stop_http()
            self.metrics_port = None

    def live(self) -> bool:
        """Whether the data plane is started and not stopping."""
        return self._live

    def ready(self) -> bool:
        """Whether it is live and every model found in the models directory has a loaded version."""
        return self._live and self.repository.ready()

    def model_ready(self, name: str, version: str | None) -> bool:
        """Whether a request for ``name`` (and ``version``; None: any) would be served."""
        return self.repository.model_ready(name, version)

    def list_models(self) -> list[ModelRef]:
        """Every model found, sorted by name, with its versions, latest loaded version and readiness."""
        return self.repository.list_models()

    def describe(self, name: str, version: str | None) -> ModelInfo:
        """A loaded model version (None or "": the latest) with its manifest; NotFoundError if unknown."""
        model = self.repository.get(name, version)
        return ModelInfo(
            model.name, model.version, self.repository.loaded_versions(name), model.predictor.manifest,
            model.predictor.max_mc_samples,
        )

    async def infer(self, request: InferRequest) -> InferResult:
        """Answer ``request``; raises dropnet errors. Counted and timed in the metrics with its status code."""
        return await self.infer_encoded(request.model, lambda: request)

    async def infer_encoded(self, model: str, decode: Callable[[], InferRequest]) -> InferResult:
        """Answer the request ``decode()`` builds from a wire message that names ``model``.

        Counted and timed like :meth:`infer`, including when ``decode()`` refuses the encoding (the
        mode label is then ``_unknown``): the one place where requests are counted.
        """
        started = time.perf_counter()
        error: BaseException | None = None
        request: InferRequest | None = None
        try:
            request = decode()
            return await self._infer(request)
        except BaseException as exc:
            error = exc
            raise
        finally:
            mode = request.mode if request is not None and request.mode in MODES else UNKNOWN_LABEL
            label = model if self.repository.has_model(model) else UNKNOWN_LABEL
            self.metrics.record(label, mode, status_code_name(error), time.perf_counter() - started)

    async def _infer(self, request: InferRequest) -> InferResult:
        if self._batcher is None:
            raise DropnetError("the data plane is not started; call start() before infer()")
        if request.mode not in MODES:
            raise InvalidInputError(f"mode must be one of {list(MODES)}, got {request.mode!r}")
        outputs = self._check_outputs(request.mode, request.outputs)
        model = self.repository.get(request.model, request.version)
        num_samples, seed = self._check_mc(request, model)
        x = model.predictor.validate_input(request.x, max_rows=self.settings.max_rows_per_request)
        rows = x.shape[0]
        graph_outputs = tuple(dict.fromkeys("probabilities" if name == PREDICTED_CLASS else name for name in outputs))
        spec = RunSpec(model.name, model.version, request.mode, num_samples)
        seeds = row_seeds(seed, rows) if seed is not None else None
        answer = await self._batcher.submit(spec, model.predictor, x, seeds, graph_outputs)
        return InferResult(model.name, model.version, _select(answer, outputs), seed)

    @staticmethod
    def _check_outputs(mode: str, outputs: tuple[str, ...] | None) -> tuple[str, ...]:
        """The requested output names, without duplicates, or the mode's defaults."""
        if not outputs:
            return DEFAULT_OUTPUTS[mode]
        unknown = [name for name in outputs if name not in OUTPUT_NAMES[mode]]
        if unknown:
            raise InvalidInputError(
                f"unknown output(s) {unknown} for mode {mode!r}; expected some of {list(OUTPUT_NAMES[mode])}"
            )
        return tuple(dict.fromkeys(outputs))

    @staticmethod
    def _check_mc(request: InferRequest, model: LoadedModel) -> tuple[int, int | None]:
        """MC samples T (0 in deterministic mode) and the seed (drawn when an MC request gives none).

        T is held to the model's limit (the server's ``max_mc_samples`` lowered to the package's own).
        """
        if request.mode != "mc":
            for name in ("mc_samples", "seed"):
                if getattr(request, name) is not None:
                    raise InvalidInputError(
                        f"{name} applies to mode 'mc' only; got {getattr(request, name)!r} in mode 'deterministic'"
                    )
            return 0, None
        limit = model.predictor.max_mc_samples
        samples = min(DEFAULT_MC_SAMPLES, limit) if request.mc_samples is None else request.mc_samples
        seed = resolve_seed(request.seed)
        return check_int("mc_samples", samples, 1, limit), seed

    def _forget(self, name: str, version: str) -> None:
        """Drop what the batcher and the metrics keep for a model version that no longer serves."""
        if self._batcher is not None:
            self._batcher.forget(name, version)
        if not self.repository.has_model(name):
            self.metrics.forget_model(name)


def _select(answer: Outputs, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``outputs`` in order from the graph's ``answer``, adding ``predicted_class`` (argmax, int64)."""
    return {
        name: answer["probabilities"].argmax(axis=1).astype(np.int64) if name == PREDICTED_CLASS else answer[name]
        for name in outputs
    }
