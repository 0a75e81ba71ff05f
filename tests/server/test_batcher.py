"""Dynamic batching: coalescing, equivalence with unbatched runs, bounds, cancellation, draining."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dropnet.core.errors import DropnetError, ResourceExhaustedError, UnavailableError
from dropnet.core.outputs import Mode, Task, graph_output_names
from dropnet.core.seeding import row_seeds
from dropnet.server.batcher import Batcher, RunSpec, _Request, run_batch
from dropnet.server.metrics import ServerMetrics
from dropnet.server.predictor import Predictor
from tests.server.helpers import MODEL, RecordingEngine, assert_outputs_match, digits_rows, make_settings

DET = RunSpec(MODEL, "1", "deterministic")
MC = RunSpec(MODEL, "1", "mc", num_samples=8)
MC_OUTPUTS = graph_output_names(Task.CLASSIFICATION, Mode.MC)  # samples last


def make_batcher(tmp_path: Path, **overrides: object) -> tuple[Batcher, ServerMetrics]:
    metrics = ServerMetrics()
    return Batcher(make_settings(tmp_path, **overrides), metrics), metrics


async def hold_worker(batcher: Batcher, engine: RecordingEngine, spec: RunSpec = DET) -> asyncio.Task:
    """Start a one-row request that occupies the (single) worker until ``engine.release()``."""
    seeds = row_seeds(0, 1) if spec.mode == "mc" else None
    task = asyncio.create_task(batcher.submit(spec, engine, digits_rows(1, 99), seeds, ("probabilities",)))
    await asyncio.to_thread(engine.started.wait, 30)
    return task


async def until_waiting(batcher: Batcher, count: int) -> None:
    """Yield to the event loop until ``count`` requests wait for their batch."""
    while batcher.waiting(MODEL) != count:
        await asyncio.sleep(0)


def test_concurrent_deterministic_requests_coalesce_and_equal_sequential(tmp_path: Path, tiny_predictor: Predictor) -> None:
    inputs = [digits_rows(1 + i % 3, seed=i) for i in range(16)]

    async def main() -> tuple[list[dict[str, np.ndarray]], list[int], ServerMetrics]:
        batcher, metrics = make_batcher(tmp_path)
        engine = RecordingEngine(tiny_predictor)
        blocker = await hold_worker(batcher, engine)
        tasks = [asyncio.create_task(batcher.submit(DET, engine, x, None, ("probabilities", "logits"))) for x in inputs]
        await until_waiting(batcher, 16)
        engine.release()
        answers = await asyncio.gather(*tasks)
        await blocker
        await batcher.drain()
        return answers, engine.rows, metrics

    answers, runs, metrics = asyncio.run(main())
    total = sum(len(x) for x in inputs)
    assert runs == [1, total]  # the blocker, then all 16 requests in ONE onnxruntime run
    assert metrics.registry.get_sample_value("dropnet_batch_rows_count", {"model": MODEL, "mode": "deterministic"}) == 2
    assert metrics.registry.get_sample_value("dropnet_batch_rows_sum", {"model": MODEL, "mode": "deterministic"}) == 1 + total
    for x, answer in zip(inputs, answers):
        assert_outputs_match(answer, tiny_predictor.run_deterministic(x))


def test_concurrent_mc_requests_keep_their_own_seeds(tmp_path: Path, tiny_predictor: Predictor) -> None:
    inputs = [digits_rows(1 + i % 3, seed=100 + i) for i in range(16)]
    inputs[3] = inputs[0].copy()  # equal one-row inputs with different seeds
    seeds = [row_seeds(1000 + i, len(x)) for i, x in enumerate(inputs)]
    outputs = [MC_OUTPUTS if i % 2 else MC_OUTPUTS[:4] for i in range(16)]  # half also ask for samples

    async def main() -> tuple[list[dict[str, np.ndarray]], list[int]]:
        batcher, _ = make_batcher(tmp_path)
        engine = RecordingEngine(tiny_predictor)
        blocker = await hold_worker(batcher, engine, MC)
        tasks = [asyncio.create_task(batcher.submit(MC, engine, x, s, o)) for x, s, o in zip(inputs, seeds, outputs)]
        await until_waiting(batcher, 16)
        engine.release()
        answers = await asyncio.gather(*tasks)
        await blocker
        await batcher.drain()
        return answers, engine.rows

    answers, runs = asyncio.run(main())
    assert runs == [1, sum(len(x) for x in inputs)]
    for x, s, wanted, answer in zip(inputs, seeds, outputs, answers):
        assert_outputs_match(answer, tiny_predictor.run_mc(x, MC.num_samples, s, wanted))
        assert answer["probabilities"].shape == (len(x), 10)
        if "samples" in wanted:
            assert answer["samples"].shape == (MC.num_samples, len(x), 10)
    assert not np.array_equal(answers[0]["probabilities"], answers[3]["probabilities"])


def test_batches_respect_max_batch_size_and_big_requests_run_alone(tmp_path: Path, tiny_predictor: Predictor) -> None:
    sizes = [1, 2, 6, 1]

    async def main() -> list[int]:
        batcher, _ = make_batcher(tmp_path, max_batch_size=4)
        engine = RecordingEngine(tiny_predictor)
        blocker = await hold_worker(batcher, engine)
        tasks = [asyncio.create_task(batcher.submit(DET, engine, digits_rows(n, n), None, ("probabilities",))) for n in sizes]
        await until_waiting(batcher, len(sizes))
        engine.release()
        answers = await asyncio.gather(blocker, *tasks)
        assert [len(a["probabilities"]) for a in answers[1:]] == sizes
        await batcher.drain()
        return engine.rows

    assert asyncio.run(main()) == [1, 3, 6, 1]


def test_batching_disabled_runs_each_request_alone(tmp_path: Path, tiny_predictor: Predictor) -> None:
    inputs = [digits_rows(2, seed=i) for i in range(3)]

    async def main() -> tuple[list[dict[str, np.ndarray]], list[int]]:
        batcher, _ = make_batcher(tmp_path, batching=False)
        engine = RecordingEngine(tiny_predictor)
        blocker = await hold_worker(batcher, engine)
        tasks = [asyncio.create_task(batcher.submit(DET, engine, x, None, ("logits",))) for x in inputs]
        await until_waiting(batcher, 3)
        engine.release()
        answers = await asyncio.gather(*tasks)
        await blocker
        await batcher.drain()
        return answers, engine.rows

    answers, runs = asyncio.run(main())
    assert runs == [1, 2, 2, 2]
    for x, answer in zip(inputs, answers):
        np.testing.assert_array_equal(answer["logits"], tiny_predictor.run_deterministic(x)["logits"])


def test_full_queue_rejects_new_requests_at_once(tmp_path: Path, tiny_predictor: Predictor) -> None:
    async def main() -> list[int]:
        batcher, metrics = make_batcher(tmp_path, max_queue_size=2)
        engine = RecordingEngine(tiny_predictor)
        blocker = await hold_worker(batcher, engine)
        waiting = [asyncio.create_task(batcher.submit(DET, engine, digits_rows(1, i), None, ("probabilities",))) for i in range(2)]
        await until_waiting(batcher, 2)
        assert metrics.registry.get_sample_value("dropnet_queue_depth", {"model": MODEL}) == 2
        with pytest.raises(ResourceExhaustedError, match="2 requests waiting"):
            await batcher.submit(DET, engine, digits_rows(1, 5), None, ("probabilities",))
        engine.release()
        answers = await asyncio.gather(blocker, *waiting)
        assert all(a["probabilities"].shape == (1, 10) for a in answers)
        assert metrics.registry.get_sample_value("dropnet_queue_depth", {"model": MODEL}) == 0
        await batcher.drain()
        return engine.rows

    assert asyncio.run(main()) == [1, 2]  # the rejected request never ran


def test_cancelled_request_is_dropped_before_its_batch(tmp_path: Path, tiny_predictor: Predictor) -> None:
    async def main() -> tuple[list[int], bool]:
        batcher, _ = make_batcher(tmp_path)
        engine = RecordingEngine(tiny_predictor)
        blocker = await hold_worker(batcher, engine)
        dropped = asyncio.create_task(batcher.submit(DET, engine, digits_rows(3, 1), None, ("probabilities",)))
        kept = asyncio.create_task(batcher.submit(DET, engine, digits_rows(2, 2), None, ("probabilities",)))
        await until_waiting(batcher, 2)
        dropped.cancel()
        await asyncio.gather(dropped, return_exceptions=True)
        assert batcher.waiting(MODEL) == 1
        engine.release()
        answer = await kept
        await blocker
        await batcher.drain()
        assert answer["probabilities"].shape == (2, 10)
        return engine.rows, dropped.cancelled()

    runs, cancelled = asyncio.run(main())
    assert cancelled
    assert runs == [1, 2]  # the cancelled request's 3 rows were never run


def test_run_error_reaches_every_request_of_the_batch(tmp_path: Path, tiny_predictor: Predictor) -> None:
    async def main() -> list[BaseException]:
        batcher, _ = make_batcher(tmp_path)
        engine = RecordingEngine(tiny_predictor)
        blocker = await hold_worker(batcher, engine, MC)  # the MC lane's worker: both requests wait for it
        bad = row_seeds(0, 2)  # two seeds for a one-row request: the engine refuses the batch's seeds
        tasks = [asyncio.create_task(batcher.submit(MC, engine, digits_rows(1, i), bad, ("probabilities",)))
                 for i in range(2)]
        await until_waiting(batcher, 2)
        engine.release()
        errors = await asyncio.gather(*tasks, return_exceptions=True)
        await blocker
        await batcher.drain()
        return errors

    errors = asyncio.run(main())
    assert all(isinstance(e, DropnetError) and "row_seeds" in str(e) for e in errors)


def test_drain_finishes_queued_work_then_refuses_new_requests(tmp_path: Path, tiny_predictor: Predictor) -> None:
    async def main() -> None:
        batcher, _ = make_batcher(tmp_path)
        engine = RecordingEngine(tiny_predictor)
        blocker = await hold_worker(batcher, engine)
        queued = asyncio.create_task(batcher.submit(DET, engine, digits_rows(2, 1), None, ("probabilities",)))
        await until_waiting(batcher, 1)
        drain = asyncio.create_task(batcher.drain())
        await asyncio.sleep(0)
        assert not drain.done()
        engine.release()
        await drain
        assert queued.done() and queued.result()["probabilities"].shape == (2, 10)
        assert blocker.done()
        with pytest.raises(UnavailableError, match="shutting down"):
            await batcher.submit(DET, engine, digits_rows(1, 0), None, ("probabilities",))

    asyncio.run(main())


def test_a_lone_request_does_not_wait_out_the_queue_delay(tmp_path: Path, tiny_predictor: Predictor) -> None:
    """Under light load (the last batch held one request) a request starts at once, whatever the delay."""

    async def main() -> list[int]:
        batcher, _ = make_batcher(tmp_path, max_queue_delay_ms=600_000.0)
        engine = RecordingEngine(tiny_predictor)
        engine.release()
        for seed in range(3):  # with a ten-minute delay, any wait would trip the 60 s guard
            await asyncio.wait_for(batcher.submit(DET, engine, digits_rows(1, seed), None, ("probabilities",)), 60)
        await batcher.drain()
        return engine.rows

    assert asyncio.run(main()) == [1, 1, 1]


def test_a_batch_of_one_request_gets_the_run_outputs_uncopied() -> None:
    rng = np.random.default_rng(0)
    run_outputs = {"probabilities": rng.random((2, 10), np.float32), "samples": rng.random((8, 2, 10), np.float32)}

    class FixedEngine:
        """Answers every MC run with ``run_outputs`` (as if the batch had two rows)."""

        def run_deterministic(self, x: np.ndarray) -> dict[str, np.ndarray]:
            raise AssertionError("MC only")

        def run_mc(self, x: np.ndarray, num_samples: int, row_seeds: np.ndarray, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
            return run_outputs

    async def main() -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
        future = asyncio.get_running_loop().create_future()  # unused by run_batch

        def request(rows: int, outputs: tuple[str, ...]) -> _Request:
            return _Request(digits_rows(rows, rows), row_seeds(rows, rows), outputs, future, 0.0)

        alone = run_batch(FixedEngine(), MC, [request(2, ("samples", "probabilities"))])
        pair = run_batch(FixedEngine(), MC, [request(1, ("samples",)), request(1, ("samples",))])
        return alone, pair

    (alone,), pair = asyncio.run(main())
    assert list(alone) == ["samples", "probabilities"]
    assert all(alone[name] is run_outputs[name] for name in alone)
    np.testing.assert_array_equal(pair[1]["samples"], run_outputs["samples"][:, 1:])
    assert all(answer["samples"].flags.c_contiguous for answer in pair)  # rows of a shared run: contiguous copies


def test_batch_memory_is_dropped_for_lone_batches_and_unloaded_versions(tmp_path: Path, tiny_predictor: Predictor) -> None:
    other_version = RunSpec(MODEL, "2", "deterministic")

    async def main() -> list[set[RunSpec]]:
        batcher, _ = make_batcher(tmp_path)
        engine = RecordingEngine(tiny_predictor)
        memory = []
        for spec in (DET, other_version):
            blocker = await hold_worker(batcher, engine, spec)
            tasks = [asyncio.create_task(batcher.submit(spec, engine, digits_rows(1, i), None, ("probabilities",))) for i in range(3)]
            await until_waiting(batcher, 3)
            engine.release()
            await asyncio.gather(blocker, *tasks)
            engine = RecordingEngine(tiny_predictor)
        await asyncio.sleep(0)  # the queues retire
        memory.append(set(batcher._last_batch_requests))  # both specs' last batches held 3 requests
        batcher.forget(MODEL, "2")
        memory.append(set(batcher._last_batch_requests))
        engine.release()
        for seed in range(2):  # lone requests: the last batch of DET holds one
            await batcher.submit(DET, engine, digits_rows(1, seed), None, ("probabilities",))
        await asyncio.sleep(0)
        memory.append(set(batcher._last_batch_requests))
        await batcher.drain()
        return memory

    assert asyncio.run(main()) == [{DET, other_version}, {DET}, set()]


class ThreadRecordingEngine:
    """A real predictor that records the thread of each deterministic run and its rows; ``delay_s`` slows each run."""

    def __init__(self, predictor: Predictor, delay_s: float = 0.0) -> None:
        self._predictor = predictor
        self._delay_s = delay_s
        self.runs: list[tuple[str, int]] = []

    def run_deterministic(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.runs.append((threading.current_thread().name, int(x.shape[0])))
        time.sleep(self._delay_s)
        return self._predictor.run_deterministic(x)

    def run_mc(self, x: np.ndarray, num_samples: int, row_seeds: np.ndarray, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        raise AssertionError("deterministic only")


def lone_runs(tmp_path: Path, engine: ThreadRecordingEngine, requests: int, **overrides: object) -> list[tuple[str, int]]:
    """Submit ``requests`` one-row requests one after the other; the engine's runs."""

    async def main() -> None:
        batcher, _ = make_batcher(tmp_path, **overrides)
        for seed in range(requests):
            x = digits_rows(1, seed)
            answer = await batcher.submit(DET, engine, x, None, ("probabilities", "logits"))
            assert_outputs_match(answer, engine._predictor.run_deterministic(x))
        await batcher.drain()

    asyncio.run(main())
    return engine.runs


