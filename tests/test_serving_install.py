"""The serving install: ``pip install dropnet`` (no extras) into a fresh venv serves and predicts without torch.

The venv is built from a copy of the working tree (tests/venvs.py); the package it serves is the
one the full install exported (the ``tiny_package`` fixture); the client is this venv's tritonclient.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
from PIL import Image

from dropnet.server.predictor import Predictor
from dropnet.server.process import ServeProcess
from tests.conftest import TINY_NAME
from tests.sources import installed_modules, module_name
from tests.venvs import create_venv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def serving_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a fresh venv holding dropnet installed without extras."""
    return create_venv(tmp_path_factory.mktemp("serving-install") / "venv").parent


def run(command: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_serving_install_has_all_of_dropnet_but_nothing_of_the_train_extra(serving_venv: Path, tmp_path: Path) -> None:
    probe = ("import importlib.util, json, dropnet; from dropnet.extras import TRAIN_MODULES;"
             "print(json.dumps([dropnet.__file__, [m for m in TRAIN_MODULES if importlib.util.find_spec(m)]]))")
    location, present = json.loads(run([serving_venv / "python", "-c", probe], tmp_path).stdout)
    assert Path(location).is_relative_to(serving_venv.parent) and present == []
    site_packages = Path(location).parents[1]
    installed = {module_name(path.relative_to(site_packages)) for path in (site_packages / "dropnet").rglob("*.py")}
    assert installed == installed_modules()  # pyproject.toml lists every package


def test_training_commands_exit_2_naming_the_extra(serving_venv: Path, tmp_path: Path) -> None:
    assert run([serving_venv / "dropnet", "--help"], tmp_path).returncode == 0
    for command in ("train", "export"):
        done = run([serving_venv / "dropnet", command, "--help"], tmp_path)
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr == (f'dropnet {command}: error: needs the training extra: pip install "dropnet[train]" '
                               "(torch is not installed)\n")


def test_serve_answers_a_tritonclient_request_like_the_full_install(
    serving_venv: Path, tiny_package: Path, tmp_path: Path
) -> None:
    shutil.copytree(tiny_package, tmp_path / "models" / TINY_NAME / "1")
    flags = ["--models", str(tmp_path / "models"), "--host", "127.0.0.1", "--port", "0", "--device", "cpu",
             "--reload-interval", "0"]
    x = np.random.default_rng(0).uniform(0.0, 16.0, size=(3, 1, 8, 8)).astype(np.float32)
    with ServeProcess(flags, command=[str(serving_venv / "dropnet"), "serve"], cwd=tmp_path) as server:
        with triton.InferenceServerClient(server.wait_serving()) as client:
            tensor = triton.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            result = client.infer(TINY_NAME, [tensor], parameters={"mc_samples": 8, "seed": 3})
        assert server.stop() == 0
    expected = Predictor.load(tiny_package, device="cpu").predict(x, mc_samples=8, seed=3)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected.probabilities, rtol=1e-6, atol=1e-6)


def test_predict_reads_a_png(serving_venv: Path, tiny_package: Path, tmp_path: Path) -> None:
    Image.fromarray(np.eye(8, dtype=np.uint8) * 255).save(tmp_path / "digit.png")
    done = run([serving_venv / "dropnet", "predict", tiny_package, "--input", "digit.png", "--device", "cpu",
                "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["model"] == TINY_NAME and len(answer["rows"]) == 1
