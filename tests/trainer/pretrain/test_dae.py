"""Denoising autoencoders: the loss by hand on a 2 × 1 layer, the corruption's statistics, tied-weight gradients."""

from __future__ import annotations

import math

import pytest
import torch

from dropnet.trainer.pretrain.dae import DenoisingAutoencoder


def _tiny(visible_type: str, corruption: str = "mask", level: float = 0.0) -> DenoisingAutoencoder:
    dae = DenoisingAutoencoder(2, 1, visible_type, corruption, level).double()  # type: ignore[arg-type]
    with torch.no_grad():
        dae.weight.copy_(torch.tensor([[1.0, -1.0]], dtype=torch.float64))
        dae.hidden_bias.copy_(torch.tensor([0.5], dtype=torch.float64))
        dae.visible_bias.copy_(torch.tensor([0.2, -0.3], dtype=torch.float64))
    return dae


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_bernoulli_loss_is_the_cross_entropy_of_the_tied_reconstruction() -> None:
    dae, v = _tiny("bernoulli"), torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    h = _sigmoid(1.0 * 1 - 1.0 * 0 + 0.5)
    a1, a2 = h * 1.0 + 0.2, h * -1.0 - 0.3  # decoder: Wᵀh + b with the encoder's W
    expected = -math.log(_sigmoid(a1)) - math.log(1 - _sigmoid(a2))
    loss, reconstruction = dae.loss(v, v)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert reconstruction[0].tolist() == pytest.approx([_sigmoid(a1), _sigmoid(a2)], rel=1e-12)


def test_gaussian_loss_is_half_the_squared_error_of_a_linear_reconstruction() -> None:
    dae = _tiny("gaussian")
    v, corrupted = torch.tensor([[0.5, -2.0]], dtype=torch.float64), torch.tensor([[0.0, -2.0]], dtype=torch.float64)
    h = _sigmoid(0.0 - 1.0 * -2.0 + 0.5)  # encoded from the corrupted input, compared with the clean one
    expected = 0.5 * ((h + 0.2 - 0.5) ** 2 + (-h - 0.3 + 2.0) ** 2)
    loss, _ = dae.loss(v, corrupted)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("corruption", "level"), [("mask", 0.3), ("gaussian", 0.5)])
def test_corruption_has_the_configured_strength(corruption: str, level: float) -> None:
    n = 200_000
    dae = DenoisingAutoencoder(n, 1, "bernoulli", corruption, level)  # type: ignore[arg-type]
    v = torch.ones(1, n)
    noisy = dae.corrupt(v, torch.Generator().manual_seed(0))
    if corruption == "mask":
        dropped = (noisy == 0).double().mean().item()
        assert set(noisy.unique().tolist()) == {0.0, 1.0}
        assert abs(dropped - level) < 5 * math.sqrt(level * (1 - level) / n)
    else:
        noise = (noisy - v).double()
        assert abs(noise.mean().item()) < 5 * level / math.sqrt(n)
        assert abs(noise.std().item() - level) < 5 * level / math.sqrt(2 * n)


@pytest.mark.parametrize("visible_type", ["bernoulli", "gaussian"])
def test_train_step_gradient_of_the_tied_weights_matches_finite_differences(visible_type: str) -> None:
    dae = DenoisingAutoencoder(3, 2, visible_type, "mask", 0.3).double()  # type: ignore[arg-type]
    dae.reset_parameters(torch.Generator().manual_seed(1))
    with torch.no_grad():
        dae.weight.mul_(50)  # weights of order 0.5: both the encoder's and the decoder's use of W matter
    v = torch.rand(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    dae.train_step(v, torch.Generator().manual_seed(5))
    corrupted = dae.corrupt(v, torch.Generator().manual_seed(5))  # the corruption the step drew
    step = 1e-6
    for i in range(2):
        for j in range(3):
            with torch.no_grad():
                dae.weight[i, j] += step
                up = dae.loss(v, corrupted)[0].item()
                dae.weight[i, j] -= 2 * step
                down = dae.loss(v, corrupted)[0].item()
                dae.weight[i, j] += step
            assert dae.weight.grad[i, j].item() == pytest.approx((up - down) / (2 * step), rel=1e-6, abs=1e-9)
