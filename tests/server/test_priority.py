"""MC work at lower CPU priority: the helper, and the intra-op threads of an MC session created with it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from dropnet.server.predictor import Predictor
from dropnet.server.priority import call_at_lower_priority

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice is per thread on Linux only")


def _thread_nice() -> dict[int, int]:
    """Nice value of every thread of this process, by thread id (field 19 of /proc/self/task/TID/stat)."""
    nice = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        nice[int(task.name)] = int(stat[stat.rindex(")") + 2:].split()[16])
    return nice


def test_the_function_runs_at_the_lower_priority_and_the_caller_keeps_its_own() -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    seen = call_at_lower_priority(lambda: os.getpriority(os.PRIO_PROCESS, 0), by=3)
    assert seen == min(19, own + 3)
    assert os.getpriority(os.PRIO_PROCESS, 0) == own
    assert call_at_lower_priority(lambda: os.getpriority(os.PRIO_PROCESS, 0), by=0) == own


def test_the_mc_session_pool_threads_inherit_the_lower_priority(tiny_package: Path) -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    before = _thread_nice()
    predictor = Predictor.load(tiny_package, device="cpu", intra_op_threads=3, spin_wait=False, mc_nice=5)
    new_threads = {tid: nice for tid, nice in _thread_nice().items() if tid not in before}
    # each session's intra-op pool has threads - 1 threads (the caller is the other): 2 lowered (MC), 2 at the
    # process's nice (deterministic). More may show: other threads the process starts meanwhile, and the
    # short-lived lowered thread that created the MC session, which can linger in /proc for a moment after its join
    values = list(new_threads.values())
    assert values.count(min(19, own + 5)) >= 2 and values.count(own) >= 2, new_threads
    del predictor
