"""Execution-provider choice: CUDA only when it really works, else CPU, with clean logs.

onnxruntime-gpu lists ``CUDAExecutionProvider`` as available even on machines without a GPU, and a
session asked to use it there logs an ERROR and silently falls back to CPU. So the choice is made
up front: without an NVIDIA driver CUDA is never tried; with one, a tiny probe session is created
with onnxruntime's logging silenced and its actual providers are checked. The probe runs once per
process, under a lock, however many threads (concurrent package loads) ask at the same time.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import onnxruntime as ort

from dropnet.core.devices import check_device
from dropnet.core.errors import ConfigError

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

# 71-byte ONNX model (IR version 7, opset 13): y = Identity(x), x and y float32 [1]. Serialised
# from onnx.helper once (a serving install has no onnx package); tests/server/test_predictor.py
# checks that it still parses to exactly that graph.
PROBE_MODEL = bytes.fromhex(
    "080712003a3b0a100a017812017922084964656e74697479120570726f62655a0f0a0178120a0a08080112040a"
    "020801620f0a0179120a0a08080112040a02080142040a00100d"
)

_ORT_DEFAULT_SEVERITY = 2  # onnxruntime's own default: warnings and above
_probe_lock = threading.Lock()


@contextlib.contextmanager
def quiet_ort_logs() -> Iterator[None]:
    """Silence onnxruntime's default logger (all but fatal messages) for the duration of the block.

    onnxruntime (as of 1.31) can set the default logger's severity but not read it, so afterwards it
    is reset to onnxruntime's own default (warnings and above), not to what it may have been before.
    """
    ort.set_default_logger_severity(4)
    try:
        yield
    finally:
        ort.set_default_logger_severity(_ORT_DEFAULT_SEVERITY)


def nvidia_driver_present() -> bool:
    """True when an NVIDIA kernel driver or its user-space library ``libcuda.so.1`` is present."""
    if Path("/proc/driver/nvidia/version").exists():
        return True
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def cuda_status() -> tuple[bool, str]:
    """Whether onnxruntime can run on CUDA here, and why; probed once per process, safe to call from any thread."""
    with _probe_lock:
        return _probe_cuda()


@functools.cache
def _probe_cuda() -> tuple[bool, str]:
    """The CUDA probe behind :func:`cuda_status`, cached (call that: it holds the lock)."""
    if CUDA not in ort.get_available_providers():
        return False, f"this onnxruntime {ort.__version__} build has no {CUDA}"
    if not nvidia_driver_present():
        return False, "no NVIDIA driver found (/proc/driver/nvidia/version and libcuda.so.1 are missing)"
    with quiet_ort_logs():
        try:
            providers = ort.InferenceSession(PROBE_MODEL, providers=[CUDA, CPU]).get_providers()
        except Exception as exc:  # onnxruntime raises its own exception types for EP failures
            return False, f"onnxruntime could not create a CUDA session ({exc})"
    if providers[0] != CUDA:
        return False, (
            f"onnxruntime {ort.__version__} could not start {CUDA} (CUDA/cuDNN libraries it needs are "
            "missing or the GPU is unsupported)"
        )
    return True, f"{CUDA} started"


def choose_provider(device: str) -> str:
    """The execution provider for ``device`` ("auto", "cpu" or "cuda"); "cuda" fails if CUDA is unusable."""
    if check_device(device) == "cpu":
        return CPU
    usable, reason = cuda_status()
    if usable:
        return CUDA
    if device == "cuda":
        raise ConfigError(f"device 'cuda' was requested but CUDA is not usable: {reason}; use device 'auto' or 'cpu'")
    log.debug("using %s: %s", CPU, reason)
    return CPU
