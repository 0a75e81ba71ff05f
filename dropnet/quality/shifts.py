"""Built-in distribution shifts of a package's test inputs, in the package's own input space.

Each shift maps rows ``x`` [N, *input.shape] to rows of the same shape, within the manifest's
``input.value_range``: rotations (images only), additive Gaussian noise (clipped to the range),
inverted intensities (``low + high - x``) and one random permutation of the pixel positions (the same
for every row). Random shifts draw from a generator seeded by the report's seed and the shift's name,
so a shift is reproducible on its own, whatever other shifts are asked for.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from dropnet.core.errors import ConfigError, quoted
from dropnet.core.manifest import InputSpec

KINDS: dict[str, float | None] = {"rotate": None, "noise": 0.5, "invert": None, "permute": None}
"""Shift kinds and the default of their parameter (None: no parameter, or for rotate: an angle is required)."""
PARAMETERS = {
    "rotate": "an angle in degrees, counter-clockwise",
    "noise": "the noise's standard deviation as a fraction of the value range (> 0)",
}
DEFAULT_SHIFTS = "rotate:45,rotate:90,noise:0.5,invert,permute"
"""The shifts a report uses unless told otherwise."""
NONE = "none"


@dataclass(frozen=True)
class Shift:
    """One kind of shift and its parameter (an angle for ``rotate``, a relative σ for ``noise``)."""

    kind: str
    parameter: float | None = None

    @property
    def name(self) -> str:
        """A short name: ``rotate-45``, ``noise-0.5``, ``invert``, ``permute``."""
        return self.kind if self.parameter is None else f"{self.kind}-{self.parameter:g}"

    @property
    def needs_image(self) -> bool:
        """Whether the shift needs an image input ([H, W], [C, H, W] or a flat square)."""
        return self.kind == "rotate"

    @property
    def is_random(self) -> bool:
        return self.kind in ("noise", "permute")

    def describe(self, spec: InputSpec, seed: int) -> str:
        """What the shift does to the inputs of ``spec``, in words (with its seed where random)."""
        low, high = spec.value_range
        if self.kind == "rotate":
            text = f"rotated by {self.parameter:g}° counter-clockwise (bilinear, outside filled with {low:g})"
        elif self.kind == "noise":
            text = f"plus Gaussian noise of σ = {self.parameter:g} × ({high:g} − {low:g}), clipped to [{low:g}, {high:g}]"
        elif self.kind == "invert":
            text = f"intensities inverted ({low:g} + {high:g} − x)"
        else:
            text = "pixel positions shuffled by one random permutation, the same for every input"
        return f"{text}, seed {seed}" if self.is_random else text


@dataclass(frozen=True)
class ShiftedSet:
    """The test inputs under one shift."""

    name: str
    description: str
    x: np.ndarray


def parse_shifts(text: str) -> tuple[Shift, ...]:
    """The shifts of a comma-separated list such as ``rotate:45,noise:0.3,invert``; ``none`` is no shift.

    A kind without its parameter takes the default of :data:`KINDS`; ``rotate`` needs an angle.
    """
    if text.strip().lower() == NONE:
        return ()
    shifts = []
    for item in (part.strip() for part in text.split(",")):
        kind, has_parameter, value = item.partition(":")
        if kind not in KINDS:
            raise ConfigError(
                f"unknown shift {quoted(item)}; expected one of {list(KINDS)} (e.g. {DEFAULT_SHIFTS}) or {NONE!r}"
            )
        shifts.append(Shift(kind, _parameter(kind, value if has_parameter else None, item)))
    names = [shift.name for shift in shifts]
    if len(set(names)) != len(names):
        raise ConfigError(f"shift list {quoted(text)} names a shift twice; expected each shift once")
    return tuple(shifts)


def _parameter(kind: str, value: str | None, item: str) -> float | None:
    if kind not in PARAMETERS:
        if value is not None:
            raise ConfigError(f"shift {quoted(item)}: {kind} takes no parameter; expected just {kind!r}")
        return None
    if value is None:
        if KINDS[kind] is None:
            raise ConfigError(f"shift {quoted(item)} needs {PARAMETERS[kind]}, e.g. {kind}:90")
        return KINDS[kind]
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or (kind == "noise" and number <= 0):
        raise ConfigError(f"shift {quoted(item)}: expected {PARAMETERS[kind]}, got {quoted(value)}")
    return number


def image_geometry(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(channels, height, width) of an image input of ``shape`` ([H, W], [C, H, W] or a flat square), else None."""
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    if len(shape) == 1 and shape[0] > 1 and math.isqrt(shape[0]) ** 2 == shape[0]:
        return 1, math.isqrt(shape[0]), math.isqrt(shape[0])
    return None


