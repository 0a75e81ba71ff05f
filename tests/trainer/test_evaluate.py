"""``trainer.evaluate`` and ``dropnet evaluate``: weight scaling vs Monte-Carlo model averaging (paper Fig. 11)."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dropnet.cli import main
from dropnet.core.errors import ConfigError, DataError, RunDirError
from tests.factories import make_run_dir
from dropnet.trainer.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from dropnet.trainer.evaluate import DEFAULT_MC_SAMPLES, EVALUATE_FORMAT, evaluate
from dropnet.trainer.loop import train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64-256-256-10 dropout MLP trained 3 epochs on digits (test error 7.5-13.6% for seeds 0-4)."""
    run_dir = tmp_path_factory.mktemp("evaluate") / "run"
    config = TrainConfig(
        model=ModelConfig(hidden=[256, 256]), optim=OptimConfig(epochs=3, lr=1.0), seed=0, device="cpu"
    )
    train(config, run_dir)
    return run_dir


def _errors(result: dict) -> dict[int, float]:
    return {entry["k"]: entry["error"] for entry in result["mc"]}


def test_mc_error_falls_with_k_towards_the_weight_scaling_error(trained_run: Path) -> None:
    result = evaluate(trained_run, mc_samples=(1, 100), seed=0, device="cpu", repeats=2)
    scaled, errors = result["weight_scaling_error"], _errors(result)
    final = json.loads((trained_run / "config.json").read_text())["final_metrics"]
    assert scaled == final["test_error"]  # the run's own test split, best weights
    # Measured on 5 trained nets x 10 mask seeds: a single thinned net (k=1) errs 4.7-15 points more
    # than weight scaling; averaging 100 of them lands within -0.6..+2.2 points of it.
    assert errors[1] - scaled > 0.03
    assert abs(errors[100] - scaled) <= 0.03
    assert result["format"] == EVALUATE_FORMAT and result["examples"] == 360 and result["split"] == "test"
    assert result["dropout"] == {"flavour": "paper", "retain": [0.8, 0.5, 0.5]}


def test_same_seed_reproduces_and_other_seeds_draw_other_masks(trained_run: Path) -> None:
    first = evaluate(trained_run, mc_samples=(1, 3), seed=0, device="cpu")
    rng_before = torch.get_rng_state()
    torch.rand(1000)  # move the global RNG: results must not depend on it
    second = evaluate(trained_run, mc_samples=(1, 3), seed=0, device="cpu")
    assert second["mc"] == first["mc"]
    assert second["weight_scaling_error"] == first["weight_scaling_error"]

    torch.set_rng_state(rng_before)
    torch.rand(1000)
    expected_next = torch.rand(3)
    torch.set_rng_state(rng_before)
    torch.rand(1000)
    repeated = evaluate(trained_run, mc_samples=(1,), seed=0, device="cpu", repeats=5)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's global RNG is left alone

    (k1,) = repeated["mc"]
    assert repeated["seeds"] == [0, 1, 2, 3, 4]
    assert k1["errors"][0] == _errors(first)[1]  # repeat r uses seed + r
    assert len(set(k1["errors"])) > 1  # k=1 errors of 5 seeds spread over several points
    assert k1["error"] == pytest.approx(statistics.fmean(k1["errors"]))
    assert k1["std"] == pytest.approx(statistics.stdev(k1["errors"])) and k1["std"] > 0


def test_error_at_k_uses_the_first_k_samples_of_one_sequence(trained_run: Path, monkeypatch) -> None:
    monkeypatch.setattr("dropnet.trainer.evaluate.MC_CHUNK", 100)  # several chunks, the last one partial
    alone = evaluate(trained_run, mc_samples=(5,), seed=3, device="cpu")
    listed = evaluate(trained_run, mc_samples=(20, 1, 5), seed=3, device="cpu")
    assert [entry["k"] for entry in listed["mc"]] == [1, 5, 20]
    assert _errors(alone)[5] == _errors(listed)[5]


def test_without_dropout_mc_equals_weight_scaling_exactly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("dropnet.trainer.evaluate.MC_CHUNK", 64)  # several chunks, the last one partial
    # batch norm with random running statistics: MC must keep it in eval mode to agree
    model = ModelConfig(hidden=[16, 16], retain=[1.0, 1.0, 1.0], batch_norm=True)
    run_dir = make_run_dir(tmp_path / "run", model)
    result = evaluate(run_dir, mc_samples=(1, 2, 7), seed=5, device="cpu")
    assert set(_errors(result).values()) == {result["weight_scaling_error"]}


