"""Pretrain → fine-tune with dropout (--init) → export → serve: the run is a run like any other."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from dropnet.cli import main
from dropnet.server.predictor import Predictor
from dropnet.trainer.data import load_dataset
from dropnet.trainer.rundir import load_config, load_run


def test_a_pretrained_then_fine_tuned_run_exports_and_serves(tmp_path: Path, capsys) -> None:
    pretrained, run_dir, package = tmp_path / "pretrained", tmp_path / "finetuned", tmp_path / "package"
    common = ["--data", "digits", "--device", "cpu"]
    assert main(["pretrain", *common, "--hidden", "32,16", "--epochs", "2", "--out", str(pretrained)]) == 0
    assert f"run dir: {pretrained}" in capsys.readouterr().out
    assert main([
        "train", *common, "--init", str(pretrained), "--hidden", "32,16", "--activation", "sigmoid", "--max-norm",
        "none", "--lr", "0.5", "--epochs", "2", "--out", str(run_dir),
    ]) == 0
    assert json.loads((run_dir / "config.json").read_text())["init"]["run"] == str(pretrained.resolve())
    assert main(["export", str(run_dir), "--out", str(package)]) == 0
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["source_run"]["config"]["init"] == str(pretrained)

    config, _ = load_config(run_dir)
    test = load_dataset(config.data, config.seed).test
    _, _, model = load_run(run_dir)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(test.x)), dim=1).numpy()
    predictor = Predictor.load(package, device="cpu", intra_op_threads=1)
    answer = predictor.predict(test.x)
    np.testing.assert_allclose(answer.probabilities, expected, atol=1e-5)
    error = float(np.mean(answer.predicted_class != test.y))
    assert error == json.loads((run_dir / "config.json").read_text())["final_metrics"]["test_error"]
    mc = predictor.predict(test.x[:16], mc_samples=20, seed=7)
    np.testing.assert_allclose(mc.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(mc.probabilities, predictor.predict(test.x[:16], mc_samples=20, seed=7).probabilities)
