"""Max-norm: enforced after every optimiser step of real training, per unit, on the right axis."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dropnet.trainer.loop
from dropnet.trainer.config import TrainConfig
from dropnet.trainer.maxnorm import MaxNorm
from dropnet.trainer.loop import train

C = 0.5


def _unit_norms(weight: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(weight.flatten(1), dim=1)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_every_step_leaves_every_unit_inside_the_ball(arch: str, digits, tmp_path, monkeypatch) -> None:
    calls = {"steps": 0, "projected": 0}

    class CheckedMaxNorm(MaxNorm):
        def __call__(self) -> None:
            before = [_unit_norms(w).max().item() for w, _ in self.constrained]
            super().__call__()
            calls["steps"] += 1
            calls["projected"] += any(norm > C for norm in before)
            for weight, c in self.constrained:
                assert c == C
                assert (_unit_norms(weight) <= c * (1 + 1e-6)).all()

    monkeypatch.setattr(dropnet.trainer.loop, "MaxNorm", CheckedMaxNorm)
    config = TrainConfig(device="cpu")
    config.model.arch, config.model.hidden, config.model.max_norm = arch, [16], C
    config.model.conv_channels, config.model.conv_kernel = [4], 3
    config.optim.epochs, config.optim.lr, config.optim.batch_size = 2, 1.0, 200
    train(config, tmp_path / "run", dataset=digits)

    steps_per_epoch = -(-len(digits.train) // 200)
    assert calls["steps"] == 2 * steps_per_epoch
    assert calls["projected"] > 0  # the bound was really hit, so the check above is not vacuous


def test_linear_rows_inside_the_ball_are_untouched_and_rows_outside_land_on_it() -> None:
    layer = nn.Linear(3, 4)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, 0.2, 0.3], [3.0, -4.0, 0.0], [0.0, 0.999, 0.0], [1.0, 1.0, 1.0]]))
    before = layer.weight.detach().clone()
    MaxNorm([layer], [1.0])()
    after = layer.weight.detach()
    inside = _unit_norms(before) <= 1.0
    assert inside.tolist() == [True, False, True, False]
    assert torch.equal(after[inside], before[inside])
    assert torch.allclose(_unit_norms(after[~inside]), torch.ones(2), rtol=1e-6)
    assert torch.allclose(after[~inside] / _unit_norms(after[~inside])[:, None],
                          before[~inside] / _unit_norms(before[~inside])[:, None], rtol=1e-6)


def test_projection_uses_rows_not_columns() -> None:
    # Row norms (5, 0.17) and column norms (3.0, 4.0, 0.1) differ: only row 0 must shrink.
    weight = torch.tensor([[3.0, 4.0, 0.0], [0.1, 0.1, 0.1]])
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(weight)
    MaxNorm([layer], [1.0])()
    assert torch.equal(layer.weight[1], weight[1])
    assert torch.allclose(layer.weight[0], weight[0] / 5.0)
    column_projected = weight * (1.0 / torch.linalg.vector_norm(weight, dim=0)).clamp(max=1.0)
    assert not torch.allclose(layer.weight.detach(), column_projected)


def test_conv_projects_each_output_channels_whole_filter() -> None:
    conv = nn.Conv2d(2, 3, 3)
    torch.manual_seed(0)
    with torch.no_grad():
        conv.weight.normal_(0.0, 0.05)  # channel filters with norm ≈ 0.2
        conv.weight[1] *= 100.0  # channel 1 far outside the ball
    before = conv.weight.detach().clone()
    MaxNorm([conv], [1.0])()
    after = conv.weight.detach()
    assert torch.equal(after[0], before[0]) and torch.equal(after[2], before[2])
    assert torch.allclose(_unit_norms(after[1:2]), torch.ones(1), rtol=1e-6)
    assert torch.allclose(after[1], before[1] / _unit_norms(before[1:2]), rtol=1e-6)
    # per input channel (the wrong axis) would also rescale channels 0 and 2
    per_input = before * (1.0 / torch.linalg.vector_norm(before, dim=(0, 2, 3), keepdim=True)).clamp(max=1.0)
    assert not torch.equal(per_input[0], before[0])


def test_unconstrained_output_layer_is_left_alone() -> None:
    hidden, output = nn.Linear(2, 2), nn.Linear(2, 2)
    with torch.no_grad():
        hidden.weight.fill_(10.0)
        output.weight.fill_(10.0)
    MaxNorm([hidden, output], [1.0, None])()
    assert torch.equal(output.weight, torch.full((2, 2), 10.0))
    assert torch.allclose(_unit_norms(hidden.weight), torch.ones(2), rtol=1e-6)
