"""The graph draws exactly the noise of the numpy model of the hash, which matches the independent one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dropnet.core.seeding import row_seeds
from dropnet.exporter.own import build_own_graphs
from dropnet.exporter.own.reference import site_noise
from dropnet.exporter.own.sites import Granularity, SiteCall, SiteInfo
from dropnet.trainer.dropout import Dropout as DropnetDropout
from tests.exporter.own.helpers import mc_feeds, run
from tests.exporter.test_rng import _gaussian, _keep

SEEDS = np.array([0, -5, 2**40 + 3, -(2**63)], np.int64)


def _site(units: int, retain: float, flavour: str, index: int = 2) -> SiteInfo:
    call = SiteCall("p", "Module", "dropout", retain, flavour, Granularity.ELEMENT)
    return SiteInfo(index, call, (1, units))


@pytest.mark.parametrize("retain", [0.5, 0.75, 0.9, 0.3])
def test_bernoulli_reference_matches_the_independent_model(retain: float) -> None:
    site = _site(37, retain, "inverted")
    for sample in (0, 3):
        expected = np.stack([_keep(int(s), 2, sample + 1, 37, retain)[sample] for s in SEEDS])
        np.testing.assert_array_equal(site_noise(SEEDS, site, sample), np.where(expected, np.float32(1 / retain), 0))


def test_gaussian_reference_matches_the_independent_model() -> None:
    site = _site(9, 0.6, "gaussian")
    expected = np.stack([_gaussian(int(s), 2, 3, 9, 0.6)[2] for s in SEEDS])
    np.testing.assert_allclose(site_noise(SEEDS, site, 2), expected, atol=2e-5)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (nn.Dropout(0.3), (5, 13)),
        (nn.Dropout2d(0.5), (5, 3, 2, 2)),
        (DropnetDropout(0.6, "gaussian"), (5, 7)),
        (DropnetDropout(0.75, "paper"), (5, 7)),
    ],
    ids=["dropout", "dropout2d", "gaussian", "paper"],
)
def test_samples_on_ones_are_the_reference_noise(layer: nn.Module, shape: tuple[int, ...]) -> None:
    """A site on the input of ones and nothing else: each sample is the noise itself."""
    module = nn.Sequential(layer, nn.Flatten()).eval()
    x = torch.ones(shape)
    graphs = build_own_graphs(module, x, task="regression")
    site = graphs.sites[0]
    samples = run(graphs.mc, mc_feeds(x, 3, [-5]))["samples"]
    for t in range(3):
        noise = site_noise(row_seeds(-5, shape[0]), site, t)
        if site.call.granularity is Granularity.CHANNEL:
            noise = np.repeat(noise, int(np.prod(shape[2:])), axis=1)
        np.testing.assert_allclose(samples[t], noise, atol=1e-6)  # bit-exact but for gaussian float rounding