def test_a_lone_cheap_deterministic_request_runs_on_the_event_loop_once_its_cost_is_known(
    tmp_path: Path, tiny_predictor: Predictor
) -> None:
    loop_thread = threading.current_thread().name  # asyncio.run runs the loop in this thread
    runs = lone_runs(tmp_path, ThreadRecordingEngine(tiny_predictor), 3)
    assert runs[0][0].startswith("dropnet-deterministic")  # no run yet says what one costs
    assert runs[1:] == [(loop_thread, 1), (loop_thread, 1)]
    never = lone_runs(tmp_path, ThreadRecordingEngine(tiny_predictor), 3, inline_run_ms=0)
    assert all(thread.startswith("dropnet-deterministic") for thread, _ in never)


def test_a_run_costlier_than_inline_run_ms_stays_on_a_worker_thread(tmp_path: Path, tiny_predictor: Predictor) -> None:
    runs = lone_runs(tmp_path, ThreadRecordingEngine(tiny_predictor, delay_s=0.02), 3, inline_run_ms=1.0)
    assert all(thread.startswith("dropnet-deterministic") for thread, _ in runs)


def test_requests_arriving_together_are_batched_not_run_inline(tmp_path: Path, tiny_predictor: Predictor) -> None:
    engine = ThreadRecordingEngine(tiny_predictor)

    async def main() -> Batcher:
        batcher, _ = make_batcher(tmp_path)
        await batcher.submit(DET, engine, digits_rows(1, 0), None, ("probabilities",))  # its cost is known now
        inputs = [digits_rows(1, seed) for seed in range(1, 9)]
        answers = await asyncio.gather(*(batcher.submit(DET, engine, x, None, ("probabilities",)) for x in inputs))
        for x, answer in zip(inputs, answers):
            np.testing.assert_allclose(answer["probabilities"], tiny_predictor.run_deterministic(x)["probabilities"], rtol=1e-6)
        await batcher.drain()
        return batcher

    batcher = asyncio.run(main())
    assert [rows for _, rows in engine.runs] == [1, 8]
    assert engine.runs[1][0].startswith("dropnet-deterministic")
    assert batcher._seconds_per_row  # the runs' cost is remembered ...
    batcher.forget(MODEL, "1")
    assert not batcher._seconds_per_row  # ... until the version is unloaded
