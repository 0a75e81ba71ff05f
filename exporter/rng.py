"""Counter-based dropout noise computed inside the graph from the ``seed`` input.

Why not ONNX's own randomness: onnxruntime's EliminateDropout pass deletes Dropout nodes whose
mask output is unused (even with training_mode=true), and RandomUniform & co. take their seed as
a static attribute while their state advances from run to run, so neither gives noise that is
reproducible from a per-request seed. Here every noise value is a pure function of (row seed,
dropout site, sample t, unit j), computed with 32-bit integer ops that wrap mod 2^32 in
onnxruntime and in numpy (onnx.reference) alike.

Scheme (:data:`RNG_SCHEME`), with fmix32 the MurmurHash3 finaliser (x ^= x>>16; x *= 0x85ebca6b;
x ^= x>>13; x *= 0xc2b2ae35; x ^= x>>16), a bijection of uint32 with full avalanche:

* row key: the row's int64 seed split into words lo, hi; k = fmix32(lo ^ fmix32(hi ^ HI_SALT)).
* site key: sk = fmix32(k ^ site_salt(s)), site_salt(s) = (s + 1)·SITE_STEP mod 2^32.
* sample index t: t0 + i for the i-th of the T samples of a run, t0 being the graph input
  ``first_sample`` (default 0), so a run of samples t0.. draws what a run from 0 draws there.
* values per word: a Bernoulli decision needs b bits, the fewest b <= 16 with p·2^b an integer
  (b = 1 for p = 0.5, 2 for 0.75; 16 for 0.8, where the keep rate round(p·2^16)/2^16 is within
  2^-17 = 7.6e-6 of p), so a word holds K = 32 // b decisions; a gaussian word holds K = 2
  normals. One bit per decision at p = 0.5 cuts the hash work 32-fold against one word per
  decision — the hash, not the GEMMs, was the cost to beat.
* a site of n units uses W = ceil(n/K) words per sample; word w of sample t is
  h = fmix32(((t·W + w)·GOLDEN mod 2^32) ^ sk), computed on [T, B, W] (the counter part on
  [T, 1, W] and shared by the rows).
* unit j = k·W + w takes field k of word w. Bernoulli: keep iff (h << k·b) < thr·2^(32-b)
  with thr = round(p·2^b), i.e. iff the field, read as a b-bit integer, is below thr (the shift
  is a wrapping multiply by 2^(k·b), one broadcast Mul for all K fields).
* gaussian: Box–Muller on the 16-bit halves u1 = (hi + ½)/2^16, u2 = (lo + ½)/2^16 gives
  z1 = r·cos θ (field 0) and z2 = r·sin θ (field 1); noise = 1 + σz with σ² = (1-p)/p. The
  16-bit uniforms cap |z| at √(2·ln 2^17) ≈ 4.85 (a two-sided tail mass of 1.2e-6). r/σ, cos θ
  and sin θ are read from float32 tables of the 2^16 half-word values (computed in float64),
  so every noise value is the same float32 wherever and however it is computed.

Independence: within a row and site the counters t·W + w are distinct for (t0+T)·W <= 2^32 and GOLDEN
is odd, so the fmix32 inputs are distinct and no hash word repeats; fmix32's avalanche makes the
words of neighbouring counters, and the bit fields of one word, look independent. Sites differ by
their salted keys, rows by their seeds: two distinct seeds share a row key with probability
2^-32, and for two different keys the words coincide only where (c·GOLDEN) ^ (c'·GOLDEN) equals
the keys' xor — about N²/2^32 scattered words for N words per row, never a shifted copy of a
whole stream (as adding the key to the counter would give).
A row's noise depends on its own seed only: not on its batch-mates, its position or the batch
size, which is what lets a server batch rows of different requests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dropnet.core.manifest import FIRST_SAMPLE_INPUT
from dropnet.exporter.onnx_graph import GraphBuilder

RNG_SCHEME = "dropnet-ctr-fmix32/1"
"""Name and version of the noise scheme; any change to the values it produces needs a new version."""
GOLDEN = 0x9E3779B9
FMIX_MULTIPLIERS = (0x85EBCA6B, 0xC2B2AE35)
HI_SALT = 0x5BD1E995
SITE_STEP = 0x27D4EB2F
HALF = 1 << 16
MAX_BITS = 16
WORD = 1 << 32
COUNTER_LIMIT = WORD
"""T·W (samples times words per site) must not exceed this, or counters repeat (mod 2^32)."""


def decision_bits(retain: float) -> int:
    """Bits per Bernoulli decision: the fewest b <= 16 with p·2^b an integer (exact), else 16."""
    return next((bits for bits in range(1, MAX_BITS) if (retain * (1 << bits)).is_integer()), MAX_BITS)


def keep_threshold(retain: float) -> int:
    """A decision keeps its unit when its b-bit field is below this; keep rate = threshold / 2^b."""
    bits = decision_bits(retain)
    return min(round(retain * (1 << bits)), 1 << bits)


def is_noiseless(retain: float, flavour: str) -> bool:
    """True when a site's noise is exactly 1 in this scheme (p = 1, or p rounds to 2^16/2^16)."""
    return retain >= 1.0 or (flavour != "gaussian" and keep_threshold(retain) == 1 << decision_bits(retain))


