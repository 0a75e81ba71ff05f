"""A short soak (``benchmarks/soak.py``) against a real ``dropnet serve``: no unexpected error, every answer right.

No timing or memory threshold here: those are the benchmark's floors, measured on a quiet machine.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.soak import APIS, INVALID, SoakSettings, run_soak
from dropnet.server.predictor import Predictor
from tests.server.grpc_harness import models_dir_with
from tests.server.helpers import MODEL

SHORT = SoakSettings(clients=6, seconds=3.0, warmup_seconds=1.0, mc_samples=20, mc_fraction=0.4,
                     invalid_fraction=0.1, seed=3)


def test_a_short_soak_over_both_apis_gets_every_answer_right(
    tiny_package: Path, tiny_predictor: Predictor, tmp_path: Path
) -> None:
    report = run_soak(models_dir_with(tiny_package, tmp_path), MODEL, SHORT, ["--device", "cpu"], tiny_predictor)

    assert report.unexpected_errors == 0, report.by_kind
    assert report.wrong_answers == 0, report.by_kind
    assert set(report.by_kind) == {f"{api}/{mode}" for api in APIS for mode in ("deterministic", "mc", INVALID)}
    for kind, row in report.by_kind.items():
        assert row["requests"] > 0, kind
        expected_codes = {"INVALID_ARGUMENT": row["requests"]} if kind.endswith(INVALID) else {"OK": row["requests"]}
        assert row["codes"] == expected_codes, kind
    assert report.served == sum(row["ok"] for row in report.by_kind.values()) > 0
    assert report.rss_mb.start > 0 and report.rss_mb.peak_after_warmup >= report.rss_mb.after_warmup
