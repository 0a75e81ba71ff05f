"""A numpy model of the in-graph noise (dropnet.exporter.rng), for the sample-level parity gate.

It recomputes, outside onnxruntime, the noise a row draws at a site for one sample, from the
row's int64 seed alone: uint32 hashing carried out in uint64 and masked to 32 bits, the bit
fields and the Box–Muller step in float32 in the graph's order of operations.
"""

from __future__ import annotations

import math

import numpy as np

from dropnet.exporter.rng import (
    FMIX_MULTIPLIERS,
    GOLDEN,
    HALF,
    HI_SALT,
    SITE_STEP,
    WORD,
    decision_bits,
    is_noiseless,
    keep_threshold,
    words_per_sample,
)
from dropnet.exporter.own.sites import SiteInfo, keep_scale

_MASK = np.uint64(WORD - 1)


def _fmix32(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    for shift, multiplier in zip((16, 13), FMIX_MULTIPLIERS):
        x = ((x ^ (x >> np.uint64(shift))) * np.uint64(multiplier)) & _MASK
    return x ^ (x >> np.uint64(16))


def site_words(seeds: np.ndarray, site: int, sample: int, count: int) -> np.ndarray:
    """uint64 [B, count] (values < 2^32): hash words of sample ``sample`` at site ``site`` per row seed."""
    unsigned = np.asarray(seeds, dtype=np.int64).astype(np.uint64)
    low, high = unsigned & _MASK, unsigned >> np.uint64(32)
    keys = _fmix32(low ^ _fmix32(high ^ np.uint64(HI_SALT)))
    site_keys = _fmix32(keys ^ np.uint64(((site + 1) * SITE_STEP) % WORD))
    counters = (np.arange(count, dtype=np.uint64) + np.uint64(sample * count)) * np.uint64(GOLDEN) & _MASK
    return _fmix32(counters[None, :] ^ site_keys[:, None])


def keep_mask(words: np.ndarray, retain: float, units: int) -> np.ndarray:
    """bool [B, units]: unit k·W + w keeps iff b-bit field k (from the top) of word w is below the threshold."""
    bits = decision_bits(retain)
    shifts = np.array([[32 - bits * (k + 1)] for k in range(32 // bits)], dtype=np.uint64)
    fields = (words[:, None, :] >> shifts) & np.uint64((1 << bits) - 1)
    return (fields < keep_threshold(retain)).reshape(len(words), -1)[:, :units]


def gaussian_noise(words: np.ndarray, retain: float, units: int) -> np.ndarray:
    """float32 [B, units]: 1 + σ·z by Box–Muller on the words' 16-bit halves (cos field, then sin)."""
    f32 = np.float32
    high = (words >> np.uint64(16)).astype(f32)
    low = (words & np.uint64(HALF - 1)).astype(f32)
    uniform = (high + f32(0.5)) * f32(1.0 / HALF)
    radius = np.sqrt(np.log(uniform) * f32(-2.0 * (1.0 - retain) / retain))
    angle = (low + f32(0.5)) * f32(2.0 * math.pi / HALF)
    normal = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return (normal + f32(1.0))[:, :units]


def site_noise(seeds: np.ndarray, site: SiteInfo, sample: int) -> np.ndarray:
    """float32 [B, units]: the multiplier the graph applies at ``site`` (keep mask·scale, or gaussian noise)."""
    call, units = site.call, site.units
    scale = np.float32(keep_scale(call))
    if is_noiseless(call.retain, call.flavour):
        return np.full((len(seeds), units), scale, np.float32)
    words = site_words(seeds, site.index, sample, words_per_sample(units, call.retain, call.flavour))
    if call.flavour == "gaussian":
        return gaussian_noise(words, call.retain, units)
    return np.where(keep_mask(words, call.retain, units), scale, np.float32(0.0))
