"""Built-in shifts: each one's defining property, its range and dtype, its seed, and the shift list's parsing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dropnet.core.errors import ConfigError
from dropnet.core.manifest import InputSpec
from dropnet.quality.shifts import (
    DEFAULT_SHIFTS, Shift, apply_shift, image_geometry, parse_shifts, shifted_sets,
)

DIGITS = InputSpec("x", (1, 8, 8), "float32", (0.0, 16.0))
RGB = InputSpec("x", (3, 5, 5), "float32", (-1.0, 1.0))
FLAT = InputSpec("x", (64,), "float32", (0.0, 255.0))
TABULAR = InputSpec("x", (5,), "float32", (-3.0, 3.0))
BYTES = InputSpec("x", (1, 4, 4), "uint8", (0.0, 255.0))


def _rows(spec: InputSpec, n: int = 20, seed: int = 0) -> np.ndarray:
    low, high = spec.value_range
    return np.random.default_rng(seed).uniform(low, high, (n, *spec.shape)).astype(spec.dtype)


def test_inverting_twice_gives_the_inputs_back() -> None:
    x = _rows(DIGITS)
    once = apply_shift(Shift("invert"), x, DIGITS, seed=0)
    np.testing.assert_allclose(once, 16.0 - x, atol=1e-6)
    np.testing.assert_allclose(apply_shift(Shift("invert"), once, DIGITS, seed=0), x, atol=1e-5)
    assert once.dtype == np.float32 and once.shape == x.shape


def test_the_permutation_is_one_bijection_of_pixel_positions_for_every_image() -> None:
    x = np.arange(6 * 64, dtype=np.float32).reshape(6, 1, 8, 8) % 17  # values repeat: not all distinct
    shifted = apply_shift(Shift("permute"), x, DIGITS, seed=3)
    for row, original in zip(shifted, x):
        np.testing.assert_array_equal(np.sort(row.ravel()), np.sort(original.ravel()))
    # recover the permutation from a row of distinct values: the same for every row
    distinct = np.arange(64, dtype=np.float32).reshape(1, 1, 8, 8) / 4
    order = (apply_shift(Shift("permute"), distinct, DIGITS, seed=3).ravel() * 4).astype(int)
    assert sorted(order) == list(range(64)) and order.tolist() != list(range(64))
    np.testing.assert_array_equal(shifted.reshape(6, 64), x.reshape(6, 64)[:, order])


def test_the_permutation_moves_the_channels_of_a_pixel_together() -> None:
    x = _rows(RGB, n=4)
    shifted = apply_shift(Shift("permute"), x, RGB, seed=1)
    pixels, moved = x.reshape(4, 3, 25), shifted.reshape(4, 3, 25)
    positions = [int(np.flatnonzero(pixels[0, 0] == value)[0]) for value in moved[0, 0]]
    np.testing.assert_array_equal(moved, pixels[:, :, positions])


def test_noise_has_the_asked_mean_and_spread_within_sampling_tolerances() -> None:
    sigma = 0.05  # of the range 0..16: 0.8, so clipping at 8 ± 8 (10 σ) never happens
    x = np.full((200, 1, 8, 8), 8.0, dtype=np.float32)
    noise = (apply_shift(Shift("noise", sigma), x, DIGITS, seed=0) - x).astype(np.float64).ravel()
    n, scale = noise.size, sigma * 16
    assert abs(noise.mean()) < 5 * scale / math.sqrt(n)
    assert abs(noise.std() - scale) < 5 * scale / math.sqrt(2 * n)
    # independent values: neighbouring pixels are uncorrelated (|r| < 5/sqrt(n))
    assert abs(np.corrcoef(noise[:-1], noise[1:])[0, 1]) < 5 / math.sqrt(n)


def test_noise_is_clipped_to_the_value_range() -> None:
    shifted = apply_shift(Shift("noise", 2.0), _rows(DIGITS), DIGITS, seed=0)
    assert shifted.min() == 0.0 and shifted.max() == 16.0


def test_rotating_by_90_degrees_is_np_rot90_of_each_image() -> None:
    for spec in (DIGITS, RGB, FLAT):
        x = _rows(spec, n=5)
        shifted = apply_shift(Shift("rotate", 90.0), x, spec, seed=0)
        channels, height, width = image_geometry(spec.shape)
        images = x.reshape(5, channels, height, width)
        np.testing.assert_allclose(shifted.reshape(images.shape), np.rot90(images, axes=(2, 3)), atol=1e-4)
    x = _rows(DIGITS, n=3)
    full_turn = apply_shift(Shift("rotate", 360.0), x, DIGITS, seed=0)
    np.testing.assert_allclose(full_turn, x, atol=1e-3)


def test_rotating_by_45_degrees_fills_the_corners_with_the_low_end() -> None:
    x = np.full((2, 1, 8, 8), 16.0, dtype=np.float32)
    shifted = apply_shift(Shift("rotate", 45.0), x, DIGITS, seed=0)
    assert shifted[0, 0, 0, 0] == 0.0 and shifted[0, 0, 4, 4] == pytest.approx(16.0)
    assert shifted.min() >= 0.0 and shifted.max() <= 16.0


def test_shifts_are_reproducible_from_their_seed_and_independent_of_the_others() -> None:
    x = _rows(DIGITS)
    for shift in (Shift("noise", 0.3), Shift("permute")):
        first = apply_shift(shift, x, DIGITS, seed=7)
        np.testing.assert_array_equal(first, apply_shift(shift, x, DIGITS, seed=7))
        assert not np.array_equal(first, apply_shift(shift, x, DIGITS, seed=8))
    alone, _ = shifted_sets(x, DIGITS, parse_shifts("noise:0.3"), seed=7)
    among, _ = shifted_sets(x, DIGITS, parse_shifts("permute,rotate:90,noise:0.3"), seed=7)
    np.testing.assert_array_equal(alone[0].x, among[2].x)
    assert "seed 7" in among[2].description and among[2].name == "noise-0.3"


def test_integer_inputs_stay_integers_within_their_range() -> None:
    x = np.random.default_rng(0).integers(0, 256, (10, 1, 4, 4)).astype(np.uint8)
    for shift in parse_shifts(DEFAULT_SHIFTS):
        shifted = apply_shift(shift, x, BYTES, seed=0)
        assert shifted.dtype == np.uint8 and shifted.shape == x.shape
    np.testing.assert_array_equal(apply_shift(Shift("invert"), x, BYTES, seed=0), 255 - x)


def test_rotations_need_an_image_and_the_other_shifts_do_not() -> None:
    assert image_geometry((1, 28, 28)) == (1, 28, 28) and image_geometry((28, 28)) == (1, 28, 28)
    assert image_geometry((784,)) == (1, 28, 28) and image_geometry((5,)) is None
    x = _rows(TABULAR)
    sets, skipped = shifted_sets(x, TABULAR, parse_shifts(DEFAULT_SHIFTS), seed=0)
    assert [s.name for s in sets] == ["noise-0.5", "invert", "permute"]
    assert skipped == [f"rotate-{angle}: the input of shape [5] is not an image" for angle in (45, 90)]
    with pytest.raises(ConfigError, match=r"rotate-90 needs an image input .* not \(5,\)"):
        apply_shift(Shift("rotate", 90.0), x, TABULAR, seed=0)


def test_the_shift_list_is_parsed_and_checked() -> None:
    names = [s.name for s in parse_shifts(DEFAULT_SHIFTS)]
    assert names == ["rotate-45", "rotate-90", "noise-0.5", "invert", "permute"]
    assert parse_shifts("none") == () and parse_shifts(" None ") == ()
    assert parse_shifts("noise") == (Shift("noise", 0.5),)
    assert parse_shifts("rotate:-30, noise:0.1") == (Shift("rotate", -30.0), Shift("noise", 0.1))
    for text, message in [
        ("blur", r"unknown shift 'blur'; expected one of \['rotate', 'noise', 'invert', 'permute'\]"),
        ("rotate", r"shift 'rotate' needs an angle in degrees"),
        ("rotate:left", r"shift 'rotate:left': expected an angle in degrees.*got 'left'"),
        ("noise:0", r"shift 'noise:0': expected the noise's standard deviation .*\(> 0\), got '0'"),
        ("noise:nan", r"got 'nan'"),
        ("invert:2", r"shift 'invert:2': invert takes no parameter"),
        ("invert,invert", r"names a shift twice"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_shifts(text)
