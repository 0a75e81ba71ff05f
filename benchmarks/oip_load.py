"""A closed-loop Open Inference Protocol load: N coroutines of tritonclient.grpc.aio on one channel (or several).

Each coroutine sends one ModelInfer of the same FP32 input, waits for the answer and sends the
next. With ``channels`` > 1 the coroutines take turns over that many channels, each its own TCP
connection (no subchannel shared), as separate clients would. The first ``warmup_s`` seconds are not recorded; a request counts towards the latencies when
it starts inside the measured window and towards throughput when it completes inside it, and
``probe`` (CPU counters) is read at both ends of the window.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput, InferRequestedOutput

OUTPUT = "probabilities"
READY_POLL_S = 0.2

Parameters = Callable[[int], Mapping[str, int] | None]
"""The OIP request parameters of the request with a given sequence number (None: none)."""
Probe = Callable[[], dict[str, float]]
"""Counters read at both ends of the measured window; the window reports their increase."""


@dataclass
class Window:
    """What one closed-loop run measured."""

    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    """Of the successful requests started inside the window."""
    completed: int = 0
    """Successful requests that completed inside the window."""
    failed: int = 0
    """Requests (warm-up included) that ended in an error."""
    first_error: str | None = None
    increase: dict[str, float] = field(default_factory=dict)
    """How much each of the probe's counters grew over the window."""


def _infer_input(x: np.ndarray) -> InferInput:
    tensor = InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


async def _closed_loop(target: str, model: str, x: np.ndarray, concurrency: int, seconds: float, warmup_s: float,
                       parameters: Parameters, probe: Probe, channels: int) -> Window:
    window = Window(seconds=seconds)
    inputs, outputs = [_infer_input(x)], [InferRequestedOutput(OUTPUT)]
    sequence = iter(range(1 << 62))
    begin = time.perf_counter() + warmup_s
    end = begin + seconds
    args = [("grpc.use_local_subchannel_pool", 1)] if channels > 1 else None
    clients = [triton_aio.InferenceServerClient(target, channel_args=args) for _ in range(channels)]
    try:

        async def sender(client: triton_aio.InferenceServerClient) -> None:
            while (started := time.perf_counter()) < end:
                try:
                    await client.infer(model, inputs, outputs=outputs, parameters=parameters(next(sequence)))
                except triton_aio.InferenceServerException as exc:
                    window.failed += 1
                    window.first_error = window.first_error or str(exc)
                    continue
                done = time.perf_counter()
                if started >= begin:
                    window.latencies_s.append(done - started)
                if begin <= done <= end:
                    window.completed += 1

        async def prober() -> None:
            await asyncio.sleep(begin - time.perf_counter())
            before = probe()
            await asyncio.sleep(end - time.perf_counter())
            after = probe()
            window.increase = {name: after[name] - before[name] for name in before}

        await asyncio.gather(prober(), *(sender(clients[index % channels]) for index in range(concurrency)))
    finally:
        for client in clients:
            await client.close()
    return window


def closed_loop(target: str, model: str, x: np.ndarray, concurrency: int, seconds: float, warmup_s: float,
                parameters: Parameters, probe: Probe, channels: int = 1) -> Window:
    """Load ``model`` at ``target`` (host:port) with ``concurrency`` coroutines on ``channels`` channels; see the
    module doc."""
    return asyncio.run(_closed_loop(target, model, x, concurrency, seconds, warmup_s, parameters, probe, channels))


async def _wait_ready(target: str, model: str, x: np.ndarray, deadline: float, alive: Callable[[], bool]) -> None:
    async with triton_aio.InferenceServerClient(target) as client:
        while True:
            try:
                await client.infer(model, [_infer_input(x)], outputs=[InferRequestedOutput(OUTPUT)], client_timeout=10)
                return
            except triton_aio.InferenceServerException as exc:
                if not alive() or time.monotonic() > deadline:
                    raise TimeoutError(f"{target} did not answer a ModelInfer of {model!r} ({exc})") from None
            await asyncio.sleep(READY_POLL_S)


def wait_ready(target: str, model: str, x: np.ndarray, timeout_s: float, alive: Callable[[], bool]) -> None:
    """Wait until ``model`` at ``target`` answers an inference; TimeoutError after ``timeout_s`` or once not ``alive()``."""
    asyncio.run(_wait_ready(target, model, x, time.monotonic() + timeout_s, alive))
