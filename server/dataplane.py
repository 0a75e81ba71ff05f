"""The protocol-free data plane both gRPC services call: validate, route, batch, answer, measure.

It never imports grpc. Requests name a model and (optionally) a version of the repository, are
checked by the same code as the Predictor's (:mod:`dropnet.server.request`: the model's input spec, its MC
limit, the output table) and against the server's row limit, queued on the batcher, and answered
with the outputs they asked for. Every request is counted and timed here, labelled with the
status code name of its outcome (:mod:`dropnet.server.status_codes`), so the gRPC layer records nothing:
it hands over the decoding of a wire message (:meth:`DataPlane.infer_encoded`), so that requests
refused for their encoding are counted too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dropnet.core.errors import DropnetError
from dropnet.core.manifest import Manifest
from dropnet.core.outputs import Mode
from dropnet.server.batcher import Batcher, RunSpec
from dropnet.server.metrics import ServerMetrics
from dropnet.server.providers import choose_provider
from dropnet.server.repository import ModelRef, ModelRepository
from dropnet.server.request import MODES, answer, check_request
from dropnet.server.settings import ServerSettings
from dropnet.server.status_codes import status_code_name

log = logging.getLogger(__name__)

UNKNOWN_LABEL = "_unknown"
"""Metric label for a model or mode the server does not have, so clients cannot grow the label set."""


@dataclass
class InferRequest:
    """One inference request, as either gRPC service hands it over."""

    model: str
    version: str | None
    """None (or "") for the latest loaded version."""
    x: np.ndarray
    """Rows of the model's input, any numeric dtype; converted to the input's dtype when checked."""
    mode: str = "deterministic"
    """"deterministic" or "mc"."""
    mc_samples: int | None = None
    """MC samples T (mc mode; None: ``dropnet.server.request.DEFAULT_MC_SAMPLES``); must be None in deterministic mode."""
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
    manifest: Manifest
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
            mode = Mode(request.mode).value if request is not None and request.mode in MODES else UNKNOWN_LABEL
            label = model if self.repository.has_model(model) else UNKNOWN_LABEL
            self.metrics.record(label, mode, status_code_name(error), time.perf_counter() - started)

    async def _infer(self, request: InferRequest) -> InferResult:
        if self._batcher is None:
            raise DropnetError("the data plane is not started; call start() before infer()")
        model = self.repository.get(request.model, request.version)
        checked = check_request(
            model.predictor, request.x, request.mode, request.mc_samples, request.seed, request.outputs,
            max_rows=self.settings.max_rows_per_request,
        )
        spec = RunSpec(model.name, model.version, checked.mode.value, checked.num_samples)
        graph = await self._batcher.submit(
            spec, model.predictor, checked.x, checked.row_seeds(), checked.graph_outputs
        )
        return InferResult(model.name, model.version, answer(checked, graph), checked.seed)

    def _forget(self, name: str, version: str) -> None:
        """Drop what the batcher and the metrics keep for a model version that no longer serves."""
        if self._batcher is not None:
            self._batcher.forget(name, version)
        if not self.repository.has_model(name):
            self.metrics.forget_model(name)

