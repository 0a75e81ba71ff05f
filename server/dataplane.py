"""The protocol-free data plane both gRPC services call: validate, route, batch, answer, measure.

It never imports grpc. Requests name a model and (optionally) a version of the repository, are
checked by the same code as the Predictor's (:mod:`dropnet.server.request`: the model's input spec, its MC
limit, the output table) and against the server's row limit, queued on the batcher, and answered
with the outputs they asked for. Every request is counted and timed here, labelled with the
status code name of its outcome (:mod:`dropnet.server.status_codes`), so the gRPC layer records nothing:
it hands over the decoding of a wire message (:meth:`DataPlane.infer_encoded`), so that requests
refused for their encoding are counted too. A request whose response could pass
``max_message_bytes`` is refused before it runs (:mod:`dropnet.server.response_size`).

Stopping keeps to a deadline (:meth:`DataPlane.stop`): requests in flight get ``grace_s`` seconds,
then each still waiting is ended with :class:`UnavailableError` (UNAVAILABLE). An onnxruntime run
already started cannot be interrupted: the stop does not wait for it (its worker thread finishes
on its own, or ``dropnet serve`` exits without it), and says so by returning False.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dropnet.core.errors import DropnetError, UnavailableError
from dropnet.core.manifest import Manifest
from dropnet.core.outputs import Mode
from dropnet.server.batcher import Batcher, RunSpec
from dropnet.server.metrics import ServerMetrics
from dropnet.server.providers import choose_provider
from dropnet.server.repository import ModelRef, ModelRepository
from dropnet.server.request import MODES, answer, check_request
from dropnet.server.response_size import check_response_size
from dropnet.server.security import public_manifest
from dropnet.server.settings import ServerSettings
from dropnet.server.status_codes import status_code_name

log = logging.getLogger(__name__)

UNKNOWN_LABEL = "_unknown"
"""Metric label for a model or mode the server does not have, so clients cannot grow the label set."""
CUT_MARGIN_S = 0.5
"""After the grace period, how long :meth:`DataPlane.stop` waits for the requests it cut to end and for the
batcher to retire what no longer runs, before it gives up on runs still in onnxruntime."""
CUT_MESSAGE = "the server is shutting down and its grace period is over; retry on another instance"


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
    echo_bytes: int = 0
    """Bytes of the request its response carries back (OIP's ``id``), counted in the response size estimate."""


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
        self._in_flight: set[asyncio.Task[object]] = set()
        """The tasks of the requests being answered (those :meth:`stop` ends at its deadline)."""
        self._cut: set[asyncio.Task[object]] = set()
        """Those of them :meth:`stop` cancelled: their cancellation becomes UnavailableError."""

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

    async def stop(self, grace_s: float | None = None) -> bool:
        """Stop hot reload and the batcher (no new requests), then the metrics endpoint; True if every run finished.

        Queued and running batches get ``grace_s`` seconds (None: as long as they take). Then every
        request still in flight ends with UnavailableError, and after :data:`CUT_MARGIN_S` more the
        stop returns False if onnxruntime runs are still going: their worker threads are left to
        finish on their own.
        """
        self._live = False
        await self.repository.stop()
        finished = True
        if self._batcher is not None:
            drain = asyncio.ensure_future(self._batcher.drain())
            await asyncio.wait({drain}, timeout=grace_s)
            if not drain.done():
                cut = self._cut_in_flight()
                await asyncio.wait({drain}, timeout=CUT_MARGIN_S)
                finished = drain.done()
                if cut or not finished:
                    log.warning(
                        "grace period of %gs over: %d request(s) ended UNAVAILABLE%s", grace_s, cut,
                        "" if finished else "; inference runs still in onnxruntime are left to finish in their threads",
                    )
            if finished:
                drain.result()  # the drain's own error, if any, is the stop's
        if self.metrics_port is not None:
            self.metrics.stop_http()
            self.metrics_port = None
        return finished

    def _cut_in_flight(self) -> int:
        """Cancel every request in flight, so that each ends with UnavailableError; how many there were."""
        for task in self._in_flight:
            self._cut.add(task)
            task.cancel()
        return len(self._in_flight)

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
        """A loaded model version (None or "": the latest) with its manifest; NotFoundError if unknown.

        The manifest's provenance is cut to what :func:`dropnet.server.security.public_manifest` keeps
        unless ``settings.expose_provenance``.
        """
        model = self.repository.get(name, version)
        manifest = model.predictor.manifest
        shown = manifest if self.settings.expose_provenance else public_manifest(manifest)
        return ModelInfo(
            model.name, model.version, self.repository.loaded_versions(name), shown, model.predictor.max_mc_samples
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
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            try:
                request = decode()
                return await self._infer(request)
            except asyncio.CancelledError:
                if task is None or task not in self._cut:
                    raise
                task.uncancel()  # cancelled by stop(): not the client's doing, so an error it is told of
                raise UnavailableError(CUT_MESSAGE) from None
        except BaseException as exc:
            error = exc
            raise
        finally:
            if task is not None:
                self._in_flight.discard(task)
                self._cut.discard(task)
            mode = Mode(request.mode).value if request is not None and request.mode in MODES else UNKNOWN_LABEL
            label = model if self.repository.has_model(model) else UNKNOWN_LABEL
            self.metrics.record(label, mode, status_code_name(error), time.perf_counter() - started)

    async def _infer(self, request: InferRequest) -> InferResult:
        if self._batcher is None:
            raise DropnetError("the data plane is not started; call start() before infer()")
        model = self.repository.get(request.model, request.version)
        checked = check_request(
            model.predictor, request.x, request.mode, request.mc_samples, request.seed, request.outputs,
            max_rows=self.settings.max_rows_per_request, max_cost_bytes=self.settings.max_request_cost_bytes,
        )
        check_response_size(
            model.predictor.manifest, checked, self.settings.max_message_bytes,
            len(model.name.encode()) + len(model.version.encode()) + request.echo_bytes,
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

