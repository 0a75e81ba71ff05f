"""Learning-rate and momentum schedules, their use by the loop, and the effect of weight decay."""

from __future__ import annotations

import json

import pytest
import torch

from dropnet.trainer.config import OptimConfig, TrainConfig
from dropnet.trainer.loop import train
from dropnet.trainer.rundir import load_run
from dropnet.trainer.schedules import learning_rate, momentum


@pytest.mark.parametrize(
    ("schedule", "epoch", "expected"),
    [
        ("constant", 0, 0.1), ("constant", 7, 0.1),
        ("exponential", 0, 0.1), ("exponential", 1, 0.05), ("exponential", 3, 0.0125),
        ("step", 0, 0.1), ("step", 2, 0.1), ("step", 3, 0.05), ("step", 5, 0.05), ("step", 7, 0.025),
    ],
)
def test_learning_rate_at_epoch(schedule: str, epoch: int, expected: float) -> None:
    optim = OptimConfig(lr=0.1, lr_schedule=schedule, lr_decay=0.5, lr_step_epochs=3)
    assert learning_rate(optim, epoch) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("epoch", "expected"), [(0, 0.5), (1, 0.6), (2, 0.7), (4, 0.9), (5, 0.9), (100, 0.9)])
def test_momentum_ramps_linearly_then_stays(epoch: int, expected: float) -> None:
    optim = OptimConfig(momentum_start=0.5, momentum_end=0.9, momentum_ramp_epochs=4)
    assert momentum(optim, epoch) == pytest.approx(expected, rel=1e-12)


def test_zero_ramp_means_constant_end_momentum() -> None:
    optim = OptimConfig(momentum_start=0.5, momentum_end=0.9, momentum_ramp_epochs=0)
    assert [momentum(optim, e) for e in range(3)] == [0.9, 0.9, 0.9]


def test_loop_applies_the_schedules_each_epoch(digits, tmp_path) -> None:
    config = TrainConfig(device="cpu")
    config.model.hidden = [16]
    config.optim = OptimConfig(epochs=3, lr=0.2, lr_schedule="step", lr_decay=0.5, lr_step_epochs=2,
                               momentum_start=0.2, momentum_end=0.8, momentum_ramp_epochs=2)
    train(config, tmp_path / "run", dataset=digits)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records] == pytest.approx([0.2, 0.2, 0.1])
    assert [r["momentum"] for r in records] == pytest.approx([0.2, 0.5, 0.8])


def test_weight_decay_shrinks_the_learned_weights(digits, tmp_path) -> None:
    def weight_norm(decay: float) -> float:
        config = TrainConfig(device="cpu")
        config.model.hidden, config.model.max_norm = [16], None
        config.optim.epochs, config.optim.lr, config.optim.weight_decay = 2, 0.5, decay
        run_dir = tmp_path / f"decay-{decay}"
        train(config, run_dir, dataset=digits)
        _, _, model = load_run(run_dir)
        return torch.sqrt(sum((p**2).sum() for name, p in model.named_parameters() if name.endswith("weight"))).item()

    plain, decayed = weight_norm(0.0), weight_norm(0.05)
    # 24 steps at lr 0.5 and decay 0.05 shrink by up to (1 - 0.025)^24 ≈ 0.54 beyond what the gradient does
    assert decayed < 0.8 * plain