def shift_rng(seed: int, shift: Shift) -> np.random.Generator:
    """The generator of ``shift`` under report seed ``seed``: the same draws whatever else is shifted."""
    return np.random.default_rng([seed, zlib.crc32(shift.name.encode())])


def apply_shift(shift: Shift, x: np.ndarray, spec: InputSpec, seed: int) -> np.ndarray:
    """``x`` [N, *spec.shape] under ``shift``, in ``spec``'s dtype and within its value range."""
    if x.shape[1:] != spec.shape:
        raise ConfigError(f"shift {shift.name}: rows of shape {x.shape[1:]}, expected {spec.shape}")
    geometry = image_geometry(spec.shape)
    if shift.needs_image and geometry is None:
        raise ConfigError(
            f"shift {shift.name} needs an image input ([H, W], [C, H, W] or a flat square), not {spec.shape}"
        )
    low, high = spec.value_range
    values = x.astype(np.float64)
    if shift.kind == "rotate":
        shifted = _rotate(values, geometry, shift.parameter, low)
    elif shift.kind == "noise":
        noise = shift_rng(seed, shift).normal(0.0, shift.parameter * (high - low), size=values.shape)
        shifted = values + noise
    elif shift.kind == "invert":
        shifted = low + high - values
    else:
        shifted = _permute(values, geometry, shift_rng(seed, shift))
    shifted = np.clip(shifted, low, high)
    if spec.is_integer:
        shifted = np.rint(shifted)
    return shifted.astype(spec.dtype)


def _rotate(values: np.ndarray, geometry: tuple[int, int, int], angle: float, fill: float) -> np.ndarray:
    """Each image rotated counter-clockwise by ``angle`` degrees about its centre, size kept (np.rot90's sense)."""
    from scipy import ndimage  # scipy only when a rotation is asked for

    images = values.reshape(len(values), *geometry)
    rotated = ndimage.rotate(images, angle, axes=(3, 2), reshape=False, order=1, mode="constant", cval=fill)
    return rotated.reshape(values.shape)


def _permute(values: np.ndarray, geometry: tuple[int, int, int] | None, rng: np.random.Generator) -> np.ndarray:
    """The pixel positions (an image's H·W, shared by its channels; else all values) permuted alike in every row."""
    channels = 1 if geometry is None else geometry[0]
    flat = values.reshape(len(values), channels, -1)
    return flat[:, :, rng.permutation(flat.shape[2])].reshape(values.shape)


def shifted_sets(
    x: np.ndarray, spec: InputSpec, shifts: Iterable[Shift], seed: int
) -> tuple[list[ShiftedSet], list[str]]:
    """The sets of ``x`` under each shift that ``spec`` allows, and one line per shift skipped (why)."""
    sets, skipped = [], []
    for shift in shifts:
        if shift.needs_image and image_geometry(spec.shape) is None:
            skipped.append(f"{shift.name}: the input of shape {list(spec.shape)} is not an image")
            continue
        sets.append(ShiftedSet(shift.name, shift.describe(spec, seed), apply_shift(shift, x, spec, seed)))
    return sets, skipped