def test_data_override_with_the_same_examples_gives_the_same_split(trained_run: Path, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path / "digits.npz"
    np.savez(path, x=digits.data.reshape(-1, 1, 8, 8).astype(np.float32), y=digits.target)
    own = evaluate(trained_run, mc_samples=(2,), device="cpu")
    other = evaluate(trained_run, data_cfg=DataConfig(name=str(path)), mc_samples=(2,), device="cpu")
    assert other["dataset"]["name"] == str(path)
    assert (other["weight_scaling_error"], other["mc"]) == (own["weight_scaling_error"], own["mc"])


def test_refuses_bad_requests_by_name(trained_run: Path, tmp_path: Path) -> None:
    for bad in [(0, 5), (2, -1), (1.5,), ("3",), (True,), ()]:
        with pytest.raises(ConfigError, match="sample counts"):
            evaluate(trained_run, mc_samples=bad, device="cpu")
    with pytest.raises(ConfigError, match="repeats must be an integer >= 1"):
        evaluate(trained_run, repeats=0, device="cpu")
    with pytest.raises(ConfigError, match="split must be one of"):
        evaluate(trained_run, split="train", device="cpu")
    with pytest.raises(RunDirError, match="config.json is missing"):
        evaluate(tmp_path / "nowhere", device="cpu")
    three_classes = tmp_path / "three.npz"
    np.savez(three_classes, x=np.arange(60 * 64, dtype=np.float32).reshape(60, 1, 8, 8), y=np.arange(60) % 3)
    with pytest.raises(DataError, match=r"shape \(1, 8, 8\) in 3 classes.*with 10 classes"):
        evaluate(trained_run, data_cfg=DataConfig(name=str(three_classes)), device="cpu")


def test_cli_prints_the_table_and_writes_the_json(trained_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "result.json"
    argv = ["evaluate", str(trained_run), "--mc-samples", "1,10", "--json-out", str(out), "--device", "cpu"]
    assert main([*argv, "--repeats", "2", "--seed", "4"]) == 0
    result = json.loads(out.read_text())
    assert {"run_dir", "dataset", "split", "seed", "weight_scaling_error", "mc", "seconds", "versions"} <= set(result)
    assert result["run_dir"] == str(trained_run) and result["seeds"] == [4, 5]
    assert result["dataset"]["name"] == "digits" and result["dataset"]["test"] == 360
    assert [entry["k"] for entry in result["mc"]] == [1, 10] and all("std" in entry for entry in result["mc"])
    assert set(result["seconds"]) == {"load", "weight_scaling", "mc"} and "torch" in result["versions"]
    assert result == {**evaluate(trained_run, mc_samples=(1, 10), seed=4, device="cpu", repeats=2),
                      "seconds": result["seconds"], "created": result["created"], "command": sys.argv}
    text = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:4]}
    scaled = f"{result['weight_scaling_error']:.2%}"
    for entry in result["mc"]:
        assert rows[str(entry["k"])] == [f"{entry['error']:.2%}", "±", f"{entry['std']:.2%}", scaled]
    assert str(out) in text


def test_cli_writes_into_the_run_dir_by_default(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path / "run", ModelConfig(hidden=[16]))
    assert main(["evaluate", str(run_dir), "--mc-samples", "3", "--device", "cpu"]) == 0
    result = json.loads((run_dir / "evaluate.json").read_text())
    assert [entry["k"] for entry in result["mc"]] == [3] and "std" not in result["mc"][0]


def test_cli_rejects_bad_input_with_exit_2(trained_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["evaluate", str(trained_run), "--mc-samples", "1,0", "--device", "cpu"]) == 2
    assert "MC sample counts must be integers >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(trained_run), "--mc-samples", "1,x"])
    assert exit_info.value.code == 2
    assert "expected an integer, got 'x'" in capsys.readouterr().err

    assert main(["evaluate", str(tmp_path / "missing"), "--device", "cpu"]) == 2
    assert "not a dropnet run directory" in capsys.readouterr().err

    flat = tmp_path / "flat.npz"
    np.savez(flat, x=np.arange(60 * 64, dtype=np.float32).reshape(60, 64), y=np.arange(60) % 10)
    assert main(["evaluate", str(trained_run), "--data", str(flat), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "examples of shape (64,)" in err and "trained on shape (1, 8, 8)" in err and "Traceback" not in err
    assert not (trained_run / "evaluate.json").exists()


def test_cli_help_states_the_default_sample_counts(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert f"default: {','.join(map(str, DEFAULT_MC_SAMPLES))}" in capsys.readouterr().out
