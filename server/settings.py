"""Typed settings of the gRPC server; the ``serve`` CLI is their one composition root.

Every field is checked when the settings are built (:class:`ConfigError` naming the field, the
allowed range and the value); whether ``models_dir`` exists is checked when the server starts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dropnet.core.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
"""Values of :attr:`ServerSettings.device` (and of ``Predictor.load``'s ``device``)."""
PORT_RANGE = (0, 65535)
MIN_MESSAGE_BYTES = 1024


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``dropnet serve`` can be told; each field documents itself."""

    models_dir: Path
    """Directory of model packages: DIR/NAME/ or versioned DIR/NAME/VERSION/."""
    host: str = "127.0.0.1"
    """Interface to bind; loopback by default."""
    port: int = 50051
    """gRPC port; 0 picks a free one (the bound port is logged and returned)."""
    metrics_port: int | None = None
    """HTTP port for Prometheus metrics; None disables the endpoint, 0 picks a free one."""
    device: str = "auto"
    """Execution provider choice for every model: "auto", "cpu" or "cuda"."""
    intra_op_threads: int | None = None
    """onnxruntime intra-op threads per session (None: the usable CPU cores divided by inference_workers, at least 1)."""
    spin_wait: bool = False
    """Let onnxruntime's idle threads busy-wait for the next run (lower latency on dedicated cores; off, they leave the CPU to the event loop)."""
    inference_workers: int = 1
    """Worker threads that run onnxruntime off the event loop."""
    batching: bool = True
    """Coalesce concurrent requests for the same model, version and mode into one run."""
    max_batch_size: int = 64
    """Most rows one coalesced onnxruntime run may hold."""
    max_queue_delay_ms: float = 2.0
    """Longest a request waits for others to join its batch."""
    max_queue_size: int = 256
    """Requests waiting per model before new ones get RESOURCE_EXHAUSTED."""
    max_message_bytes: int = 64 * 1024 * 1024
    """Largest gRPC message received or sent."""
    max_mc_samples: int = 1000
    """Largest mc_samples a request may ask for."""
    max_rows_per_request: int = 1024
    """Largest batch dimension of one request."""
    reload_interval_s: float = 2.0
    """How often the models directory is rescanned for new or changed packages (0 disables hot reload)."""
    shutdown_grace_s: float = 10.0
    """On SIGTERM/SIGINT, how long in-flight requests may take to finish."""

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {list(DEVICES)}, got {self.device!r}")
        _check_int("port", self.port, *PORT_RANGE)
        _check_int("intra_op_threads", self.intra_op_threads, 1, None, optional=True)
        _check_int("metrics_port", self.metrics_port, *PORT_RANGE, optional=True)
        for name in ("inference_workers", "max_batch_size", "max_queue_size", "max_mc_samples", "max_rows_per_request"):
            _check_int(name, getattr(self, name), 1, None)
        _check_int("max_message_bytes", self.max_message_bytes, MIN_MESSAGE_BYTES, None)
        for name in ("max_queue_delay_ms", "reload_interval_s", "shutdown_grace_s"):
            _check_non_negative(name, getattr(self, name))

    @property
    def session_threads(self) -> int:
        """Intra-op threads of each onnxruntime session: ``intra_op_threads``, or the usable CPU cores
        divided among the ``inference_workers`` (at least 1), so that concurrent runs do not oversubscribe them."""
        if self.intra_op_threads is not None:
            return self.intra_op_threads
        return max(1, _usable_cpus() // self.inference_workers)


def _usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _check_int(name: str, value: Any, low: int, high: int | None, optional: bool = False) -> None:
    """ConfigError unless ``value`` is an integer (not bool) in ``low..high`` (high None: unbounded).

    None passes when ``optional``.
    """
    if optional and value is None:
        return
    allowed = f"an integer in {low}..{high}" if high is not None else f"an integer >= {low}"
    allowed += " or None" if optional else ""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")


def _check_non_negative(name: str, value: Any) -> None:
    """ConfigError unless ``value`` is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
