"""What the server benchmarks measure besides time: CPU seconds from Linux /proc, and latency percentiles.

Shared by ``benchmarks/server.py`` (and the scripts that import it) and
``benchmarks/server_vs_mlserver.py``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (field 3, the state, first)."""
    return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` itself (Linux /proc)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant of it (Linux /proc; parents read from each process's stat)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                parent = int(_stat_fields(int(entry.name))[1])
            except (OSError, IndexError, ValueError):  # the process ended while the table was read
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending += children.get(current, [])
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants, plus those of the children they reaped.

    A descendant that exits between two readings takes its CPU time out of the sum until its
    parent reaps it (then its parent's cutime/cstime hold it): read the tree of a server whose
    processes live through the measurement.
    """
    total = 0
    for member in process_tree(pid):
        try:
            fields = _stat_fields(member)
        except OSError:  # ended since the tree was read
            continue
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / CLOCK_TICKS


def machine_cpu_seconds() -> float:
    """Busy (not idle, not iowait) CPU seconds of the whole machine since boot (Linux /proc)."""
    ticks = [int(value) for value in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS


def percentiles_ms(latencies_s: Sequence[float], quantiles: Sequence[float] = (50, 99)) -> list[float]:
    """The ``quantiles`` (percent) of latencies given in seconds, in milliseconds rounded to the microsecond."""
    values = np.percentile(np.asarray(latencies_s, dtype=np.float64) * 1e3, list(quantiles))
    return [round(float(value), 3) for value in values]
