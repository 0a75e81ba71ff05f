"""Where one request's CPU goes in ``dropnet serve``, stage by stage, measured in-process.

    .venv/bin/python benchmarks/request_cpu.py [--rounds 5] [--repeats 3000] [--out PATH]

A B=1 FP32 OIP ModelInfer of the paper's 784-1024-1024-1024-10 net (one onnxruntime thread, as
``dropnet serve`` picks on 2 cores), on uvloop. Each stage runs ``--repeats`` times per round, the
stages alternating over ``--rounds`` rounds; the figure is the median process CPU time per call:

- ``protobuf parse`` and ``protobuf serialize``: the wire message to and from protobuf objects
  (grpc does this, with the server's deserializer and serializer);
- ``decode``: ``codecs.decode_infer_request``, the OIP message to an InferRequest;
- ``validation``: ``check_request`` and ``check_response_size``;
- ``onnxruntime (inline)``: ``Predictor.run_deterministic`` in the calling thread, as a lone cheap
  request runs on the event loop;
- ``thread hand-off``: the same run through a one-thread executor awaited from the loop, minus the
  inline run: what a batch run costs on top, per batch;
- ``data plane + batcher + metrics``: ``DataPlane.infer_encoded`` on a stubbed onnxruntime run,
  minus decode and validation: routing, the batcher's bookkeeping, counting and timing;
- ``encode``: ``codecs.encode_infer_response``.

What this cannot see is grpc.aio's own per-call work (the event loop, the completion queue, the
transport): the server CPU per request that ``benchmarks/server_vs_mlserver.py`` measures, minus
these stages. Writes ``benchmarks/results/request_cpu.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # ahead of benchmarks/, whose server.py would shadow the server package

from benchmarks._common import PAPER_NET_DESCRIPTION, paper_package  # noqa: E402
from benchmarks.machine import cpu_model, source_commit  # noqa: E402
from dropnet.core.fileio import atomic_write_json  # noqa: E402
from dropnet.protos.inference import grpc_service_pb2 as oip  # noqa: E402
from dropnet.server import codecs  # noqa: E402
from dropnet.server.dataplane import DataPlane  # noqa: E402
from dropnet.server.request import check_request  # noqa: E402
from dropnet.server.response_size import check_response_size  # noqa: E402
from dropnet.server.settings import ServerSettings  # noqa: E402

MODEL = "paper-mlp"
Stage = Callable[[], Awaitable[Any]]


def wire_request() -> bytes:
    """The serialized ModelInferRequest every stage starts from."""
    x = np.random.default_rng(0).integers(0, 256, (1, 1, 28, 28)).astype(np.float32)
    request = oip.ModelInferRequest(model_name=MODEL, raw_input_contents=[x.tobytes()])
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1, 28, 28])
    request.outputs.add(name="probabilities")
    return request.SerializeToString()


async def cpu_per_call(stage: Stage, repeats: int) -> float:
    """Process CPU microseconds per awaited call of ``stage``."""
    started = time.process_time()
    for _ in range(repeats):
        await stage()
    return (time.process_time() - started) / repeats * 1e6


async def measure(models: Path, rounds: int, repeats: int) -> dict[str, list[float]]:
    plane = DataPlane(ServerSettings(models_dir=models, reload_interval_s=0))
    await plane.start()
    try:
        model = plane.repository.get(MODEL, None)
        predictor = model.predictor
        wire = wire_request()
        message = oip.ModelInferRequest.FromString(wire)
        decoded = codecs.decode_infer_request(message)
        checked = check_request(predictor, decoded.x)
        result = await plane.infer_encoded(MODEL, lambda: codecs.decode_infer_request(message))
        response = codecs.encode_infer_response(result, message)
        fixed = predictor.run_deterministic(checked.x)
        executor = ThreadPoolExecutor(1)
        loop = asyncio.get_running_loop()
        limit = plane.settings.max_message_bytes

        async def parse() -> None:
            oip.ModelInferRequest.FromString(wire)

        async def serialize() -> None:
            response.SerializeToString()

        async def decode() -> None:
            codecs.decode_infer_request(message)

        async def validate() -> None:
            check_response_size(predictor.manifest, check_request(predictor, decoded.x), limit, len(MODEL) + 1)

        async def inline() -> None:
            predictor.run_deterministic(checked.x)

        async def threaded() -> None:
            await loop.run_in_executor(executor, predictor.run_deterministic, checked.x)

        async def plane_stubbed() -> None:
            await plane.infer_encoded(MODEL, lambda: codecs.decode_infer_request(message))

        async def encode() -> None:
            codecs.encode_infer_response(result, message)

        stages: dict[str, Stage] = {
            "protobuf parse": parse, "decode": decode, "validation": validate, "onnxruntime (inline)": inline,
            "onnxruntime via a worker thread": threaded, "data plane with onnxruntime stubbed": plane_stubbed,
            "encode": encode, "protobuf serialize": serialize,
        }
        real_run = predictor.run_deterministic
        cpu: dict[str, list[float]] = {name: [] for name in stages}
        for _ in range(rounds):
            for name, stage in stages.items():
                if name == "data plane with onnxruntime stubbed":
                    predictor.run_deterministic = lambda x: fixed  # type: ignore[method-assign]
                try:
                    await cpu_per_call(stage, repeats // 10)  # warm-up
                    cpu[name].append(await cpu_per_call(stage, repeats))
                finally:
                    predictor.run_deterministic = real_run  # type: ignore[method-assign]
        executor.shutdown()
        return cpu
    finally:
        await plane.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "request_cpu.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dropnet-request-cpu-") as tmp:
        package = paper_package(Path(tmp), Path(tmp) / "models" / MODEL / "1", name=MODEL)
        cpu = uvloop.run(measure(package.parents[1], args.rounds, args.repeats))
    median = {name: statistics.median(values) for name, values in cpu.items()}
    stages = {
        "protobuf parse": median["protobuf parse"],
        "decode": median["decode"],
        "validation": median["validation"],
        "data plane + batcher + metrics": median["data plane with onnxruntime stubbed"] - median["decode"]
        - median["validation"],
        "onnxruntime (inline)": median["onnxruntime (inline)"],
        "thread hand-off (per batch run)": median["onnxruntime via a worker thread"] - median["onnxruntime (inline)"],
        "encode": median["encode"],
        "protobuf serialize": median["protobuf serialize"],
    }
    print(f"CPU µs per call, median of {args.rounds} rounds of {args.repeats}")
    for name, value in stages.items():
        low, high = (min(cpu[name]), max(cpu[name])) if name in cpu else (None, None)
        spread = f"  ({low:.1f}-{high:.1f})" if low is not None else ""
        print(f"  {name:<34}{value:8.1f}{spread}")
    atomic_write_json(args.out, {
        "model": PAPER_NET_DESCRIPTION, "request": "B=1 FP32 OIP ModelInfer, output probabilities",
        "cpu_us": stages, "measured_us": cpu, "rounds": args.rounds, "repeats": args.repeats,
        "cpu": cpu_model(), "source_commit": source_commit(REPO), "command": "python " + " ".join(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
