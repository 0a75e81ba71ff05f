"""Per-epoch learning rate and momentum (``epoch`` is the 0-based index of the epoch about to run)."""

from __future__ import annotations

from dropnet.trainer.config import OptimConfig


def learning_rate(optim: OptimConfig, epoch: int) -> float:
    """Learning rate of epoch ``epoch``: constant, lr·decay^epoch, or lr·decay^(epoch // step)."""
    if optim.lr_schedule == "constant":
        return optim.lr
    if optim.lr_schedule == "exponential":
        return optim.lr * optim.lr_decay**epoch
    if optim.lr_schedule == "step":
        return optim.lr * optim.lr_decay ** (epoch // optim.lr_step_epochs)
    raise ValueError(f"unknown learning-rate schedule {optim.lr_schedule!r}")


def momentum(optim: OptimConfig, epoch: int) -> float:
    """Momentum of epoch ``epoch``: linear from start (epoch 0) to end (epoch ``momentum_ramp_epochs``), then flat."""
    if optim.momentum_ramp_epochs == 0:
        return optim.momentum_end
    t = min(epoch / optim.momentum_ramp_epochs, 1.0)
    return optim.momentum_start + (optim.momentum_end - optim.momentum_start) * t
