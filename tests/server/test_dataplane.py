"""The data plane: validation, routing, outputs, batching equivalence, metrics, hot reload, draining."""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from dropnet.core.errors import ConfigError, InvalidInputError, NotFoundError, UnavailableError
from dropnet.server import providers
from dropnet.server.dataplane import DataPlane, InferRequest, InferResult
from dropnet.server.predictor import Predictor
from dropnet.server.repository import ModelRef
from tests.server.helpers import MODEL, assert_outputs_match, digits_rows, make_settings

T = TypeVar("T")


def serve(models_dir: Path, body: Callable[[DataPlane], Awaitable[T]], **overrides: Any) -> T:
    """Start a data plane on ``models_dir``, run ``body`` with it, stop it."""

    async def main() -> T:
        plane = DataPlane(make_settings(models_dir, **overrides))
        await plane.start()
        try:
            return await body(plane)
        finally:
            await plane.stop()

    return asyncio.run(main())


def requests_counted(plane: DataPlane, model: str, mode: str, code: str) -> float | None:
    return plane.metrics.registry.get_sample_value("dropnet_requests_total", {"model": model, "mode": mode, "code": code})


def test_deterministic_request_returns_default_outputs(models_dir: Path, tiny_predictor: Predictor) -> None:
    x = digits_rows(3, seed=1).astype(np.float64)  # any numeric dtype is accepted

    async def body(plane: DataPlane) -> InferResult:
        return await plane.infer(InferRequest(MODEL, None, x))

    result = serve(models_dir, body)
    expected = tiny_predictor.predict(x)
    assert (result.model, result.version, result.seed) == (MODEL, "1", None)
    assert list(result.outputs) == ["probabilities", "predicted_class", "logits"]
    np.testing.assert_allclose(result.outputs["probabilities"], expected.probabilities, rtol=1e-6)
    assert result.outputs["predicted_class"].dtype == np.int64
    np.testing.assert_array_equal(result.outputs["predicted_class"], expected.predicted_class)
    np.testing.assert_allclose(result.outputs["logits"], tiny_predictor.run_deterministic(x.astype(np.float32))["logits"], rtol=1e-6)


def test_mc_request_uses_its_seed_or_reports_a_drawn_one(models_dir: Path, tiny_predictor: Predictor) -> None:
    x = digits_rows(2, seed=2)

    async def body(plane: DataPlane) -> tuple[InferResult, InferResult, InferResult]:
        seeded = await plane.infer(InferRequest(MODEL, "1", x, "mc", 20, 1234, ("predicted_class", "samples", "std")))
        drawn = await plane.infer(InferRequest(MODEL, "1", x, "mc", 20))
        again = await plane.infer(InferRequest(MODEL, "1", x, "mc", 20, drawn.seed))
        return seeded, drawn, again

    seeded, drawn, again = serve(models_dir, body)
    expected = tiny_predictor.predict(x, mc_samples=20, seed=1234, return_samples=True)
    assert seeded.seed == 1234
    assert list(seeded.outputs) == ["predicted_class", "samples", "std"]
    np.testing.assert_array_equal(seeded.outputs["predicted_class"], expected.predicted_class)
    np.testing.assert_allclose(seeded.outputs["samples"], expected.samples, rtol=1e-6)
    np.testing.assert_allclose(seeded.outputs["std"], expected.std, rtol=1e-6)
    assert list(drawn.outputs) == ["probabilities", "predicted_class", "std", "predictive_entropy", "mutual_information"]
    assert isinstance(drawn.seed, int) and 0 <= drawn.seed < 2**63
    for name in drawn.outputs:
        np.testing.assert_array_equal(again.outputs[name], drawn.outputs[name])


