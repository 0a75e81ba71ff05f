"""The training loop: determinism, resume, best-by-validation weights, divergence, batch norm."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import dropnet.trainer.loop
from dropnet.core.errors import ConfigError, RunDirError
from dropnet.trainer.config import DataConfig, TrainConfig
from dropnet.trainer.loop import error_rate, train
from dropnet.trainer.rundir import cpu_state_dict, load_run, read_config


def _config(epochs: int = 2, seed: int = 0, **model: object) -> TrainConfig:
    config = TrainConfig(seed=seed, device="cpu")
    config.model.hidden = [32]
    for key, value in model.items():
        setattr(config.model, key, value)
    config.optim.epochs, config.optim.lr = epochs, 0.5
    return config


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _without_seconds(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def _test_error(model: torch.nn.Module, split) -> float:
    return error_rate(model, torch.from_numpy(split.x), torch.from_numpy(split.y))


def test_same_seed_gives_identical_metrics_and_another_seed_does_not(digits, tmp_path) -> None:
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        train(_config(seed=seed), tmp_path / name, dataset=digits)
    a, b, c = (_without_seconds(_records(tmp_path / n)) for n in "abc")
    assert len(a) == 2
    assert a == b
    assert a != c


def test_resume_continues_exactly_like_an_uninterrupted_run(digits, tmp_path) -> None:
    straight = train(_config(epochs=3), tmp_path / "straight", dataset=digits)
    train(_config(epochs=2), tmp_path / "resumed", dataset=digits)
    resumed = train(_config(epochs=3), tmp_path / "resumed", resume=True, dataset=digits)
    assert _without_seconds(_records(tmp_path / "resumed")) == _without_seconds(_records(tmp_path / "straight"))
    assert {k: v for k, v in resumed.items() if k != "seconds"} == {k: v for k, v in straight.items() if k != "seconds"}
    assert read_config(tmp_path / "resumed")["config"]["optim"]["epochs"] == 3


def test_a_run_killed_before_its_checkpoint_loses_one_epoch_and_then_matches(digits, tmp_path, monkeypatch) -> None:
    train(_config(epochs=3), tmp_path / "straight", dataset=digits)
    real_save = dropnet.trainer.loop.save_checkpoint

    def killed_after_two_epochs(run_dir, model, weights, optimizer, shuffle, state) -> None:
        if state.epochs_done == 2:
            raise KeyboardInterrupt  # after epoch 2's metrics line, before its checkpoint
        real_save(run_dir, model, weights, optimizer, shuffle, state)

    monkeypatch.setattr(dropnet.trainer.loop, "save_checkpoint", killed_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        train(_config(epochs=3), tmp_path / "killed", dataset=digits)
    assert len(_records(tmp_path / "killed")) == 2
    monkeypatch.setattr(dropnet.trainer.loop, "save_checkpoint", real_save)
    train(_config(epochs=3), tmp_path / "killed", resume=True, dataset=digits)
    assert _without_seconds(_records(tmp_path / "killed")) == _without_seconds(_records(tmp_path / "straight"))


def test_resume_with_a_different_config_is_refused(digits, tmp_path) -> None:
    train(_config(epochs=1), tmp_path / "run", dataset=digits)
    changed = _config(epochs=2)
    changed.optim.lr = 0.1
    with pytest.raises(ConfigError, match=r"optim\.lr: the run has 0\.5, requested 0\.1"):
        train(changed, tmp_path / "run", resume=True, dataset=digits)


def test_resume_with_fewer_epochs_than_done_is_refused(digits, tmp_path) -> None:
    train(_config(epochs=2), tmp_path / "run", dataset=digits)
    with pytest.raises(ConfigError, match="already trained 2 epochs"):
        train(_config(epochs=1), tmp_path / "run", resume=True, dataset=digits)


def test_new_run_into_a_non_empty_directory_is_refused(digits, tmp_path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="--resume"):
        train(_config(), tmp_path / "run", dataset=digits)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["notes.txt"]


def test_best_validation_epoch_weights_are_kept(digits, tmp_path) -> None:
    final = train(_config(epochs=4), tmp_path / "run", dataset=digits)
    records = _records(tmp_path / "run")
    best = min(records, key=lambda r: (r["val_error"], r["epoch"]))
    assert final["best_epoch"] == best["epoch"]
    assert (final["val_error"], final["test_error"]) == (best["val_error"], best["test_error"])
    _, _, model = load_run(tmp_path / "run")
    assert _test_error(model, digits.val) == best["val_error"]
    assert _test_error(model, digits.test) == best["test_error"]


def test_without_validation_split_the_last_epoch_is_kept(tmp_path) -> None:
    from dropnet.trainer.data import load_dataset

    dataset = load_dataset(DataConfig(name="digits", val_size=0), seed=0)
    final = train(_config(epochs=2), tmp_path / "run", dataset=dataset)
    assert final["best_epoch"] == 2 and final["val_error"] is None
    assert [r["val_error"] for r in _records(tmp_path / "run")] == [None, None]
    _, _, model = load_run(tmp_path / "run")
    assert _test_error(model, dataset.test) == final["test_error"]


def test_divergence_stops_with_a_message_naming_the_epoch(digits, tmp_path) -> None:
    config = _config(epochs=3, max_norm=None)
    config.optim.lr, config.optim.lr_schedule = 1e6, "constant"
    with pytest.raises(ConfigError, match=r"diverged in epoch 1: .*lower --lr"):
        train(config, tmp_path / "run", dataset=digits)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_batch_norm_network_trains_and_its_running_statistics_are_saved(digits, tmp_path) -> None:
    final = train(_config(epochs=3, batch_norm=True), tmp_path / "run", dataset=digits)
    records = _records(tmp_path / "run")
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert final["test_error"] < 0.2
    _, _, model = load_run(tmp_path / "run")
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    assert _test_error(model, digits.test) == final["test_error"]


def test_dropout_before_batch_norm_is_refused_before_anything_is_written(digits, tmp_path) -> None:
    with pytest.raises(ConfigError, match="variance shift"):
        train(_config(batch_norm=True, dropout_before_batch_norm=True), tmp_path / "run", dataset=digits)
    assert not (tmp_path / "run").exists()


def test_a_trailing_batch_of_one_is_skipped_so_batch_norm_can_train(digits, tmp_path) -> None:
    config = _config(epochs=1, batch_norm=True)
    config.optim.batch_size = len(digits.train) - 1  # the second batch would hold a single example
    final = train(config, tmp_path / "run", dataset=digits)
    assert final["epochs"] == 1


def test_resume_with_different_data_is_refused(digits, tmp_path) -> None:
    from dropnet.trainer.data import load_dataset

    train(_config(epochs=1), tmp_path / "run", dataset=digits)
    other = load_dataset(DataConfig(name="digits", val_size=0), seed=0)  # other train split, other mean/std
    with pytest.raises(RunDirError, match="the data now gives"):
        train(_config(epochs=2), tmp_path / "run", resume=True, dataset=other)


def _no_val_digits():
    """Digits without a validation split: every epoch is the best so far, so every epoch writes weights."""
    from dropnet.trainer.data import load_dataset

    return load_dataset(DataConfig(name="digits", val_size=0), seed=0)


def _checkpoint_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    tensors = load_file(str(run_dir / "checkpoint" / state["tensors"]))
    return {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_best_weights_follow_the_checkpoint_commit_and_resume_repairs_a_crash_in_between(
    tmp_path, monkeypatch
) -> None:
    dataset = _no_val_digits()
    train(_config(epochs=2), tmp_path / "straight", dataset=dataset)
    real_save = dropnet.trainer.loop.save_weights
    committed_at_write: list[dict] = []

    def killed_writing_epoch_two(path, weights) -> None:
        state = json.loads((path.parent / "checkpoint" / "state.json").read_text())
        committed_at_write.append({k: state[k] for k in ("epochs_done", "best_epoch")})
        if state["epochs_done"] == 2:
            raise KeyboardInterrupt  # after epoch 2's checkpoint commit, before its best weights
        real_save(path, weights)

    monkeypatch.setattr(dropnet.trainer.loop, "save_weights", killed_writing_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(_config(epochs=2), tmp_path / "killed", dataset=dataset)
    assert committed_at_write == [{"epochs_done": 1, "best_epoch": 1}, {"epochs_done": 2, "best_epoch": 2}]
    weights_file = tmp_path / "killed" / "model.safetensors"
    assert not _same_tensors(load_file(str(weights_file)), _checkpoint_weights(tmp_path / "killed"))  # epoch 1's

    monkeypatch.setattr(dropnet.trainer.loop, "save_weights", real_save)
    train(_config(epochs=2), tmp_path / "killed", resume=True, dataset=dataset)
    assert _same_tensors(load_file(str(weights_file)), _checkpoint_weights(tmp_path / "killed"))
    assert _same_tensors(load_file(str(weights_file)), load_file(str(tmp_path / "straight" / "model.safetensors")))


def test_an_improving_epoch_copies_the_weights_off_the_device_once(tmp_path, monkeypatch) -> None:
    calls = []

    def counted(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        calls.append(1)
        return cpu_state_dict(model)

    monkeypatch.setattr(dropnet.trainer.loop, "cpu_state_dict", counted)
    train(_config(epochs=2), tmp_path / "run", dataset=_no_val_digits())
    assert len(calls) == 2
    assert _same_tensors(load_file(str(tmp_path / "run" / "model.safetensors")), _checkpoint_weights(tmp_path / "run"))


def test_resume_refuses_a_metrics_log_without_the_best_epoch(tmp_path) -> None:
    dataset = _no_val_digits()
    train(_config(epochs=2), tmp_path / "run", dataset=dataset)
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n")  # epoch 2, the best, is gone
    with pytest.raises(RunDirError, match=r"metrics\.jsonl has no record of epoch 2, the best epoch in .*checkpoint"):
        train(_config(epochs=2), tmp_path / "run", resume=True, dataset=dataset)
