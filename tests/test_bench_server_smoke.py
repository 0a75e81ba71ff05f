"""``benchmarks/server_vs_mlserver.py``: its smoke run end to end (dropnet only), its medians and its targets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.server_vs_mlserver import MC_SAMPLES, SMOKE, Measured, summarise, targets

REPO = Path(__file__).resolve().parents[1]


def measured(round_: int, server: str, rps: float, cpu: float, p50: float = 2.0, p99: float = 4.0,
             mode: str = "deterministic", concurrency: int = 1) -> Measured:
    return Measured(round=round_, server=server, mode=mode, concurrency=concurrency, requests=10, completed=10,
                    failed=0, first_error=None, p50_ms=p50, p99_ms=p99, throughput_rps=rps, server_cpu_ms=cpu,
                    client_cpu_ms=0.5, other_cores=0.1)


def test_summarise_takes_medians_and_ranges_over_rounds() -> None:
    cells = summarise([measured(1, "minimal", 100.0, 1.0), measured(2, "minimal", 300.0, 3.0),
                       measured(3, "minimal", 200.0, 5.0), measured(1, "dropnet", 50.0, 2.0)])
    assert [(c["server"], c["rounds"]) for c in cells] == [("minimal", 3), ("dropnet", 1)]  # the SERVERS order
    minimal = cells[0]
    assert minimal["throughput_rps"] == 200.0 and minimal["throughput_rps_range"] == [100.0, 300.0]
    assert minimal["server_cpu_ms"] == 3.0 and minimal["server_cpu_ms_range"] == [1.0, 5.0]
    assert minimal["requests"] == 30 and minimal["failed"] == 0


def test_targets_compare_dropnet_with_the_other_servers_of_the_same_run() -> None:
    rounds = [
        measured(1, "dropnet", 500.0, 1.2, p50=2.4, p99=5.0),
        measured(1, "minimal", 550.0, 1.0, p50=2.0, p99=3.0),
        measured(1, "mlserver", 200.0, 4.0, p50=2.5, p99=6.0),
        measured(1, "mlserver-batching", 150.0, 3.0, p50=5.0, p99=4.5),
        measured(1, "dropnet", 900.0, 0.6, concurrency=32),
        measured(1, "dropnet-no-batching", 400.0, 1.5, concurrency=32),
        measured(1, "mlserver", 350.0, 4.0, concurrency=32),
        measured(1, "mlserver-batching", 480.0, 1.1, concurrency=32),
        measured(1, "dropnet", 90.0, 9.0, mode="mc", concurrency=32),
        measured(1, "dropnet-no-batching", 50.0, 12.0, mode="mc", concurrency=32),
    ]
    found = {t.name: t for t in targets(summarise(rounds), 32)}
    expected = {  # (reference server, reference, met), worked out by hand
        "server CPU ms/request, c=1, vs minimal": ("minimal", 1.0, True),  # 1.2 <= 1.25 x 1.0
        "server CPU ms/request, c=1, vs MLServer default": ("mlserver", 4.0, True),  # 1.2 <= 4.0 / 3
        "p50 ms, c=1, vs minimal": ("minimal", 2.0, False),  # 2.4 > 1.15 x 2.0
        "p50 ms, c=1, vs MLServer default": ("mlserver", 2.5, True),  # 2.4 <= 2.5
        "p99 ms, c=1, vs MLServer": ("mlserver-batching (MLServer's best)", 4.5, False),  # the lower p99
        "req/s, c=32, vs MLServer": ("mlserver-batching (MLServer's best)", 480.0, False),  # 900 < 2 x 480
        "server CPU ms/request, c=32, vs MLServer": ("mlserver-batching (MLServer's best)", 1.1, False),  # 0.6 > 0.55
        "batching gain (req/s), c=32, deterministic": ("dropnet-no-batching", 400.0, False),  # 2.25x < 3x
        "batching gain (req/s), c=32, mc": ("dropnet-no-batching", 50.0, True),  # 1.8x >= 1.5x
    }
    assert {name: (t.reference_server, t.reference, t.met) for name, t in found.items()} == expected
    assert all(t.server == "dropnet" for t in found.values())


def test_targets_skip_servers_that_were_not_run() -> None:
    only_dropnet = summarise([measured(1, "dropnet", 500.0, 1.2), measured(1, "dropnet", 900.0, 0.6, concurrency=8)])
    assert targets(only_dropnet, 8) == []


@pytest.mark.slow
def test_smoke_run_measures_every_cell_of_dropnet(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "server_vs_mlserver.py"), "--smoke", "--out",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(out.read_text())
    concurrencies = [int(c) for c in SMOKE["concurrency"].split(",")]
    assert result["servers"] == {"dropnet": "dropnet serve (defaults)"}
    assert result["rounds"] == 1 and result["concurrency"] == concurrencies and result["mc_samples"] == MC_SAMPLES
    assert result["versions"]["mlserver_venv"] is None  # no MLServer installed for a smoke run
    assert result["machine"]["cpu"] and result["versions"]["onnxruntime"] and "--smoke" in result["command"]
    cells = {(c["mode"], c["concurrency"]): c for c in result["cells"]}
    assert set(cells) == {*(("deterministic", c) for c in concurrencies), ("mc", max(concurrencies))}
    for cell in cells.values():
        assert cell["failed"] == 0 and cell["requests"] > 0
        assert cell["server_cpu_ms"] > 0 and cell["client_cpu_ms"] > 0 and cell["throughput_rps"] > 0
        assert 0 < cell["p50_ms"] <= cell["p99_ms"]
    for m in result["per_round"]:
        assert m["failed"] == 0 and m["first_error"] is None
        assert m["throughput_rps"] == round(m["completed"] / result["seconds_per_cell"], 1)
    assert [s["server"] for s in result["starts"]] == ["dropnet"]
    assert result["targets"] == []  # no other server to compare with
    assert "wrote" in done.stdout
