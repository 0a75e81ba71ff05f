"""Server memory for one MC request at the cost limit: chunked MC (the default) against one unchunked run.

    .venv/bin/python benchmarks/memory_bound.py [--mc-samples 1000] [--quick]

Model: the paper's 784-1024-1024-1024-10 ReLU net (``benchmarks/_common.py``) with seeded random
weights. For each configuration a fresh ``dropnet serve`` subprocess loads it and answers one small
MC request (warm-up); then one MC request with T = ``--mc-samples`` and as many rows as the
server's default ``--max-request-cost-bytes`` admits (rows × T × the manifest's ``mc.sample_bytes``)
is sent, with a seed. The server's resident memory is read from ``/proc/PID/status``: VmRSS after
the warm-up (baseline), VmHWM after the request (peak) and VmRSS after it (kept). Configurations:

- ``chunked``: the server's defaults (``--mc-chunk-bytes``, 64 MiB);
- ``unchunked``: ``--mc-chunk-bytes`` above the request's cost, so all T samples run at once,
  which is how every MC request ran before chunking.

Both answers must be equal bit for bit (the chunked summaries combine exactly). A request one row
over the limit must be refused with RESOURCE_EXHAUSTED. Prints a table and writes
``benchmarks/results/memory_bound.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import MNIST_SPEC, PAPER_NET_DESCRIPTION, paper_package  # noqa: E402
from benchmarks.server import MODEL, serve_flags  # noqa: E402
from dropnet.server.package import read_package  # noqa: E402
from dropnet.server.process import ServeProcess  # noqa: E402
from dropnet.server.settings import ServerSettings  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "memory_bound.json"
SEED = 7
MIB = 1024**2
TIMEOUT_S = 900.0


def status_bytes(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (VmRSS, VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(f"/proc/{pid}/status has no {field}")


def mc_request(client: triton.InferenceServerClient, x: np.ndarray, mc_samples: int) -> dict[str, np.ndarray]:
    """The default MC outputs of one request with seed :data:`SEED`."""
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(MODEL, [tensor], parameters={"mc_samples": mc_samples, "seed": SEED},
                          client_timeout=TIMEOUT_S)
    return {output["name"]: result.as_numpy(output["name"]) for output in result.get_response(as_json=True)["outputs"]}


def measure(package: Path, flags: list[str], x: np.ndarray, mc_samples: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Baseline, peak and kept RSS of a fresh server answering one MC request of rows ``x``; and the answer."""
    with ServeProcess(serve_flags(package.parents[1], flags), cwd=REPO) as server:
        target = server.wait_serving()
        pid = server.process.pid
        with triton.InferenceServerClient(target) as client:
            mc_request(client, x[:1], 10)
            baseline = status_bytes(pid, "VmRSS")
            answer = mc_request(client, x, mc_samples)
            figures = {"baseline_mib": baseline / MIB, "peak_mib": status_bytes(pid, "VmHWM") / MIB,
                       "kept_mib": status_bytes(pid, "VmRSS") / MIB}
    figures["peak_growth_mib"] = figures["peak_mib"] - figures["baseline_mib"]
    figures["kept_growth_mib"] = figures["kept_mib"] - figures["baseline_mib"]
    return figures, answer


def refusal_code(package: Path, x: np.ndarray, mc_samples: int) -> str:
    """The status a default server gives a request one row over the cost limit."""
    with ServeProcess(serve_flags(package.parents[1], []), cwd=REPO) as server:
        with triton.InferenceServerClient(server.wait_serving()) as client:
            try:
                mc_request(client, x, mc_samples)
            except InferenceServerException as exc:
                return str(exc.status())
    return "OK"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mc-samples", type=int, default=1000, help="T of the measured request")
    parser.add_argument("--quick", action="store_true", help="T=100 (a short check, not a figure to quote)")
    args = parser.parse_args()
    mc_samples = 100 if args.quick else args.mc_samples
    defaults = ServerSettings(models_dir=Path("."))
    with tempfile.TemporaryDirectory() as tmp:
        package = paper_package(Path(tmp), Path(tmp) / "models" / MODEL / "1", name=MODEL)
        sample_bytes = read_package(package).manifest.mc.sample_bytes
        rows = defaults.max_request_cost_bytes // (mc_samples * sample_bytes)
        cost = rows * mc_samples * sample_bytes
        x = np.random.default_rng(0).uniform(0, 255, size=(rows + 1, *MNIST_SPEC.shape)).astype(np.float32)
        configs = {"chunked": [], "unchunked": ["--mc-chunk-bytes", str(cost + 1)]}
        results, answers = {}, {}
        for name, flags in configs.items():
            results[name], answers[name] = measure(package, flags, x[:rows], mc_samples)
        over_limit = refusal_code(package, x, mc_samples)
    identical = all(np.array_equal(answers["chunked"][k], answers["unchunked"][k]) for k in answers["chunked"])
    print(f"{PAPER_NET_DESCRIPTION}; MC request {rows} rows × T={mc_samples} (cost {cost / MIB:.0f} MiB of "
          f"{defaults.max_request_cost_bytes / MIB:.0f} MiB; sample_bytes {sample_bytes})")
    print(f"{'config':10} {'baseline MiB':>13} {'peak MiB':>9} {'peak growth':>12} {'kept growth':>12}")
    for name, figures in results.items():
        print(f"{name:10} {figures['baseline_mib']:13.0f} {figures['peak_mib']:9.0f} "
              f"{figures['peak_growth_mib']:12.0f} {figures['kept_growth_mib']:12.0f}")
    ratio = results["unchunked"]["peak_growth_mib"] / max(results["chunked"]["peak_growth_mib"], 1e-9)
    print(f"peak growth unchunked / chunked: {ratio:.2f}; chunk budget {defaults.mc_chunk_bytes / MIB:.0f} MiB; "
          f"answers bit-identical: {identical}; one row over the limit: {over_limit}")
    record = {
        "command": " ".join([".venv/bin/python", "benchmarks/memory_bound.py", *sys.argv[1:]]),
        "model": PAPER_NET_DESCRIPTION, "machine": platform.platform(), "rows": rows, "mc_samples": mc_samples,
        "sample_bytes": sample_bytes, "cost_bytes": cost, "max_request_cost_bytes": defaults.max_request_cost_bytes,
        "mc_chunk_bytes": defaults.mc_chunk_bytes, "results": results, "peak_growth_ratio": ratio,
        "answers_bit_identical": identical, "one_row_over_limit": over_limit,
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0 if identical and over_limit == "StatusCode.RESOURCE_EXHAUSTED" else 1


if __name__ == "__main__":
    sys.exit(main())
