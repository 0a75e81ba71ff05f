"""MC in chunks of samples: the same bytes whatever the chunk size, summaries as the graph defines
them, and packages exported before ``first_sample`` still served (split by rows only)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from dropnet import export_module
from dropnet.core.errors import ConfigError
from dropnet.core.manifest import FIRST_SAMPLE_INPUT, MANIFEST_FILE, MC_FILE, Manifest, seal_manifest
from dropnet.core.outputs import Mode, Task, graph_output_names
from dropnet.core.seeding import row_seeds
from dropnet.server import predictor as predictor_module
from dropnet.server.dataplane import DataPlane, InferRequest
from dropnet.server.predictor import DEFAULT_MC_CHUNK_BYTES, Predictor, mc_plan, ordered_sum
from dropnet.server.settings import ServerSettings
from tests.server.helpers import MODEL, digits_rows, make_settings

ROWS, T = 3, 50
U = 2.0**-24
"""float32's unit roundoff: the graph computes its summaries in float32, the host in float64."""


@pytest.fixture(scope="module")
def regression_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An own-model regression package (two targets, one inverted dropout site), as export_module writes it."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(5, 24), nn.ReLU(), nn.Dropout(0.3), nn.Linear(24, 2)).eval()
    out = tmp_path_factory.mktemp("regression") / "pkg"
    return export_module(module, torch.randn(4, 5), out, name="reg", task="regression")


def _package(name: str, tiny_package: Path, regression_package: Path) -> tuple[Path, np.ndarray]:
    if name == "classification":
        return tiny_package, digits_rows(ROWS, seed=3)
    return regression_package, np.random.default_rng(3).standard_normal((ROWS, 5)).astype(np.float32)


def _sequential(values: np.ndarray) -> np.ndarray:
    """The sum along axis 0, one row after the other, in Python."""
    total = values[0].copy()
    for row in values[1:]:
        total = total + row
    return total


def test_numpy_sums_axis_0_row_by_row_except_when_each_row_is_one_value() -> None:
    """The facts :func:`ordered_sum` rests on, on values of very different magnitudes (so that the
    order of additions shows in the result)."""
    rng = np.random.default_rng(0)
    for shape in [(1000, 1, 1), (1000, 1, 2), (1000, 3, 1), (51, 4, 10), (20, 1, 4096)]:
        values = rng.standard_normal(shape) * 10.0 ** rng.integers(-8, 9, size=shape)
        expected = _sequential(values)
        assert ordered_sum(values).tobytes() == expected.tobytes(), shape
        flat = values.reshape(len(values), -1)
        if flat.shape[1] > 1:  # reduce's inner loop runs along the row: rows are added in order
            assert np.add.reduce(flat, axis=0).tobytes() == expected.reshape(-1).tobytes(), shape
        else:  # one value per row: the loop runs along the summed axis and numpy sums pairwise
            assert np.add.reduce(flat[:, 0]) != expected.item(), shape


