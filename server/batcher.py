"""Dynamic batching: concurrent requests for the same model, version, mode and sample count share
one onnxruntime run.

Each key has a FIFO queue and a consumer task. Batches run in one of two lanes, by mode, each with
its own worker threads and its own count of free ones: deterministic batches on
``inference_workers`` threads, MC batches on ``mc_workers``. A long MC run (or a queue of them)
therefore never holds up a deterministic request: separate workers per mode, not chunked
scheduling. A deterministic request that arrives alone (no other request of its spec in the
batcher, after one turn of the event loop lets requests that arrived together show up) while no
deterministic worker runs a batch skips the queue and runs on the event loop itself, when the
spec's previous runs say it takes at most ``inline_run_ms``: at low load the thread hand-off and
the queue's tasks cost more CPU than such a run. A batch is formed once a worker thread of its lane is free and either
``max_batch_size`` rows wait or the oldest request has waited ``max_queue_delay_ms``. The delay
applies only while the previous batch of the same spec held several requests: a lone request
under light load starts at once, and under load, batch-mates also gather while every worker of
the lane is busy. The rows of its requests (and, in MC mode, their per-row seeds) are
concatenated, run once in a worker thread, and the outputs are split back. A row's MC masks
depend on its seed alone, so every request gets exactly what it would get served alone. Requests
are never split: one larger than ``max_batch_size`` runs by itself. With batching off every batch
holds a single request. ``max_queue_size`` bounds the requests waiting per model, both lanes
together.

On Linux the MC workers run at a lower CPU priority (:data:`dropnet.server.priority.MC_NICE`): where the cores are
contended, the scheduler gives them to deterministic runs and the event loop first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from dropnet.core.errors import ResourceExhaustedError, UnavailableError
from dropnet.core.outputs import Mode, rows_axis
from dropnet.server.metrics import ServerMetrics
from dropnet.server.priority import lower_thread_priority
from dropnet.server.settings import ServerSettings

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]


class Engine(Protocol):
    """What the batcher runs: the part of :class:`dropnet.server.predictor.Predictor` it needs."""

    def run_deterministic(self, x: np.ndarray) -> Outputs: ...

    def run_mc(self, x: np.ndarray, num_samples: int, row_seeds: np.ndarray, outputs: tuple[str, ...]) -> Outputs: ...


class RunSpec(NamedTuple):  # a tuple: hashed in C, several times per request
    """What one onnxruntime run computes; requests with equal specs (and engine) can share a run."""

    model: str
    version: str
    mode: str
    """"deterministic" or "mc"."""
    num_samples: int = 0
    """MC samples T (0 in deterministic mode)."""


@dataclass(eq=False)  # compared by identity: a request is found in its queue by being that object
class _Request:
    x: np.ndarray
    row_seeds: np.ndarray | None
    outputs: tuple[str, ...]
    future: asyncio.Future[Outputs]
    arrived: float

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])


@dataclass
class _Queue:
    """Requests waiting for one (spec, engine) and the task that batches them."""

    spec: RunSpec
    engine: Engine
    items: deque[_Request] = field(default_factory=deque)
    rows: int = 0
    consumer: asyncio.Task[None] | None = None
    flushing: bool = False
    """Set on shutdown: batches are formed at once, without waiting for batch-mates."""
    _full: asyncio.Future[None] | None = None
    """While :meth:`wait_full` waits: done once the batch is full (or the queue flushes)."""
    _full_rows: int = 0

    def put(self, request: _Request) -> None:
        self.items.append(request)
        self.rows += request.rows
        if self.rows >= self._full_rows:
            self.wake()

    def flush(self) -> None:
        """Form batches at once from now on."""
        self.flushing = True
        self.wake()

    def wake(self) -> None:
        """End :meth:`wait_full`, if it waits."""
        if self._full is not None and not self._full.done():
            self._full.set_result(None)

    def discard(self, request: _Request) -> None:
        if request in self.items:
            self.items.remove(request)
            self.rows -= request.rows

    def take(self, max_rows: int) -> list[_Request]:
        """The oldest live requests holding at most ``max_rows`` rows (at least one request)."""
        batch: list[_Request] = []
        rows = 0
        while self.items:
            request = self.items[0]
            if not request.future.done() and batch and rows + request.rows > max_rows:
                break
            self.items.popleft()
            self.rows -= request.rows
            if not request.future.done():  # cancelled before its batch started: no work for it
                batch.append(request)
                rows += request.rows
        return batch

    async def wait_full(self, max_rows: int, delay: float) -> None:
        """Return once ``max_rows`` rows wait or the oldest request has waited ``delay`` seconds.

        One future and one timer per batch, not per arrival: :meth:`put` ends the wait when the rows suffice.
        """
        if not self.items or self.rows >= max_rows or self.flushing:
            return
        loop = asyncio.get_running_loop()
        deadline = self.items[0].arrived + delay
        if deadline <= loop.time():
            return
        self._full, self._full_rows = loop.create_future(), max_rows
        timer = loop.call_at(deadline, self.wake)
        try:
            await self._full
        finally:
            timer.cancel()
            self._full, self._full_rows = None, 0


def run_batch(engine: Engine, spec: RunSpec, batch: list[_Request]) -> list[Outputs]:
    """One onnxruntime run for every request of ``batch`` (in a worker thread); the outputs of each.

    A batch of one request gets the run's arrays as they are; larger ones get contiguous copies of their rows.
    """
    x = batch[0].x if len(batch) == 1 else np.concatenate([request.x for request in batch])
    if spec.mode == "mc":
        seeds = batch[0].row_seeds if len(batch) == 1 else np.concatenate([request.row_seeds for request in batch])
        wanted = tuple(dict.fromkeys(name for request in batch for name in request.outputs))
        result = engine.run_mc(x, spec.num_samples, seeds, wanted)
    else:
        result = engine.run_deterministic(x)
    if len(batch) == 1:
        return [{name: result[name] for name in batch[0].outputs}]
    answers: list[Outputs] = []
    start = 0
    for request in batch:
        rows = slice(start, start + request.rows)
        answers.append({name: _rows(result[name], rows_axis(name), rows) for name in request.outputs})
        start = rows.stop
    return answers


def timed_run_batch(engine: Engine, spec: RunSpec, batch: list[_Request]) -> tuple[list[Outputs], float]:
    """:func:`run_batch` and the seconds it took."""
    started = time.perf_counter()
    answers = run_batch(engine, spec, batch)
    return answers, time.perf_counter() - started


def _rows(array: np.ndarray, axis: int, rows: slice) -> np.ndarray:
    """The ``rows`` of ``array`` along ``axis``, as a contiguous array."""
    index = [slice(None)] * array.ndim
    index[axis] = rows
    return np.ascontiguousarray(array[tuple(index)])


class _Lane:
    """The worker threads that run the batches of one mode, a count of the free ones and of the busy ones."""

    def __init__(self, mode: Mode, workers: int, initializer: Callable[[], None] | None = None) -> None:
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix=f"dropnet-{mode.value}", initializer=initializer)
        self.free = asyncio.Semaphore(workers)
        self.busy = 0
        """Workers taken by a batch (between acquiring :attr:`free` and releasing it)."""

    async def take(self) -> None:
        await self.free.acquire()
        self.busy += 1

    def give_back(self) -> None:
        self.busy -= 1
        self.free.release()


class Batcher:
    """Queues requests per (spec, engine) and runs them in batches, each mode on its own worker threads."""

    def __init__(self, settings: ServerSettings, metrics: ServerMetrics) -> None:
        self._max_rows = settings.max_batch_size if settings.batching else 1
        self._delay = settings.max_queue_delay_ms / 1000 if settings.batching else 0.0
        self._max_queue = settings.max_queue_size
        self._inline_s = settings.inline_run_ms / 1000
        self._metrics = metrics
        self._lanes = {
            Mode.DETERMINISTIC.value: _Lane(Mode.DETERMINISTIC, settings.inference_workers),
            Mode.MC.value: _Lane(Mode.MC, settings.mc_workers, lower_thread_priority),
        }
        self._queues: dict[tuple[RunSpec, int], _Queue] = {}
        self._last_batch_requests: dict[RunSpec, int] = {}
        """Requests in the latest batch of each spec, where it held more than one: batch-mates are worth waiting
        for. A spec whose queue retires after a lone request, or whose model version is unloaded, is dropped."""
        self._running: set[asyncio.Task[None]] = set()
        self._seconds_per_row: dict[RunSpec, float] = {}
        """The latest run of each spec: its seconds per row (what decides whether a lone request runs inline)."""
        self._active: Counter[RunSpec] = Counter()
        """Requests of each spec between entering :meth:`submit` and getting their answer."""
        self._entered: Counter[RunSpec] = Counter()
        """Requests of each spec that ever entered :meth:`submit` (tells a request whether another came after it)."""
        self._closed = False

    async def submit(
        self, spec: RunSpec, engine: Engine, x: np.ndarray, row_seeds: np.ndarray | None, outputs: tuple[str, ...]
    ) -> Outputs:
        """The ``outputs`` of ``engine`` for validated rows ``x`` (and, in MC mode, their seeds), batched with others."""
        if self._closed:
            raise UnavailableError("the server is shutting down and takes no new requests; retry on another instance")
        waiting = self.waiting(spec.model)
        if waiting >= self._max_queue:
            raise ResourceExhaustedError(
                f"model {spec.model!r} has {waiting} requests waiting, the most allowed (max_queue_size); retry later"
            )
        loop = asyncio.get_running_loop()
        request = _Request(x, row_seeds, outputs, loop.create_future(), loop.time())
        key = (spec, id(engine))
        self._active[spec] += 1
        self._entered[spec] += 1
        try:
            if await self._alone(spec, key, request.rows):
                self._metrics.record_batch(spec.model, spec.mode, request.rows)
                self._last_batch_requests.pop(spec, None)
                answers, seconds = timed_run_batch(engine, spec, [request])
                self._remember_cost(spec, [request], seconds)
                return answers[0]
            return await self._enqueue(key, spec, engine, request)
        finally:
            self._active[spec] -= 1
            if not self._active[spec]:
                del self._active[spec], self._entered[spec]

    async def _alone(self, spec: RunSpec, key: tuple[RunSpec, int], rows: int) -> bool:
        """Whether a request of ``rows`` rows may run inline: see the module doc."""
        lane = self._lanes[spec.mode]
        per_row = self._seconds_per_row.get(spec)
        if (
            spec.mode != Mode.DETERMINISTIC.value or per_row is None or rows * per_row > self._inline_s
            or self._active[spec] > 1 or lane.busy or key in self._queues
        ):
            return False
        entered = self._entered[spec]
        await asyncio.sleep(0)  # requests that arrived with this one get to enter submit() first
        return self._entered[spec] == entered and not lane.busy and key not in self._queues and not self._closed

    async def _enqueue(self, key: tuple[RunSpec, int], spec: RunSpec, engine: Engine, request: _Request) -> Outputs:
        """Queue ``request`` for its batch and wait for its outputs."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(spec, engine)
            queue.consumer = asyncio.create_task(self._consume(key, queue), name=f"dropnet-batch-{spec.model}")
        queue.put(request)
        self._report_depth(spec.model)
        try:
            return await request.future
        except asyncio.CancelledError:
            queue.discard(request)
            self._report_depth(spec.model)
            raise

    def forget(self, model: str, version: str) -> None:
        """Drop what is remembered about the batches of a model version that no longer serves."""
        for remembered in (self._last_batch_requests, self._seconds_per_row):
            for spec in [spec for spec in remembered if (spec.model, spec.version) == (model, version)]:
                del remembered[spec]

    def waiting(self, model: str) -> int:
        """Requests for ``model`` that wait for their batch to start."""
        return sum(len(queue.items) for queue in self._queues.values() if queue.spec.model == model)

    async def drain(self) -> None:
        """Refuse new requests, run every queued batch now and let running ones finish, then stop the workers."""
        self._closed = True
        for queue in self._queues.values():
            queue.flush()
        while self._queues or self._running:
            consumers = [queue.consumer for queue in self._queues.values() if queue.consumer is not None]
            await asyncio.gather(*consumers, *self._running, return_exceptions=True)
        for lane in self._lanes.values():
            lane.executor.shutdown(wait=True)

    async def _consume(self, key: tuple[RunSpec, int], queue: _Queue) -> None:
        """Form batches from ``queue`` until it is empty, then retire it."""
        lane = self._lanes[queue.spec.mode]
        try:
            while queue.items:
                if self._last_batch_requests.get(queue.spec, 1) > 1:
                    await queue.wait_full(self._max_rows, self._delay)
                await lane.take()
                batch = queue.take(self._max_rows)
                self._last_batch_requests[queue.spec] = max(len(batch), 1)
                self._report_depth(queue.spec.model)
                if not batch:
                    lane.give_back()
                    continue
                task = asyncio.create_task(self._run(lane, queue, batch))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        finally:
            del self._queues[key]
            if self._last_batch_requests.get(queue.spec) == 1:  # 1 is the default: nothing worth keeping
                del self._last_batch_requests[queue.spec]
            for request in queue.items:  # only left when the consumer itself failed or was cancelled
                request.future.cancel()

    async def _run(self, lane: _Lane, queue: _Queue, batch: list[_Request]) -> None:
        """Run ``batch`` in a worker thread of ``lane`` and hand each request its outputs (or the error)."""
        spec = queue.spec
        try:
            self._metrics.record_batch(spec.model, spec.mode, sum(request.rows for request in batch))
            loop = asyncio.get_running_loop()
            answers, seconds = await loop.run_in_executor(lane.executor, timed_run_batch, queue.engine, spec, batch)
            self._remember_cost(spec, batch, seconds)
        except Exception as exc:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
        else:
            for request, answer in zip(batch, answers):
                if not request.future.done():
                    request.future.set_result(answer)
        finally:
            lane.give_back()

    def _remember_cost(self, spec: RunSpec, batch: list[_Request], seconds: float) -> None:
        self._seconds_per_row[spec] = seconds / max(sum(request.rows for request in batch), 1)

    def _report_depth(self, model: str) -> None:
        self._metrics.set_queue_depth(model, self.waiting(model))
