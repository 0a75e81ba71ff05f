"""Lower CPU priority for Monte-Carlo work, so deterministic runs and the event loop get the cores first.

On Linux nice is a per-thread attribute that new threads inherit from the thread that creates
them: a thread that lowers its own priority and then creates an onnxruntime session gives that
session's intra-op thread pool the same lower priority. Elsewhere nothing is changed.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger(__name__)

MC_NICE = 10
"""How much the nice value of MC threads is raised (Linux): at 10 a thread gets about a tenth
of the CPU share of a nice-0 thread it competes with, so MC runs take the cores deterministic runs leave."""

Result = TypeVar("Result")


def lower_thread_priority(by: int = MC_NICE) -> None:
    """Raise the calling thread's nice value by ``by`` (at most 19); Linux only, where nice is per thread.

    Elsewhere (where a thread id is no process id) nothing is done. A refusal is logged, not raised:
    the thread then runs at the process's priority.
    """
    if by <= 0 or not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + by))
    except OSError as exc:
        log.warning("could not lower the CPU priority of thread %s (%s); it runs at the process's", thread, exc)


def call_at_lower_priority(function: Callable[[], Result], by: int = MC_NICE) -> Result:
    """``function()`` called in a short-lived thread whose nice value is raised by ``by``: threads it
    creates (e.g. an onnxruntime session's intra-op pool) inherit that priority. ``by`` 0 calls it here."""
    if by <= 0:
        return function()

    def lowered() -> Result:
        lower_thread_priority(by)
        return function()

    with ThreadPoolExecutor(1, thread_name_prefix="dropnet-lowered") as executor:
        return executor.submit(lowered).result()
