"""The in-graph noise: bit-exact against an independent numpy model of the scheme, and statistically sound.

Statistical tolerances are 5 standard errors of the statistic for the number of draws tested.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dropnet.exporter.graphs import RNG_SCHEME, build_mc
from dropnet.exporter.rng import decision_bits, is_noiseless, keep_threshold, values_per_word
from dropnet.core.seeding import row_seeds
from tests.exporter.helpers import mc_feeds, network, rows, run, session

SAMPLES, ROWS = 200, 4
MASK32 = 0xFFFFFFFF


# --- an independent numpy model of RNG_SCHEME "dropnet-ctr-fmix32/1" (constants written out on purpose:
# --- changing any of them changes every mask, which needs a new RNG_SCHEME version and a new model here)
def _fmix32(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x85EBCA6B)) & np.uint64(MASK32)
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & np.uint64(MASK32)
    return x ^ (x >> np.uint64(16))


def _site_words(seed: int, site: int, samples: int, words: int) -> np.ndarray:
    """uint64 [samples, words] hash words of one row (values < 2^32)."""
    unsigned = int(seed) & 0xFFFFFFFFFFFFFFFF
    low, high = np.uint64(unsigned & MASK32), np.uint64(unsigned >> 32)
    key = _fmix32(low ^ _fmix32(high ^ np.uint64(0x5BD1E995)))
    site_key = _fmix32(key ^ np.uint64(((site + 1) * 0x27D4EB2F) & MASK32))
    counters = np.arange(samples * words, dtype=np.uint64).reshape(samples, words)
    return _fmix32(((counters * np.uint64(0x9E3779B9)) & np.uint64(MASK32)) ^ site_key)


def _keep(seed: int, site: int, samples: int, units: int, retain: float) -> np.ndarray:
    """bool [samples, units]: unit k·W + w keeps iff b-bit field k of word w is below round(p·2^b)."""
    bits = next((b for b in range(1, 16) if (retain * 2**b).is_integer()), 16)
    per_word = 32 // bits
    words = -(-units // per_word)
    h = _site_words(seed, site, samples, words)
    shifts = np.array([[32 - bits * (k + 1)] for k in range(per_word)], dtype=np.uint64)
    fields = (h[:, None, :] >> shifts) & np.uint64((1 << bits) - 1)  # [samples, K, W]
    return (fields < round(retain * 2**bits)).reshape(samples, -1)[:, :units]


def _gaussian(seed: int, site: int, samples: int, units: int, retain: float) -> np.ndarray:
    """float64 [samples, units]: Box–Muller on the 16-bit halves, cos then sin field."""
    words = -(-units // 2)
    h = _site_words(seed, site, samples, words)
    u1 = ((h >> np.uint64(16)).astype(np.float64) + 0.5) / 65536
    u2 = ((h & np.uint64(0xFFFF)).astype(np.float64) + 0.5) / 65536
    radius = np.sqrt(-2.0 * (1.0 - retain) / retain * np.log(u1))
    z = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)], axis=1)
    return 1.0 + z[:, :units]


def _masks(directory: Path, samples: int, seed: np.ndarray, x_rows: int, **fields: object) -> dict[str, np.ndarray]:
    model, spec = network(directory, **fields)
    proto = build_mc(model, spec, {}, expose_internals=True)
    return run(session(proto), **mc_feeds(rows(spec, x_rows), samples, seed))


def test_scheme_name() -> None:
    assert RNG_SCHEME == "dropnet-ctr-fmix32/1"


@pytest.mark.parametrize("seeds", [[-5, 2**40 + 3, 0], [7]], ids=["row-seeds", "one-seed"])
def test_bernoulli_masks_match_the_numpy_model_bit_for_bit(tmp_path: Path, seeds: list[int]) -> None:
    out = _masks(tmp_path, 5, np.array(seeds), 3, hidden=[20, 12], retain=[0.8, 0.5, 0.75])
    per_row = row_seeds(seeds[0], 3) if len(seeds) == 1 else seeds
    for site, units, retain in ((0, 64, 0.8), (1, 20, 0.5), (2, 12, 0.75)):
        expected = np.stack([_keep(int(s), site, 5, units, retain) for s in per_row], axis=1)
        np.testing.assert_array_equal(out[f"noise_{site}"], expected)


def test_gaussian_noise_matches_the_numpy_model(tmp_path: Path) -> None:
    out = _masks(tmp_path, 5, np.array([3, -(2**62)]), 2, hidden=[9], retain=[0.8, 0.5], flavour="gaussian")
    for site, units, retain in ((0, 64, 0.8), (1, 9, 0.5)):
        expected = np.stack([_gaussian(s, site, 5, units, retain) for s in (3, -(2**62))], axis=1)
        np.testing.assert_allclose(out[f"noise_{site}"], expected, atol=2e-5)


@pytest.mark.parametrize(
    "retain, bits, threshold", [(0.5, 1, 1), (0.75, 2, 3), (0.375, 3, 3), (0.8, 16, 52429), (0.3, 16, 19661)]
)
def test_decision_resolution(retain: float, bits: int, threshold: int) -> None:
    assert (decision_bits(retain), keep_threshold(retain)) == (bits, threshold)
    assert values_per_word(retain, "paper") == 32 // bits and values_per_word(retain, "gaussian") == 2
    assert abs(threshold / 2**bits - retain) <= 2**-17


def test_noiseless_sites() -> None:
    assert is_noiseless(1.0, "paper") and is_noiseless(1.0, "gaussian")
    assert is_noiseless(1 - 2**-18, "inverted")  # rounds to keep-all, within 2^-17 of p
    assert not is_noiseless(1 - 2**-18, "gaussian") and not is_noiseless(0.999, "paper")


@pytest.fixture(scope="module", params=[0.5, 0.75, 0.8, 0.3], ids=lambda p: f"p={p}")
def bernoulli(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[float, dict]:
    """Masks of a 64-250-10 net with both sites at retain p: T=200 samples of 4 rows (seeds 0..3)."""
    retain = request.param
    out = _masks(tmp_path_factory.mktemp("masks"), SAMPLES, np.arange(ROWS), ROWS, hidden=[250], retain=[retain, retain])
    return retain, out


def test_keep_rate_matches_p_per_site_and_per_bit_field(bernoulli: tuple[float, dict]) -> None:
    retain, out = bernoulli
    rate = keep_threshold(retain) / 2 ** decision_bits(retain)
    per_word = values_per_word(retain, "paper")
    for site in ("noise_0", "noise_1"):
        mask = out[site]
        assert abs(mask.mean() - rate) <= 5 * math.sqrt(rate * (1 - rate) / mask.size)
        words = -(-mask.shape[-1] // per_word)
        for field in range(per_word):  # a weak bit of the hash would show in its field
            draws = mask[..., field * words : (field + 1) * words]
            if draws.size:
                assert abs(draws.mean() - rate) <= 5 * math.sqrt(rate * (1 - rate) / draws.size)


def test_masks_are_independent_across_samples_rows_units_and_sites(bernoulli: tuple[float, dict]) -> None:
    retain, out = bernoulli
    first, second = out["noise_0"], out["noise_1"]
    words = -(-second.shape[-1] // values_per_word(retain, "paper"))
    pairs = {
        "consecutive samples": (second[:-1], second[1:]),
        "neighbouring rows": (second[:, :-1], second[:, 1:]),
        "neighbouring units": (second[..., :-1], second[..., 1:]),
        "fields of one word": (second[..., :words], second[..., words : 2 * words]),
        "two sites": (first, second[..., : first.shape[-1]]),
    }
    for name, (a, b) in pairs.items():
        _assert_independent(name, a.ravel(), b.ravel())


def test_adjacent_row_seeds_give_independent_masks(tmp_path: Path) -> None:
    seeds = np.array([1000, 1001, 1002, 1003])
    mask = _masks(tmp_path, SAMPLES, seeds, ROWS, hidden=[64], retain=[0.5, 0.5])["noise_1"]
    _assert_independent("rows with seeds s, s+1", mask[:, :-1].ravel(), mask[:, 1:].ravel())


def test_gaussian_noise_moments_and_independence(tmp_path: Path) -> None:
    retain = 0.5  # sigma^2 = (1-p)/p = 1
    noise = _masks(tmp_path, SAMPLES, np.arange(ROWS), ROWS, hidden=[250], retain=[retain, retain], flavour="gaussian")
    z = np.concatenate([noise["noise_0"].ravel(), noise["noise_1"].ravel()]).astype(np.float64) - 1.0
    n = z.size
    assert abs(z.mean()) <= 5 / math.sqrt(n)
    assert abs(z.var() - 1.0) <= 5 * math.sqrt(2 / n)
    assert abs(np.mean(z**4) - 3.0) <= 5 * math.sqrt(96 / n)  # normal kurtosis (Var z^4 = 105 - 9)
    assert np.abs(z).max() <= math.sqrt(2 * math.log(2**17)) + 1e-3  # the 16-bit uniforms' cap
    site = noise["noise_1"] - 1.0
    for name, (a, b) in {
        "consecutive samples": (site[:-1], site[1:]),
        "neighbouring rows": (site[:, :-1], site[:, 1:]),
        "cos and sin of one word": (site[..., :125], site[..., 125:]),
    }.items():
        r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert abs(r) <= 5 / math.sqrt(a.size), f"{name}: correlation {r:.4f}"


def _assert_independent(name: str, a: np.ndarray, b: np.ndarray) -> None:
    """Pearson correlation within 5/sqrt(n) of 0, and joint keep rate within 5 standard errors of q_a·q_b."""
    n = a.size
    r = np.corrcoef(a, b)[0, 1]
    assert abs(r) <= 5 / math.sqrt(n), f"{name}: correlation {r:.4f} over {n} pairs"
    both = a.mean() * b.mean()
    assert abs(np.mean(a & b) - both) <= 5 * math.sqrt(both * (1 - both) / n), f"{name}: joint keep rate"
