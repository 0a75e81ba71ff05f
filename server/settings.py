"""Typed settings of the gRPC server; the ``serve`` CLI is their one composition root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    """onnxruntime intra-op threads per session (None: onnxruntime's default)."""
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