def test_mc_plan_bounds_each_run() -> None:
    assert mc_plan(3, 50, 100, 3 * 50 * 100) == (3, 50)  # all in one run
    assert mc_plan(3, 50, 100, 3 * 7 * 100 + 99) == (3, 7)  # 7 samples of every row per run
    assert mc_plan(3, 50, 100, 2 * 100) == (2, 1)  # one sample of all rows is over: rows split
    assert mc_plan(3, 50, 100, 1) == (1, 1)  # at least one sample of one row, whatever the budget
    assert mc_plan(0, 5, 100, 10**6) == (1, 5)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_mc_answers_are_the_same_bytes_whatever_the_chunk_size(
    task: str, tiny_package: Path, regression_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package, x = _package(task, tiny_package, regression_package)
    seeds = row_seeds(11, ROWS)
    runs: list[tuple[int, int, int]] = []
    real_run = predictor_module.run_session

    def recording(session: ort.InferenceSession, what: str, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
        if "num_samples" in feeds:
            runs.append((len(feeds["x"]), int(feeds["num_samples"]), int(feeds[FIRST_SAMPLE_INPUT])))
        return real_run(session, what, outputs, feeds)

    monkeypatch.setattr(predictor_module, "run_session", recording)
    answers = {}
    sample_bytes = Predictor.load(package, device="cpu").sample_bytes
    for chunk in (1, 7, T, "rows"):
        budget = 2 * sample_bytes if chunk == "rows" else ROWS * chunk * sample_bytes
        predictor = Predictor.load(package, device="cpu", intra_op_threads=1, mc_chunk_bytes=budget)
        runs.clear()
        answers[chunk] = predictor.run_mc(x, T, seeds)
        if chunk == "rows":  # 2 rows then 1, one sample per run
            assert runs == [(2, 1, t) for t in range(T)] + [(1, 1, t) for t in range(T)]
        else:
            assert runs == [(ROWS, min(chunk, T - first), first) for first in range(0, T, chunk)]
    names = graph_output_names(Task(task), Mode.MC)
    for chunk, answer in answers.items():
        assert list(answer) == list(names)
        for name in names:
            assert answer[name].tobytes() == answers[T][name].tobytes(), f"chunk {chunk}: {name}"


def _summary_tolerances(task: Task, samples: np.ndarray, host: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """First-order bounds of the float32 rounding of the graph's summaries (the host's float64 error is
    ~2^-53·T, negligible), doubled for the second-order terms:

    mean: ReduceMean of T values, |Δ| <= (T + 1)·u·mean|x| (the sum's rounding, then the division);
    std (compared squared, as std vanishes where the bound on std itself would not):
    the graph's Σ(x - m_g)²/T exceeds the variance by (m - m_g)² and rounds by (T + 4)·u relative, and
    the float32 result by u more: |Δstd²| <= (T + 6)·u·var + 2·((T + 1)·u·mean|x|)²;
    predictive entropy: d(-m log m)/dm = -(log m + 1) times the mean's relative error (T + 1)·u, plus
    the log, product and class sum of the graph's own evaluation: |ΔH| <= (T + C + 4)·u·(H + 1);
    mutual information: that for H, and the same for the mean of the per-sample entropies (each <= log C).
    """
    count, width = samples.shape[0], samples.shape[-1]
    magnitude = np.abs(samples.astype(np.float64)).mean(axis=0)
    mean_error = (count + 1) * U * magnitude
    tolerance = {
        "mean" if task is Task.REGRESSION else "probabilities": mean_error,
        "std": (count + 6) * U * host["std"].astype(np.float64) ** 2 + 2 * mean_error**2,
    }
    if task is Task.CLASSIFICATION:
        tolerance["predictive_entropy"] = (count + width + 4) * U * (host["predictive_entropy"] + 1.0)
        tolerance["mutual_information"] = np.full(samples.shape[1], 2 * (count + width + 4) * U * (math.log(width) + 1))
    return {name: 2 * bound for name, bound in tolerance.items()}


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_host_summaries_agree_with_the_graphs_own_summaries(
    task: str, tiny_package: Path, regression_package: Path
) -> None:
    package, x = _package(task, tiny_package, regression_package)
    seeds = row_seeds(5, ROWS)
    host = Predictor.load(package, device="cpu").run_mc(x, T, seeds)
    session = ort.InferenceSession(str(package / MC_FILE), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    graph = dict(zip(names, session.run(None, {"x": x, "num_samples": np.array(T, np.int64), "seed": seeds})))
    assert host["samples"].tobytes() == graph["samples"].tobytes()  # the same samples, summarised twice
    for name, bound in _summary_tolerances(Task(task), graph["samples"], host).items():
        assert host[name].dtype == np.float32 and host[name].shape == graph[name].shape, name
        delta = np.abs(host[name].astype(np.float64) - graph[name])
        if name == "std":
            delta = np.abs(host[name].astype(np.float64) ** 2 - graph[name].astype(np.float64) ** 2)
        assert (delta <= bound).all(), f"{name}: max |Δ| {delta.max():.3g}, bound {bound.min():.3g}"
    if task == "classification":
        assert (host["mutual_information"] > 1e-4).all()  # the noise really varies the samples


def test_only_the_outputs_asked_for_are_computed(tiny_package: Path) -> None:
    predictor = Predictor.load(tiny_package, device="cpu")
    x, seeds = digits_rows(ROWS, seed=3), row_seeds(2, ROWS)
    full = predictor.run_mc(x, T, seeds)
    for names in (("samples",), ("probabilities",), ("mutual_information", "std")):
        some = predictor.run_mc(x, T, seeds, names)
        assert list(some) == list(names)
        for name in names:
            assert some[name].tobytes() == full[name].tobytes(), name


def _without_first_sample(package: Path, destination: Path) -> Path:
    """A copy of ``package`` as exported before ``first_sample`` and ``mc.sample_bytes``: the input
    removed from mc.onnx (its initializer stays, a constant 0), the manifest resealed without the field."""
    copy = Path(shutil.copytree(package, destination))
    proto = onnx.load(copy / MC_FILE)
    kept = [value for value in proto.graph.input if value.name != FIRST_SAMPLE_INPUT]
    del proto.graph.input[:]
    proto.graph.input.extend(kept)
    (copy / MC_FILE).write_bytes(proto.SerializeToString())
    raw = json.loads((copy / MANIFEST_FILE).read_text())
    del raw["mc"]["sample_bytes"]
    manifest = Manifest.from_dict(raw, "test")
    graphs = {name: (copy / name).read_bytes() for name in manifest.files}
    sealed = seal_manifest(manifest, graphs, manifest.mc.max_samples)
    (copy / MANIFEST_FILE).write_text(json.dumps(sealed.to_dict()))
    return copy


def test_a_package_without_first_sample_still_serves_split_by_rows(
    tiny_package: Path, tiny_predictor: Predictor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = _without_first_sample(tiny_package, tmp_path / "models" / MODEL / "1")
    budget = 2 * T * tiny_predictor.sample_bytes  # two rows of all T samples per run
    with caplog.at_level(logging.INFO, logger="dropnet.server.predictor"):
        predictor = Predictor.load(old, device="cpu", mc_chunk_bytes=budget)
    messages = [record.getMessage() for record in caplog.records]
    assert sum("has no first_sample input" in m and "split by rows only" in m for m in messages) == 1
    assert sum("has no mc.sample_bytes" in m for m in messages) == 1
    assert not predictor.chunks_samples and predictor.sample_bytes == tiny_predictor.sample_bytes
    x, seeds = digits_rows(5, seed=4), row_seeds(9, 5)
    split = predictor.run_mc(x, T, seeds)  # rows 2 + 2 + 1, in-graph summaries
    session = ort.InferenceSession(str(old / MC_FILE), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    whole = dict(zip(names, session.run(None, {"x": x, "num_samples": np.array(T, np.int64), "seed": seeds})))
    for name in ("samples", "probabilities", "std"):
        np.testing.assert_array_equal(split[name], whole[name], err_msg=name)
    for name in ("predictive_entropy", "mutual_information"):  # class sums: reduction kernels vary with B
        np.testing.assert_allclose(split[name], whole[name], rtol=1e-6, atol=1e-6, err_msg=name)
    chunked = tiny_predictor.run_mc(x, T, seeds)  # the same masks, chunked by samples in the new package
    np.testing.assert_array_equal(split["samples"], chunked["samples"])

    async def serve() -> Any:
        plane = DataPlane(make_settings(tmp_path / "models", mc_chunk_bytes=budget))
        await plane.start()
        try:
            return await plane.infer(InferRequest(MODEL, None, x, "mc", T, 9))
        finally:
            await plane.stop()

    served = asyncio.run(serve())
    np.testing.assert_array_equal(served.outputs["probabilities"], split["probabilities"])


def test_the_chunk_budget_defaults_to_the_servers_and_the_server_passes_its_own(models_dir: Path) -> None:
    assert DEFAULT_MC_CHUNK_BYTES == ServerSettings.model_fields["mc_chunk_bytes"].default

    async def loaded_budget() -> int:
        plane = DataPlane(make_settings(models_dir, mc_chunk_bytes=12345))
        await plane.start()
        try:
            return plane.repository.get(MODEL, None).predictor.mc_chunk_bytes
        finally:
            await plane.stop()

    assert asyncio.run(loaded_budget()) == 12345


@pytest.mark.parametrize("budget", [0, -1, True, 1.5])
def test_a_bad_chunk_budget_is_refused(tiny_package: Path, budget: Any) -> None:
    with pytest.raises(ConfigError, match=f"mc_chunk_bytes must be a positive integer, got {budget!r}"):
        Predictor.load(tiny_package, device="cpu", mc_chunk_bytes=budget)
