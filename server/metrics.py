"""Prometheus metrics of one server, in a registry of its own, and their HTTP endpoint."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

from dropnet.core.errors import ConfigError

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
MODEL_LABELS = ("model",)
MODE_LABELS = ("model", "mode")
REQUEST_LABELS = ("model", "mode", "code")


class ServerMetrics:
    """Request, batching and model metrics; each instance owns a separate :class:`CollectorRegistry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dropnet_requests", "Inference requests by model, mode and final status code.",
            REQUEST_LABELS, registry=self.registry,
        )
        self.latency = Histogram(
            "dropnet_request_latency_seconds", "Time from receiving an inference request to its answer.",
            MODE_LABELS, buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_rows = Histogram(
            "dropnet_batch_rows", "Rows per onnxruntime run (requests coalesced by the batcher).",
            MODE_LABELS, buckets=BATCH_ROWS_BUCKETS, registry=self.registry,
        )
        self.queue_depth = Gauge(
            "dropnet_queue_depth", "Requests waiting for a batch, per model.", MODEL_LABELS, registry=self.registry,
        )
        self._by_model: tuple[tuple[MetricWrapperBase, tuple[str, ...]], ...] = (
            (self.requests, REQUEST_LABELS), (self.latency, MODE_LABELS), (self.batch_rows, MODE_LABELS),
            (self.queue_depth, MODEL_LABELS),
        )
        """Every metric with a ``model`` label, with its label names."""
        self._series: dict[tuple[int, tuple[str, ...]], Any] = {}
        """The labelled series already used, by (metric id, label values): ``labels()`` takes a lock and checks its
        arguments on every call, several times per request."""
        self.models_loaded = Gauge(
            "dropnet_models_loaded", "Model versions loaded and serving.", registry=self.registry,
        )
        self._http: tuple[WSGIServer, threading.Thread] | None = None

    def record(self, model: str, mode: str, code: str, seconds: float) -> None:
        """Count one finished request with status ``code`` (e.g. "OK") that took ``seconds``."""
        self._series_of(self.requests, model, mode, code).inc()
        self._series_of(self.latency, model, mode).observe(seconds)

    def record_batch(self, model: str, mode: str, rows: int) -> None:
        """Count one onnxruntime run of ``rows`` rows."""
        self._series_of(self.batch_rows, model, mode).observe(rows)

    def set_queue_depth(self, model: str, waiting: int) -> None:
        """Report ``waiting`` requests queued for ``model``."""
        self._series_of(self.queue_depth, model).set(waiting)

    def _series_of(self, metric: MetricWrapperBase, *values: str) -> Any:
        key = (id(metric), values)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metric.labels(*values)
        return series

    def forget_model(self, model: str) -> None:
        """Remove every series labelled with ``model`` (no longer served), so the label sets follow what is loaded."""
        for key in [key for key in self._series if key[1][0] == model]:  # "model" is every labelled metric's first label
            del self._series[key]
        for metric, label_names in self._by_model:
            series = {
                tuple(sample.labels[name] for name in label_names)
                for family in metric.collect() for sample in family.samples if sample.labels.get("model") == model
            }
            for values in series:
                metric.remove(*values)

    def track_models_loaded(self, count: Callable[[], int]) -> None:
        """Report ``count()`` as the models-loaded gauge each time the metrics are read."""
        self.models_loaded.set_function(count)

    def start_http(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` over HTTP on ``host:port`` (0 picks a free port) and return the bound port."""
        if self._http is not None:
            raise RuntimeError("the metrics endpoint is already running")
        try:
            self._http = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port} ({exc}); expected a free port, or 0 for any") from None
        bound = self._http[0].server_port
        log.info("metrics at http://%s:%d/metrics", host, bound)
        return bound

    def stop_http(self) -> None:
        """Stop the HTTP endpoint if it runs."""
        if self._http is None:
            return
        server, thread = self._http
        server.shutdown()
        server.server_close()
        thread.join()
        self._http = None
