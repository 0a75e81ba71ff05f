"""Fixtures of the quality tests: small dropout MLPs trained on the bundled digits and on seeded Gaussian blobs,
each exported as is ("plain") and with its output layer's weights scaled ("over"- and "under"-confident), and an
own-model package.

Session-scoped and read-only: copy a package (shutil.copytree) to alter it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dropnet.trainer.config import DataConfig, ModelConfig
from dropnet.trainer.data import Dataset, load_dataset
from dropnet.trainer.rundir import WEIGHTS_FILE, cpu_state_dict, load_run, read_config, save_weights, update_config
from tests.factories import make_run_dir

SCALES = {"over": 4.0, "under": 0.25}
"""Factor on the output layer's weights and bias: ×4 makes the net over-confident, ×0.25 under-confident."""
BLOB_ROWS, BLOB_CLASSES, BLOB_FEATURES, BLOB_NOISE = 6000, 4, 16, 2.0
"""Gaussian blobs whose classes overlap: the net errs on about 22% of them, so mis-calibration shows in the ECE
far above its noise on the 800 validation rows."""


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of a 64-32-10 ReLU dropout MLP trained on the digits (its config: digits, seed 0)."""
    data = DataConfig(name="digits")
    run_dir = tmp_path_factory.mktemp("quality-runs") / "toy-digits"
    return _trained_run(run_dir, ModelConfig(hidden=[32]), data, load_dataset(data, seed=0), steps=300)


@pytest.fixture(scope="session")
def toy_models(toy_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Packages ``<name>/1`` of :func:`toy_run`: "plain", "over" and "under" (see :data:`SCALES`)."""
    return _scaled_packages(toy_run, tmp_path_factory)


@pytest.fixture(scope="session")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .npz user file (x float32 [6000, 16], y 0..3) of seeded Gaussian blobs: 4,000 train / 800 val / 1,200 test."""
    rng = np.random.default_rng(0)
    means = rng.normal(0.0, 1.0, (BLOB_CLASSES, BLOB_FEATURES))
    y = rng.integers(0, BLOB_CLASSES, BLOB_ROWS)
    x = (means[y] + rng.normal(0.0, BLOB_NOISE, (BLOB_ROWS, BLOB_FEATURES))).astype(np.float32)
    path = tmp_path_factory.mktemp("quality-data") / "blobs.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="session")
def blob_models(blobs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Packages "plain", "over", "under" (``<name>/1``) of a 16-32-4 ReLU MLP (hidden dropout 0.5, none on the
    input) trained on :func:`blobs`, whose run config names that file."""
    data = DataConfig(name=str(blobs))
    run_dir = tmp_path_factory.mktemp("quality-runs") / "toy-blobs"
    run = _trained_run(run_dir, ModelConfig(hidden=[32], retain_input=1.0), data, load_dataset(data, seed=0), steps=200)
    return _scaled_packages(run, tmp_path_factory)


@pytest.fixture(scope="session")
def own_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The own-model package (export_module) of the zoo's classification MLP: 20 inputs, 5 classes."""
    from dropnet import export_module
    from tests.exporter.own.zoo import ZOO

    module, x = ZOO["mlp"].build()
    return export_module(module, x, tmp_path_factory.mktemp("quality-own") / "mlp" / "1", name="mlp")


def _trained_run(run_dir: Path, model: ModelConfig, data: DataConfig, dataset: Dataset, steps: int) -> Path:
    """A run directory of ``model`` on ``data`` (seed 0), trained by ``steps`` full-batch Adam steps with dropout."""
    make_run_dir(run_dir, model, dataset.spec)
    config = read_config(run_dir)["config"]
    update_config(run_dir, config={**config, "data": data.to_dict()})
    _, _, net = load_run(run_dir)
    torch.manual_seed(0)
    x, y = torch.from_numpy(dataset.train.x), torch.from_numpy(dataset.train.y)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    net.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: more threads only wait on each other where cores are shared
    try:
        for _ in range(steps):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    save_weights(run_dir / WEIGHTS_FILE, cpu_state_dict(net))
    return run_dir


def _scaled_packages(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Packages ``<name>/1``, each version 1 of its own model directory: "plain" (the run as it is) and the run with
    its output layer's weights and bias scaled by :data:`SCALES`."""
    from dropnet.exporter.package import export_package

    models = tmp_path_factory.mktemp("quality-models")
    packages = {"plain": export_package(run_dir, models / "plain" / "1", name="plain")}
    _, _, net = load_run(run_dir)
    output = next(name for name, module in reversed(list(net.named_children())) if isinstance(module, torch.nn.Linear))
    for name, factor in SCALES.items():
        scaled_run = tmp_path_factory.mktemp(f"quality-run-{name}") / run_dir.name
        shutil.copytree(run_dir, scaled_run)
        state = cpu_state_dict(net)
        for key in (f"{output}.weight", f"{output}.bias"):
            state[key] = state[key] * factor
        save_weights(scaled_run / WEIGHTS_FILE, state)
        packages[name] = export_package(scaled_run, models / name / "1", name=name)
    return packages
