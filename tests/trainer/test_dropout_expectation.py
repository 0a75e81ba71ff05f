"""E_mask[training-time pre-activation] equals the test-time pre-activation, per flavour and dropout site."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dropnet.trainer.config import FLAVOURS, ModelConfig
from dropnet.trainer.dropout import Dropout
from dropnet.trainer.models import InputSpec, build_model

N_MASKS = 4000
SPEC = InputSpec(
    shape=(1, 8, 8), num_classes=10, mean=4.0, std=5.0, value_range=(0.0, 16.0),
    class_labels=tuple(str(d) for d in range(10)),
)
MODELS = {
    "mlp": ModelConfig(arch="mlp", hidden=[24, 16], retain_input=0.8, retain_hidden=0.5),
    "conv": ModelConfig(arch="conv", conv_channels=[4, 6], conv_kernel=3, hidden=[12], retain=[0.8, 0.7, 0.6, 0.5]),
}


def _sites(model: nn.Sequential) -> list[tuple[Dropout, nn.Sequential]]:
    """Each dropout layer with its consumer: the modules after it up to and including the next weight layer."""
    layers = list(model)
    sites = []
    for i, layer in enumerate(layers):
        if isinstance(layer, Dropout):
            end = next(j for j in range(i + 1, len(layers)) if isinstance(layers[j], (nn.Linear, nn.Conv2d)))
            sites.append((layer, nn.Sequential(*layers[i + 1 : end + 1])))
    return sites


def _site_inputs(model: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """The input each dropout layer sees in an eval-mode forward pass of ``x``."""
    seen: list[torch.Tensor] = []
    hooks = [d.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone())) for d, _ in _sites(model)]
    model.eval()
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


def _mask_statistics(
    drop: Dropout, consumer: nn.Module, h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean over N_MASKS masks of the training pre-activation, its tolerance, and the test-time pre-activation."""
    with torch.no_grad():
        drop.train()
        samples = consumer(drop(h.expand(N_MASKS, *h.shape[1:]))).flatten(1)
        drop.eval()
        reference = consumer(drop(h)).flatten(1)[0]
    mean = samples.mean(dim=0)
    tolerance = 5 * samples.std(dim=0) / math.sqrt(N_MASKS) + 1e-5 * (1 + reference.abs())
    return mean, tolerance, reference


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_mean_training_preactivation_equals_test_time_preactivation(arch: str, flavour: str) -> None:
    torch.manual_seed(0)
    cfg = MODELS[arch]
    model = build_model(ModelConfig(**{**cfg.__dict__, "flavour": flavour}), SPEC)
    x = torch.rand(1, *SPEC.shape) * 16
    sites = _sites(model)
    assert len(sites) == cfg.dropout_sites()
    for (drop, consumer), h in zip(sites, _site_inputs(model, x), strict=True):
        mean, tolerance, reference = _mask_statistics(drop, consumer, h)
        assert drop.flavour == flavour
        assert ((mean - reference).abs() <= tolerance).all(), (
            f"{flavour} site p={drop.retain}: max deviation {(mean - reference).abs().max():.4g} "
            f"beyond tolerance {tolerance.max():.4g}"
        )
        # The same tolerance rejects the other convention's test-time network: paper masks without
        # the test-time ×p, or the ×p applied to inverted/gaussian noise that is already unbiased.
        wrong_scale = 1.0 if flavour == "paper" else drop.retain
        with torch.no_grad():
            wrong = consumer(h * wrong_scale).flatten(1)[0]
        rejected = ((mean - wrong).abs() > tolerance).float().mean().item()
        assert rejected > 0.5, f"{flavour} site p={drop.retain}: a mix-up is rejected on only {rejected:.0%} of units"


@pytest.mark.parametrize("p", [0.5, 0.8])
def test_paper_mask_keep_rate_matches_retain_probability(p: float) -> None:
    torch.manual_seed(1)
    n = 200_000
    keep_rate = Dropout(p, "paper").sample_noise(torch.ones(n)).float().mean().item()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(keep_rate - p) <= 5 * sigma
    assert abs(keep_rate - (p + 0.01)) > 5 * sigma  # the bound is tight enough to see a 1-point bias
