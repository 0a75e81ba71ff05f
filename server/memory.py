"""Give a large request's memory back to the operating system once it is answered (glibc on Linux).

glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB on 64-bit),
so after one big MC request later arrays of that size come from the heap, and the heap keeps its
peak. :func:`return_freed_memory` fixes both thresholds, which also turns that adjustment off:
blocks of :data:`MMAP_THRESHOLD_BYTES` and more are mapped and unmapped on their own, and free
memory above :data:`TRIM_THRESHOLD_BYTES` at the top of the heap is released. Small requests
(whose arrays stay below the mmap threshold) allocate as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter numbers (malloc.h)."""
MMAP_THRESHOLD_BYTES = 4 * 1024**2
"""Blocks this large and larger are mapped on their own and returned when freed."""
TRIM_THRESHOLD_BYTES = 16 * 1024**2
"""Free memory above this much at the top of the heap is returned."""


def return_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds for this process; False (and nothing changed) where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # another C library (musl has no mallopt)
        log.info("no glibc mallopt: freed memory is returned as the C library decides")
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    if not done:
        log.warning("mallopt refused the mmap/trim thresholds: a large request's memory may stay with the process")
    return done