def test_concurrent_requests_equal_sequential_ones_and_share_runs(models_dir: Path) -> None:
    inputs = [digits_rows(1 + i % 3, seed=10 + i) for i in range(16)]
    requests = [InferRequest(MODEL, None, x, "deterministic") for x in inputs[:8]]
    requests += [InferRequest(MODEL, None, x, "mc", 16, 500 + i) for i, x in enumerate(inputs[8:])]

    async def body(plane: DataPlane) -> tuple[list[InferResult], list[InferResult], float]:
        concurrent = await asyncio.gather(*(plane.infer(r) for r in requests))
        runs = sum(plane.metrics.registry.get_sample_value("dropnet_batch_rows_count", {"model": MODEL, "mode": mode})
                   for mode in ("deterministic", "mc"))
        sequential = [await plane.infer(r) for r in requests]
        return concurrent, sequential, runs

    concurrent, sequential, runs = serve(models_dir, body)
    assert runs < len(requests)  # coalesced: fewer onnxruntime runs than requests
    for together, alone in zip(concurrent, sequential):
        assert together.seed == alone.seed
        assert_outputs_match(together.outputs, alone.outputs)


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        (InferRequest("nope", None, digits_rows(1, 0)), NotFoundError, "model 'nope' is not loaded"),
        (InferRequest(MODEL, "9", digits_rows(1, 0)), NotFoundError, "no loaded version '9'"),
        (InferRequest(MODEL, None, digits_rows(1, 0), outputs=("logits", "bogus")), InvalidInputError, r"unknown output\(s\) \['bogus'\]"),
        (InferRequest(MODEL, None, digits_rows(1, 0), outputs=("samples",)), InvalidInputError, "for mode 'deterministic'"),
        (InferRequest(MODEL, None, digits_rows(1, 0), mode="bayes"), InvalidInputError, "mode must be one of"),
        (InferRequest(MODEL, None, digits_rows(1, 0), mc_samples=5), InvalidInputError, "mc_samples applies to mode 'mc' only"),
        (InferRequest(MODEL, None, digits_rows(1, 0), seed=5), InvalidInputError, "seed applies to mode 'mc' only"),
        (InferRequest(MODEL, None, digits_rows(1, 0), "mc", 0), InvalidInputError, r"mc_samples must be an integer in 1..50"),
        (InferRequest(MODEL, None, digits_rows(1, 0), "mc", 51), InvalidInputError, r"1..50, got 51"),
        (InferRequest(MODEL, None, digits_rows(1, 0), "mc", 5, 2**63), InvalidInputError, "seed must be an integer"),
        (InferRequest(MODEL, None, digits_rows(5, 0)), InvalidInputError, r"5 rows; expected at most 4"),
        (InferRequest(MODEL, None, np.full((5, 1, 8, 8), np.nan)), InvalidInputError, r"5 rows; expected at most 4"),
        (InferRequest(MODEL, None, np.zeros((2, 8, 8))), InvalidInputError, "shape"),
    ],
)
def test_invalid_requests_raise_and_are_counted(models_dir: Path, request_: InferRequest, error: type, message: str) -> None:
    async def body(plane: DataPlane) -> DataPlane:
        with pytest.raises(error, match=message):
            await plane.infer(request_)
        return plane

    plane = serve(models_dir, body, max_mc_samples=50, max_rows_per_request=4)
    code = "NOT_FOUND" if error is NotFoundError else "INVALID_ARGUMENT"
    model = MODEL if request_.model == MODEL else "_unknown"
    mode = request_.mode if request_.mode in ("deterministic", "mc") else "_unknown"
    assert requests_counted(plane, model, mode, code) == 1
    assert plane.metrics.registry.get_sample_value("dropnet_batch_rows_count", {"model": MODEL, "mode": "deterministic"}) is None


