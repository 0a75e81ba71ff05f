"""The README's "Your own model" commands, run as written: plain-PyTorch training, one export command,
``dropnet serve``, and the Triton-client request; and the regression example through ``dropnet predict``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dropnet.server.predictor import Predictor
from dropnet.server.process import ServeProcess

REPO = Path(__file__).resolve().parents[1]
DROPNET = [sys.executable, "-m", "dropnet.cli"]

pytestmark = pytest.mark.slow


def _run(args: list[str]) -> str:
    """Run a README command from the repository root; its stdout (a failure shows stderr)."""
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def test_digits_cnn_is_trained_exported_served_and_answers_with_uncertainty(tmp_path: Path) -> None:
    run, models = tmp_path / "digits_cnn", tmp_path / "models"
    trained = _run([sys.executable, "examples/digits_cnn.py", "--out", str(run)])
    assert "trained 1 epoch(s): test error" in trained
    _run([*DROPNET, "export", "--module", "examples.digits_cnn:build", "--weights", str(run / "model.safetensors"),
          "--input-shape", "1,8,8", "--value-range", "0,16", "--classes", str(run / "classes.txt"),
          "--out", str(models / "digits_cnn" / "1"), "--name", "digits_cnn"])
    manifest = json.loads((models / "digits_cnn" / "1" / "manifest.json").read_text())
    assert [site["granularity"] for site in manifest["dropout"]["sites"]] == ["channel", "element", "element"]

    with ServeProcess(["--models", str(models), "--port", "0"]) as server:
        target = server.wait_serving()
        answer = _run([sys.executable, "examples/ask_server.py", "--server", target, "--model", "digits_cnn",
                       "--rows", str(run / "test_rows.npy"), "--mc-samples", "50", "--seed", "3"])
        assert server.stop() == 0

    rows = np.load(run / "test_rows.npy")
    local = Predictor.load(models / "digits_cnn" / "1").predict(rows, mc_samples=50, seed=3)
    lines = answer.splitlines()[2:5]
    for line, cls, mean, mi in zip(lines, local.predicted_class, local.probabilities.max(axis=1),
                                   local.mutual_information, strict=True):
        fields = line.split()
        assert int(fields[4]) == cls and fields[5] == f"{mean:.1%}" and float(fields[-1]) == pytest.approx(mi, abs=1e-3)


def test_diabetes_regression_exports_and_predicts_mean_and_std(tmp_path: Path) -> None:
    run, package = tmp_path / "diabetes", tmp_path / "models" / "diabetes" / "1"
    _run([sys.executable, "examples/diabetes_mlp.py", "--out", str(run), "--epochs", "20"])
    _run([*DROPNET, "export", "--module", "examples.diabetes_mlp:build", "--weights", str(run / "model.safetensors"),
          "--input-shape", "10", "--regression", "--targets", "progression", "--out", str(package),
          "--name", "diabetes"])
    table = _run([*DROPNET, "predict", str(package), "--input", str(run / "test_rows.npy"),
                  "--mc-samples", "100", "--seed", "0"])
    local = Predictor.load(package).predict(np.load(run / "test_rows.npy"), mc_samples=100, seed=0)
    assert "progression" in table and "±" in table
    assert local.mean.shape == (3, 1) and np.all(local.std > 0)
    for mean, std in zip(local.mean[:, 0], local.std[:, 0], strict=True):
        assert f"{mean:.4f} ± {std:.4f}" in table
