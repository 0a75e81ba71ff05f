"""Prometheus metrics: a registry per server and the /metrics endpoint on a free port."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from dropnet.core.errors import ConfigError
from dropnet.server.metrics import ServerMetrics


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_endpoint_on_port_zero_serves_the_counters() -> None:
    metrics = ServerMetrics()
    metrics.record("digits", "mc", "OK", 0.003)
    metrics.record("digits", "mc", "OK", 0.004)
    metrics.record("digits", "deterministic", "INVALID_ARGUMENT", 0.001)
    metrics.record_batch("digits", "mc", 5)
    metrics.set_queue_depth("digits", 3)
    metrics.track_models_loaded(lambda: 4)
    port = metrics.start_http(0)
    try:
        assert port > 0
        body = scrape(port)
    finally:
        metrics.stop_http()
    assert 'dropnet_requests_total{code="OK",mode="mc",model="digits"} 2.0' in body
    assert 'dropnet_requests_total{code="INVALID_ARGUMENT",mode="deterministic",model="digits"} 1.0' in body
    assert 'dropnet_request_latency_seconds_count{mode="mc",model="digits"} 2.0' in body
    assert 'dropnet_request_latency_seconds_bucket{le="0.005",mode="mc",model="digits"} 2.0' in body
    assert 'dropnet_batch_rows_sum{mode="mc",model="digits"} 5.0' in body
    assert 'dropnet_queue_depth{model="digits"} 3.0' in body
    assert "dropnet_models_loaded 4.0" in body
    with pytest.raises(urllib.error.URLError):
        scrape(port)


def test_each_instance_has_its_own_registry() -> None:
    first, second = ServerMetrics(), ServerMetrics()
    first.record("m", "mc", "OK", 0.1)
    assert first.registry.get_sample_value("dropnet_requests_total", {"model": "m", "mode": "mc", "code": "OK"}) == 1
    assert second.registry.get_sample_value("dropnet_requests_total", {"model": "m", "mode": "mc", "code": "OK"}) is None


def test_port_in_use_is_a_config_error() -> None:
    first, second = ServerMetrics(), ServerMetrics()
    port = first.start_http(0)
    try:
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            second.start_http(port)
    finally:
        first.stop_http()


def test_a_forgotten_model_starts_its_series_afresh() -> None:
    metrics = ServerMetrics()
    metrics.record("digits", "mc", "OK", 0.003)
    metrics.record_batch("digits", "mc", 5)
    metrics.record("other", "mc", "OK", 0.003)
    metrics.forget_model("digits")
    requests = {"model": "digits", "mode": "mc", "code": "OK"}
    assert metrics.registry.get_sample_value("dropnet_requests_total", requests) is None
    metrics.record("digits", "mc", "OK", 0.002)  # a series kept from before the forget would not be collected
    assert metrics.registry.get_sample_value("dropnet_requests_total", requests) == 1.0
    assert metrics.registry.get_sample_value("dropnet_batch_rows_count", {"model": "digits", "mode": "mc"}) is None
    assert metrics.registry.get_sample_value("dropnet_requests_total", {**requests, "model": "other"}) == 1.0