def test_models_listing_manifest_and_health(models_dir: Path, tiny_package_v2: Path) -> None:
    shutil.copytree(tiny_package_v2, models_dir / MODEL / "2")
    plane = DataPlane(make_settings(models_dir))
    assert not plane.live() and not plane.ready()

    async def body(plane: DataPlane) -> None:
        assert plane.live() and plane.ready()
        assert plane.list_models() == [ModelRef(MODEL, ("1", "2"), "2", True)]
        assert plane.model_ready(MODEL, "1") and not plane.model_ready(MODEL, "3") and not plane.model_ready("x", None)
        latest, first = plane.describe(MODEL, None), plane.describe(MODEL, "1")
        assert (latest.version, latest.versions, latest.manifest.version) == ("2", ("1", "2"), "2")
        assert (first.version, first.versions, first.manifest.version) == ("1", ("1", "2"), "1")
        assert latest.max_mc_samples == 1000
        with pytest.raises(NotFoundError):
            plane.describe("x", None)

    async def main() -> None:
        await plane.start()
        try:
            await body(plane)
        finally:
            await plane.stop()

    asyncio.run(main())
    assert not plane.live() and not plane.ready()


def test_hot_reload_serves_a_new_version(models_dir: Path, tiny_package_v2: Path) -> None:
    async def body(plane: DataPlane) -> InferResult:
        assert (await plane.infer(InferRequest(MODEL, None, digits_rows(1, 0)))).version == "1"
        shutil.copytree(tiny_package_v2, models_dir / MODEL / ".incoming")
        (models_dir / MODEL / ".incoming").rename(models_dir / MODEL / "2")
        while not plane.model_ready(MODEL, "2"):  # the reload loop picks it up within a few intervals
            await asyncio.sleep(0.02)
        return await plane.infer(InferRequest(MODEL, None, digits_rows(1, 0)))

    assert serve(models_dir, body, reload_interval_s=0.05).version == "2"


def test_stop_drains_queued_requests_then_refuses_new_ones(models_dir: Path) -> None:
    async def body(plane: DataPlane) -> None:
        pending = [asyncio.create_task(plane.infer(InferRequest(MODEL, None, digits_rows(2, i), "mc", 10, i))) for i in range(4)]
        await asyncio.sleep(0)
        await plane.stop()
        results = [task.result() for task in pending]  # stop() returned: every request was answered
        assert [r.outputs["probabilities"].shape for r in results] == [(2, 10)] * 4
        with pytest.raises(UnavailableError, match="shutting down"):
            await plane.infer(InferRequest(MODEL, None, digits_rows(1, 0)))
        assert requests_counted(plane, MODEL, "mc", "OK") == 4
        assert requests_counted(plane, MODEL, "deterministic", "UNAVAILABLE") == 1

    serve(models_dir, body, max_queue_delay_ms=1000.0)


def test_cancelled_request_does_no_work_and_is_counted(models_dir: Path) -> None:
    async def body(plane: DataPlane) -> None:
        task = asyncio.create_task(plane.infer(InferRequest(MODEL, None, digits_rows(2, 0))))
        await asyncio.sleep(0)  # queued, waiting up to max_queue_delay_ms for batch-mates
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await plane.stop()
        assert requests_counted(plane, MODEL, "deterministic", "CANCELLED") == 1
        assert plane.metrics.registry.get_sample_value(
            "dropnet_batch_rows_count", {"model": MODEL, "mode": "deterministic"}) is None

    serve(models_dir, body, max_queue_delay_ms=1000.0)


def test_metrics_endpoint_reports_requests(models_dir: Path) -> None:
    async def body(plane: DataPlane) -> str:
        await plane.infer(InferRequest(MODEL, None, digits_rows(2, 0), "mc", 4, 1))
        with pytest.raises(NotFoundError):
            await plane.infer(InferRequest("other", None, digits_rows(1, 0)))
        assert plane.metrics_port is not None and plane.metrics_port > 0
        url = f"http://127.0.0.1:{plane.metrics_port}/metrics"
        return (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())).decode()

    body_text = serve(models_dir, body, metrics_port=0)
    assert 'dropnet_requests_total{code="OK",mode="mc",model="tiny"} 1.0' in body_text
    assert 'dropnet_requests_total{code="NOT_FOUND",mode="deterministic",model="_unknown"} 1.0' in body_text
    assert 'dropnet_batch_rows_sum{mode="mc",model="tiny"} 2.0' in body_text
    assert "dropnet_models_loaded 1.0" in body_text


