"""Lanes of the batcher: deterministic and MC batches run on their own worker threads, so a long MC run
(or a queue of MC requests) never holds up a deterministic request."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from dropnet.core.errors import ResourceExhaustedError, UnavailableError
from dropnet.core.seeding import row_seeds
from dropnet.server.batcher import Batcher, RunSpec
from dropnet.server.priority import MC_NICE
from dropnet.server.metrics import ServerMetrics
from dropnet.server.predictor import Predictor
from tests.server.helpers import MODEL, assert_outputs_match, digits_rows, make_settings

DET = RunSpec(MODEL, "1", "deterministic")
MC = RunSpec(MODEL, "1", "mc", num_samples=8)
OUTPUTS = ("probabilities",)


class HeldMcEngine:
    """A real predictor whose MC runs block until ``release_mc()``; deterministic runs pass straight through.

    Records the name and (on Linux) the nice value of the thread of every run, by mode.
    """

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor
        self._mc_gate = threading.Event()
        self.mc_started = threading.Event()
        self.threads: dict[str, list[str]] = {"deterministic": [], "mc": []}
        self.nice: dict[str, list[int]] = {"deterministic": [], "mc": []}

    def release_mc(self) -> None:
        self._mc_gate.set()

    def run_deterministic(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self._record("deterministic")
        return self._predictor.run_deterministic(x)

    def run_mc(self, x: np.ndarray, num_samples: int, row_seeds: np.ndarray, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        self._record("mc")
        self.mc_started.set()
        if not self._mc_gate.wait(timeout=60):
            raise RuntimeError("HeldMcEngine was never released")
        return self._predictor.run_mc(x, num_samples, row_seeds, outputs)

    def _record(self, mode: str) -> None:
        self.threads[mode].append(threading.current_thread().name)
        if sys.platform.startswith("linux"):
            self.nice[mode].append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))


def submit_mc(batcher: Batcher, engine: HeldMcEngine, seed: int, spec: RunSpec = MC) -> asyncio.Task:
    return asyncio.create_task(batcher.submit(spec, engine, digits_rows(2, seed), row_seeds(seed, 2), OUTPUTS))


async def start_mc(batcher: Batcher, engine: HeldMcEngine, seed: int) -> asyncio.Task:
    """An MC request whose run has started (and holds the MC worker until ``engine.release_mc()``)."""
    task = submit_mc(batcher, engine, seed)
    await asyncio.to_thread(engine.mc_started.wait, 30)
    return task


async def until_waiting(batcher: Batcher, count: int, model: str = MODEL) -> None:
    """Yield to the event loop until ``count`` requests for ``model`` wait for their batch."""
    while batcher.waiting(model) != count:
        await asyncio.sleep(0)


def test_a_deterministic_request_completes_while_an_mc_batch_runs_and_another_waits(
    tmp_path: Path, tiny_predictor: Predictor
) -> None:
    x = digits_rows(3, seed=7)

    async def main() -> None:
        batcher = Batcher(make_settings(tmp_path), ServerMetrics())  # one worker per lane
        engine = HeldMcEngine(tiny_predictor)
        running = await start_mc(batcher, engine, seed=1)
        queued = submit_mc(batcher, engine, seed=2, spec=RunSpec(MODEL, "1", "mc", num_samples=4))
        await until_waiting(batcher, 1)
        answer = await asyncio.wait_for(batcher.submit(DET, engine, x, None, ("probabilities", "logits")), 60)
        assert not running.done() and not queued.done() and batcher.waiting(MODEL) == 1
        assert_outputs_match(answer, tiny_predictor.run_deterministic(x))
        engine.release_mc()
        for task, seed, samples in ((running, 1, 8), (queued, 2, 4)):
            expected = tiny_predictor.run_mc(digits_rows(2, seed), samples, row_seeds(seed, 2), OUTPUTS)
            assert_outputs_match(await task, expected)
        await batcher.drain()

    asyncio.run(main())


def test_each_mode_runs_on_its_own_worker_threads_mc_at_a_lower_priority(
    tmp_path: Path, tiny_predictor: Predictor
) -> None:
    async def main() -> HeldMcEngine:
        settings = make_settings(tmp_path, inference_workers=2, mc_workers=1, inline_run_ms=0)  # never on the loop
        batcher = Batcher(settings, ServerMetrics())
        engine = HeldMcEngine(tiny_predictor)
        engine.release_mc()
        for seed in range(3):
            await batcher.submit(DET, engine, digits_rows(1, seed), None, OUTPUTS)
            await submit_mc(batcher, engine, seed)
        await batcher.drain()
        return engine

    engine = asyncio.run(main())
    threads = engine.threads
    assert all(name.startswith("dropnet-deterministic") for name in threads["deterministic"])
    assert all(name.startswith("dropnet-mc") for name in threads["mc"]) and len(set(threads["mc"])) == 1
    if sys.platform.startswith("linux"):  # nice is per thread there
        process = os.getpriority(os.PRIO_PROCESS, 0)
        assert engine.nice == {"deterministic": [process] * 3, "mc": [min(19, process + MC_NICE)] * 3}


def test_drain_finishes_running_and_queued_work_of_both_lanes(tmp_path: Path, tiny_predictor: Predictor) -> None:
    async def main() -> None:
        batcher = Batcher(make_settings(tmp_path), ServerMetrics())
        engine = HeldMcEngine(tiny_predictor)
        running = await start_mc(batcher, engine, seed=1)
        queued = submit_mc(batcher, engine, seed=2)
        await until_waiting(batcher, 1)
        drain = asyncio.create_task(batcher.drain())
        await asyncio.sleep(0)
        with pytest.raises(UnavailableError, match="shutting down"):
            await batcher.submit(DET, engine, digits_rows(1, 0), None, OUTPUTS)
        assert not drain.done()
        engine.release_mc()
        await asyncio.wait_for(drain, 60)
        assert running.result()["probabilities"].shape == queued.result()["probabilities"].shape == (2, 10)

    asyncio.run(main())


def test_the_queue_limit_counts_both_lanes_of_a_model_and_only_that_model(
    tmp_path: Path, tiny_predictor: Predictor
) -> None:
    other = RunSpec("other", "1", "deterministic")

    async def main() -> None:
        batcher = Batcher(make_settings(tmp_path, max_queue_size=2), ServerMetrics())
        engine = HeldMcEngine(tiny_predictor)
        running = await start_mc(batcher, engine, seed=1)
        queued = [submit_mc(batcher, engine, seed) for seed in (2, 3)]
        await until_waiting(batcher, 2)
        with pytest.raises(ResourceExhaustedError, match=f"model '{MODEL}' has 2 requests waiting"):
            await batcher.submit(DET, engine, digits_rows(1, 0), None, OUTPUTS)
        answer = await asyncio.wait_for(batcher.submit(other, engine, digits_rows(1, 0), None, OUTPUTS), 60)
        assert answer["probabilities"].shape == (1, 10) and not running.done()
        engine.release_mc()
        await asyncio.gather(running, *queued)
        await batcher.drain()

    asyncio.run(main())
