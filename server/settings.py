"""Typed settings of the gRPC server; the ``serve`` CLI is their one composition root.

Built on the project's one settings mechanism (:mod:`dropnet.settings_base`) and frozen: every
field is checked when the settings are built (:class:`ConfigError` naming the field, the allowed
range and the value); whether ``models_dir`` exists is checked when the server starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from dropnet.core.devices import Device
from dropnet.settings_base import Settings

Port = Annotated[int, Field(ge=0, le=65535)]
MIN_MESSAGE_BYTES = 1024


class ServerSettings(Settings):
    """Everything ``dropnet serve`` can be told; each field documents itself."""

    model_config = ConfigDict(frozen=True)
    models_dir: Path = Field(strict=False)
    """Directory of model packages: DIR/NAME/ or versioned DIR/NAME/VERSION/."""
    host: str = "127.0.0.1"
    """Interface to bind; loopback by default."""
    port: Port = 50051
    """gRPC port; 0 picks a free one (the bound port is logged and returned)."""
    metrics_port: Port | None = None
    """HTTP port for Prometheus metrics; None disables the endpoint, 0 picks a free one. With --workers N, worker i serves its own metrics on this port + i (0: each on a free port)."""
    workers: int = Field(1, ge=1)
    """Server processes sharing the gRPC (and REST) port with SO_REUSEPORT (Linux): each loads every model, and the kernel spreads new connections across them; 1 serves in this process."""
    reuse_port: bool = False
    """Bind the ports with SO_REUSEPORT, so that other processes of the same user may serve them too (--workers sets it for its workers); off, a port in use is an error."""
    http_port: Port | None = None
    """HTTP port of the KServe v2 / Open Inference Protocol REST API, served beside gRPC by the same process; None (default) disables it, 0 picks a free one."""
    device: Device = "auto"
    """Execution provider choice for every model: "auto", "cpu" or "cuda"."""
    intra_op_threads: int | None = Field(None, ge=1)
    """onnxruntime intra-op threads per session (None: the usable CPU cores divided by inference_workers + mc_workers, at least 1)."""
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    """The event loop of dropnet serve: "uvloop" (less CPU per request), "asyncio" (the standard one), or "auto": uvloop where it is installed (a dependency on Linux and macOS), else asyncio."""
    spin_wait: bool = False
    """Let onnxruntime's idle threads busy-wait for the next run (lower latency on dedicated cores; off, they leave the CPU to the event loop)."""
    inference_workers: int = Field(1, ge=1)
    """Worker threads that run deterministic batches off the event loop (MC batches have their own, --mc-workers)."""
    batching: bool = True
    """Coalesce concurrent requests for the same model, version and mode into one run."""
    max_batch_size: int = Field(64, ge=1)
    """Most rows one coalesced onnxruntime run may hold."""
    max_queue_delay_ms: float = Field(2.0, ge=0)
    """Longest a request waits for others to join its batch."""
    inline_run_ms: float = Field(1.0, ge=0)
    """A deterministic request that arrives alone, while no worker thread runs a batch, runs on the event loop itself (no thread hand-off) when the model's previous runs say it takes at most this long; 0 never does."""
    max_queue_size: int = Field(256, ge=1)
    """Requests waiting per model before new ones get RESOURCE_EXHAUSTED."""
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=MIN_MESSAGE_BYTES)
    """Largest gRPC message received or sent."""
    max_mc_samples: int = Field(1000, ge=1)
    """Largest mc_samples a request may ask for."""
    max_rows_per_request: int = Field(1024, ge=1)
    """Largest batch dimension of one request."""
    reload_interval_s: float = Field(2.0, ge=0)
    """How often the models directory is rescanned for new or changed packages (0 disables hot reload)."""
    shutdown_grace_s: float = Field(10.0, ge=0)
    """On SIGTERM/SIGINT, how long in-flight requests may take to finish; those still running then are cancelled (UNAVAILABLE)."""
    max_request_cost_bytes: int = Field(2 * 1024**3, ge=1)
    """Most one request may cost: rows × max(T, 1) × the model's activation bytes per row and sample (from its manifest)."""
    mc_chunk_bytes: int = Field(64 * 1024**2, ge=1)
    """Peak activation memory of one MC run: T is split into chunks of samples so that rows × chunk × bytes per sample stays under it."""
    mc_workers: int = Field(1, ge=1)
    """Worker threads that run MC batches, apart from the --inference-workers that run deterministic ones and at a lower CPU priority (Linux), so a long MC request never holds up a deterministic one."""
    tls_cert: Path | None = Field(None, strict=False)
    """PEM certificate chain of the server; with --tls-key, the gRPC port speaks TLS only."""
    tls_key: Path | None = Field(None, strict=False)
    """PEM private key of --tls-cert."""
    tls_client_ca: Path | None = Field(None, strict=False)
    """PEM CA bundle; when given, clients must present a certificate it signed (mutual TLS). Needs --tls-cert."""
    token_file: Path | None = Field(None, strict=False)
    """File holding the bearer token every call must carry (metadata "authorization: Bearer TOKEN"); health checks need none."""
    insecure: bool = False
    """Allow binding a non-loopback address without TLS and without a token (logged as a warning)."""
    expose_provenance: bool = False
    """Show clients the package's provenance (training command line, absolute paths) in GetModel and metadata."""

    @property
    def session_threads(self) -> int:
        """Intra-op threads of each onnxruntime session: ``intra_op_threads``, or the usable CPU cores divided
        among the server processes and the worker threads of both modes in each, ``workers`` ×
        (``inference_workers`` + ``mc_workers``) (at least 1), so that runs at the same time do not
        oversubscribe them."""
        if self.intra_op_threads is not None:
            return self.intra_op_threads
        return max(1, _usable_cpus() // (self.workers * (self.inference_workers + self.mc_workers)))

    @model_validator(mode="after")
    def _tls_files_go_together(self) -> ServerSettings:
        """A certificate needs its key (and the key its certificate); a client CA needs both (mutual TLS)."""
        if (self.tls_cert is None) != (self.tls_key is None):
            given, missing = ("--tls-cert", "--tls-key") if self.tls_key is None else ("--tls-key", "--tls-cert")
            raise ValueError(f"{given} is given without {missing}; expected both: the server's PEM certificate "
                             f"chain (--tls-cert) and its private key (--tls-key)")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca is given without --tls-cert and --tls-key; expected them too: mutual "
                             "TLS verifies clients over a TLS connection, which needs the server's certificate and key")
        return self


def _usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