def values_per_word(retain: float, flavour: str) -> int:
    """Noise values one 32-bit hash word yields: 32 // b Bernoulli decisions, or 2 normals."""
    return 2 if flavour == "gaussian" else 32 // decision_bits(retain)


def words_per_sample(units: int, retain: float, flavour: str) -> int:
    """Hash words one sample of a site of ``units`` units uses."""
    return -(-units // values_per_word(retain, flavour))


class CounterNoise:
    """Builds the hash words of the dropout sites for the rows of one batch and T samples.

    The samples drawn are t0, t0+1, …, t0+T-1, with t0 the graph input :data:`FIRST_SAMPLE_INPUT`
    (int64 scalar): an overridable initializer holding 0, so a caller that does not feed it gets
    samples 0..T-1, and a run with t0 = k draws exactly the noise of samples k.. of a run from 0.
    That lets an engine run T samples in chunks (dropnet.server.predictor) with the masks of one run.
    """

    def __init__(self, g: GraphBuilder, seed: str, num_samples: str, rows: str) -> None:
        """``seed``: int64 [1] (one seed for the batch) or [B]; ``num_samples``: scalar T; ``rows``: scalar B.

        Adds the initializer :data:`FIRST_SAMPLE_INPUT`; the graph must list :attr:`first_sample_input`
        among its inputs to make it overridable.
        """
        self._g = g
        g.initializers.append(numpy_helper.from_array(np.array(0, dtype=np.int64), FIRST_SAMPLE_INPUT))
        end = g.op("Add", FIRST_SAMPLE_INPUT, num_samples)
        indices = g.op("Cast", g.op("Range", FIRST_SAMPLE_INPUT, end, g.i64(1)), to=TensorProto.UINT32)
        self._sample_index = g.op("Reshape", indices, g.i64([-1, 1, 1]))
        self._row_keys = g.op("Unsqueeze", self._keys(seed, rows), g.i64([0, 2]))

    @property
    def first_sample_input(self) -> onnx.ValueInfoProto:
        """The graph input of the first sample's index: int64 scalar, default 0 (its initializer)."""
        return helper.make_tensor_value_info(FIRST_SAMPLE_INPUT, TensorProto.INT64, [])

    def _keys(self, seed: str, rows: str) -> str:
        """uint32 [B] row keys; a [1] seed S stands for the row seeds S ^ (b << 32) (dropnet.core.seeding.row_seeds)."""
        g = self._g
        rows_1d = g.op("Reshape", rows, g.i64([1]))
        single = g.op("Equal", g.op("Shape", seed), g.i64([1]))
        # Any length but 1 must be B: Reshape to [B] refuses other lengths (no silent broadcast).
        flat = g.op("Reshape", seed, g.op("Where", single, g.i64([1]), rows_1d))
        seeds = g.op("Expand", flat, rows_1d)
        stride = g.op("Where", single, g.i64([1 << 32]), g.i64([0]))
        offsets = g.op("Mul", g.op("Range", g.i64(0), rows, g.i64(1)), stride)
        row_seeds = g.op("BitwiseXor", seeds, offsets)
        low = g.op("Cast", row_seeds, to=TensorProto.UINT32)
        unsigned = g.op("Cast", row_seeds, to=TensorProto.UINT64)
        shifted = g.op("BitShift", unsigned, g.const(np.uint64(32)), direction="RIGHT")
        high = g.op("Cast", shifted, to=TensorProto.UINT32)
        # k = fmix32(lo ^ fmix32(hi ^ HI_SALT)); returned as the pre-image z of k under xorshift16 (see _fmix_body).
        inner = _fmix_body(g, _xorshift(g, g.op("BitwiseXor", high, g.u32(HI_SALT)), 16))
        return _fmix_body(g, g.op("BitwiseXor", _xorshift(g, low, 16), inner))

    def words(self, counts: Mapping[int, int]) -> dict[int, str]:
        """uint32 [T, B, count] per site ``site: count``: word w of sample t of row b at that site.

        The sites' words are hashed side by side, [T, B, Σ count], by one chain of nodes and then
        sliced apart: onnxruntime's cost is per node as much as per element at these sizes.
        """
        if not counts:
            return {}
        g = self._g
        sites, widths = list(counts), list(counts.values())
        salts = np.array([((site + 1) * SITE_STEP) % WORD for site in sites], dtype=np.uint32)
        # Row and site keys are kept as their pre-images under xorshift16 (z with key = z ^ (z >> 16)):
        # xorshift16 is linear over xor and its own inverse on uint32, so fmix32's first step on
        # key ^ salt is z ^ xorshift16(salt), and on counter ^ site_key it is xorshift16(counter) ^ z.
        site_keys = _fmix_body(g, g.op("BitwiseXor", self._row_keys, g.const(_xorshift16(salts), "site_salts")))
        if len(sites) > 1:
            columns = np.repeat(np.arange(len(sites)), widths)
            site_keys = g.op("Gather", site_keys, g.const(columns, "word_sites"), axis=2)  # [1, B, Σ count]
        # Counter of word w of sample t at a site of W words: (t·W + w)·GOLDEN, as t·(W·GOLDEN) + w·GOLDEN.
        steps = np.repeat(np.array(widths, dtype=np.uint64) * GOLDEN % WORD, widths).astype(np.uint32)
        offsets = np.concatenate([np.arange(w, dtype=np.uint64) * GOLDEN % WORD for w in widths]).astype(np.uint32)
        sample_base = g.op("Mul", self._sample_index, g.const(steps, "word_steps"))
        counters = g.op("Add", sample_base, g.const(offsets, "word_offsets"))  # [T, 1, Σ count]
        words = _xorshift(g, _fmix_body(g, g.op("BitwiseXor", _xorshift(g, counters, 16), site_keys)), 16)
        if len(sites) == 1:
            return {sites[0]: words}
        ends = np.cumsum(widths)
        return {
            site: g.op("Slice", words, g.i64([end - width]), g.i64([end]), g.i64([2]))
            for site, width, end in zip(sites, widths, ends)
        }


def site_noise(g: GraphBuilder, words: str, flavour: str, retain: float, units: int) -> tuple[str, int]:
    """A site's noise [T, B, units] from its hash ``words``, and its element type: the gaussian
    flavour's float multiplier, or every other flavour's bool keep mask (its scaling is the caller's)."""
    if flavour == "gaussian":
        return gaussian_noise(g, words, retain, units), TensorProto.FLOAT
    return keep_mask(g, words, retain, units), TensorProto.BOOL


def _fmix_body(g: GraphBuilder, x: str) -> str:
    """fmix32 without its first and last step x ^= x >> 16: (x·M1 ^ (x·M1 >> 13))·M2 mod 2^32.

    The chains in :class:`CounterNoise` call this rather than a whole fmix32: x ^ (x >> 16) is
    linear over xor and its own inverse on uint32, so a key is carried as its pre-image z (key =
    z ^ (z >> 16)) and the next fmix32's first step on key ^ v is z ^ v ^ (v >> 16). That drops 8
    small key nodes and moves the words' first xorshift onto the counters, [T, 1, W], shared by the
    B rows (onnxruntime's BitShift and BitwiseXor cost ~3-4x a Mul per element). Bit-identical.
    """
    x = g.op("Mul", x, g.u32(FMIX_MULTIPLIERS[0]))
    return g.op("Mul", _xorshift(g, x, 13), g.u32(FMIX_MULTIPLIERS[1]))


def _xorshift16(values: np.ndarray) -> np.ndarray:
    """x ^ (x >> 16) on uint32 constants (numpy)."""
    return values ^ (values >> np.uint32(16))


def _xorshift(g: GraphBuilder, x: str, shift: int) -> str:
    return g.op("BitwiseXor", x, g.op("BitShift", x, g.u32(shift), direction="RIGHT"))


def keep_mask(g: GraphBuilder, words: str, retain: float, units: int) -> str:
    """bool [T, B, units]: Bernoulli(p) keep decisions, 32 // b per word (see the module docstring)."""
    bits = decision_bits(retain)
    fields = 32 // bits
    count = -(-units // fields)
    # Unit k·W + w is field k of word w: the words tiled K times, [T, B, K·W], each copy times 2^(k·b)
    # (a wrapping multiply moving field k to the top bits) and compared with the threshold's top bits.
    shifts = np.repeat(np.array([1 << (bits * k) for k in range(fields)], dtype=np.uint32), count)
    shifted = g.op("Mul", g.op("Tile", words, g.i64([1, 1, fields])), g.const(shifts, "field_shifts"))
    keep = g.op("Less", shifted, g.u32(keep_threshold(retain) << (32 - bits)))
    return _first_units(g, keep, units, fields)


def gaussian_noise(g: GraphBuilder, words: str, retain: float, units: int) -> str:
    """float [T, B, units]: 1 + σ·N(0, 1) with σ² = (1 - p)/p, by Box–Muller on the 16-bit halves.

    The half words index tables of sqrt(-2 ln u1), cos 2πu2 and sin 2πu2 (:func:`box_muller_tables`),
    so each value is a pure function of its word: onnxruntime's Log and Cos kernels round an
    element differently in their vectorised body and their scalar tail, which made a value depend
    on its position in the tensor (on T, B and the thread split), not only on its word.
    """
    high = g.op("Cast", g.op("BitShift", words, g.u32(16), direction="RIGHT"), to=TensorProto.INT64)
    low = g.op("Cast", g.op("BitwiseAnd", words, g.u32(HALF - 1)), to=TensorProto.INT64)
    tables = {name: _shared_table(g, name, values) for name, values in box_muller_tables().items()}
    sigma = g.f32(math.sqrt((1.0 - retain) / retain))
    radius = g.op("Mul", g.op("Gather", tables["box_muller_radius"], high, axis=0), sigma)
    fields = [g.op("Mul", radius, g.op("Gather", tables[name], low, axis=0))
              for name in ("box_muller_cos", "box_muller_sin")]
    return _first_units(g, g.op("Add", g.op("Concat", *fields, axis=-1), g.f32(1.0)), units, 2)


def box_muller_tables() -> dict[str, np.ndarray]:
    """float32 [2^16] each, computed in float64 and rounded once: sqrt(-2 ln u) at u = (h + ½)/2^16,
    and cos 2πu, sin 2πu at u = (l + ½)/2^16."""
    u = (np.arange(HALF, dtype=np.float64) + 0.5) / HALF
    return {
        "box_muller_radius": np.sqrt(-2.0 * np.log(u)).astype(np.float32),
        "box_muller_cos": np.cos(2.0 * math.pi * u).astype(np.float32),
        "box_muller_sin": np.sin(2.0 * math.pi * u).astype(np.float32),
    }


def _shared_table(g: GraphBuilder, name: str, values: np.ndarray) -> str:
    """The initializer ``name`` holding ``values``, added once per graph (every gaussian site reads it)."""
    if not any(tensor.name == name for tensor in g.initializers):
        g.initializers.append(numpy_helper.from_array(values, name))
    return name


def _first_units(g: GraphBuilder, values: str, units: int, per_word: int) -> str:
    """Drop the surplus values of the last words when ``units`` is not a multiple of ``per_word``."""
    if units % per_word == 0:
        return values
    return g.op("Slice", values, g.i64([0]), g.i64([units]), g.i64([-1]))