def test_the_package_sample_limit_bounds_the_default_and_the_check(models_dir: Path) -> None:
    manifest_path = models_dir / MODEL / "1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["mc"]["max_samples"] = 30  # below the server's max_mc_samples (1000) and DEFAULT_MC_SAMPLES (100)
    manifest_path.write_text(json.dumps(manifest))

    async def body(plane: DataPlane) -> InferResult:
        assert plane.describe(MODEL, None).max_mc_samples == 30
        with pytest.raises(InvalidInputError, match=r"mc_samples must be an integer in 1\.\.30, got 31"):
            await plane.infer(InferRequest(MODEL, None, digits_rows(1, 0), "mc", 31))
        return await plane.infer(InferRequest(MODEL, None, digits_rows(2, 0), "mc", outputs=("samples",)))

    assert serve(models_dir, body).outputs["samples"].shape == (30, 2, 10)


def test_requests_refused_while_decoding_are_counted(models_dir: Path) -> None:
    def refuse() -> InferRequest:
        raise InvalidInputError("input has dtype 99; expected one of [...]")

    async def body(plane: DataPlane) -> DataPlane:
        for model in (MODEL, "nope"):
            with pytest.raises(InvalidInputError, match="dtype 99"):
                await plane.infer_encoded(model, refuse)
        decoded = await plane.infer_encoded(MODEL, lambda: InferRequest(MODEL, None, digits_rows(1, 0)))
        assert decoded.model == MODEL
        return plane

    plane = serve(models_dir, body)
    assert requests_counted(plane, MODEL, "_unknown", "INVALID_ARGUMENT") == 1
    assert requests_counted(plane, "_unknown", "_unknown", "INVALID_ARGUMENT") == 1
    assert requests_counted(plane, MODEL, "deterministic", "OK") == 1


def test_an_unloaded_model_leaves_no_metric_series_or_batch_memory(models_dir: Path, tiny_package_v2: Path) -> None:
    shutil.copytree(tiny_package_v2, models_dir / "other" / "1")

    async def concurrent_mc(plane: DataPlane, model: str) -> None:
        await asyncio.gather(*(plane.infer(InferRequest(model, None, digits_rows(1, i), "mc", 3, i)) for i in range(4)))

    async def body(plane: DataPlane) -> tuple[set[str], set[tuple[str, str]]]:
        for model in (MODEL, "other"):
            await concurrent_mc(plane, model)
        shutil.rmtree(models_dir / "other")
        while plane.model_ready("other", None):
            await asyncio.sleep(0.02)
        families = plane.metrics.registry.collect()
        labelled = {sample.labels["model"] for family in families for sample in family.samples if "model" in sample.labels}
        remembered = {(spec.model, spec.version) for spec in plane._batcher._last_batch_requests}
        return labelled, remembered

    labelled, remembered = serve(models_dir, body, reload_interval_s=0.05, max_queue_delay_ms=1000.0)
    assert labelled == {MODEL}
    assert remembered <= {(MODEL, "1")}


@pytest.mark.skipif(providers.cuda_status()[0], reason="needs a machine where CUDA is not usable")
def test_an_unusable_device_fails_start_before_any_package_loads(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[Path] = []
    monkeypatch.setattr("dropnet.server.repository.Predictor.load", lambda path, *args: loads.append(path))
    plane = DataPlane(make_settings(models_dir, device="cuda"))
    with pytest.raises(ConfigError, match="device 'cuda' was requested but CUDA is not usable"):
        asyncio.run(plane.start())
    assert loads == [] and not plane.live()
