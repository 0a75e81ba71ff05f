"""Read prediction inputs from files: .npy, .npz (array ``x`` or its only array) and grayscale .png.

The file is read once, as a regular file, and its arrays without numpy's pickle path
(:mod:`dropnet.core.arrayfiles`, shared with the trainer's data files); a .png is decoded by
Pillow's PNG reader only.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dropnet.core.arrayfiles import array_names, read_npy, read_npz, read_regular_file
from dropnet.core.errors import DataError

EXPECTED = {
    ".npy": "a .npy array of input rows, as numpy.save writes",
    ".npz": "a .npz archive holding an array 'x' (or a single array) of input rows, as numpy.savez writes",
    ".png": "a grayscale .png image",
}
"""What an input file of each suffix should hold, for the messages."""
SUFFIXES = tuple(EXPECTED)
ANY_EXPECTED = "a .npy array, a .npz archive (array 'x' or a single array) or a grayscale .png image"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_input_file(path: str | Path, shape: tuple[int, ...], value_range: tuple[float, float]) -> np.ndarray:
    """The array stored in ``path``; a .png becomes one example of ``shape`` scaled to ``value_range``."""
    path = Path(path)
    suffix = path.suffix.lower()
    expected = EXPECTED.get(suffix, ANY_EXPECTED)
    raw = read_regular_file(path, expected)
    if suffix == ".npy":
        return read_npy(raw, path, expected)
    if suffix == ".npz":
        return read_npz(raw, path, expected, lambda names: [_input_array(names, path)])[0]
    if suffix == ".png":
        return read_png(raw, path, shape, value_range)
    raise DataError(f"input file {path} has suffix {path.suffix!r}; expected one of {list(SUFFIXES)}")


def _input_array(names: Sequence[str], path: Path) -> str:
    """The array of an input archive: ``x``, else its only array."""
    if "x" in names:
        return "x"
    if len(names) == 1:
        return names[0]
    raise DataError(f"{path} holds arrays {array_names(names)}; expected one named 'x' or a single array")


def png_geometry(shape: tuple[int, ...]) -> tuple[int, int]:
    """(height, width) of an image for an input of ``shape``: (1, H, W), (H, W) or a square (H·W,)."""
    if len(shape) == 3 and shape[0] == 1:
        return shape[1], shape[2]
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 1 and math.isqrt(shape[0]) ** 2 == shape[0]:
        return math.isqrt(shape[0]), math.isqrt(shape[0])
    raise DataError(f"a .png input needs a model input of shape (1, H, W), (H, W) or (N*N,); this model takes {shape}")


def read_png(raw: bytes, path: Path, shape: tuple[int, ...], value_range: tuple[float, float]) -> np.ndarray:
    """The grayscale PNG image ``raw`` (read from ``path``) as one example of ``shape``: resized to H×W,
    pixel 0..255 mapped onto ``value_range``."""
    from PIL import Image, UnidentifiedImageError  # Pillow only when a .png is given

    height, width = png_geometry(shape)
    expected = EXPECTED[".png"]
    if not raw.startswith(PNG_SIGNATURE):
        raise DataError(
            f"{path}: not a PNG image (its {len(raw)} bytes do not start with the PNG signature); expected {expected}"
        )
    try:
        with Image.open(io.BytesIO(raw), formats=["PNG"]) as image:
            gray = image.convert("L")
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: image too large to read safely ({exc}); expected a small grayscale image") from None
    except UnidentifiedImageError:
        raise DataError(f"{path} is a damaged PNG image (its header cannot be read); expected {expected}") from None
    except (OSError, SyntaxError) as exc:  # Pillow's PNG reader raises SyntaxError for a damaged chunk
        raise DataError(f"{path} is a damaged or truncated PNG image ({exc}); expected {expected}") from None
    if gray.size != (width, height):
        shrinking = gray.width >= width and gray.height >= height
        gray = gray.resize((width, height), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)
    low, high = value_range
    pixels = np.asarray(gray, dtype=np.float32) / 255.0
    return (low + pixels * (high - low)).astype(np.float32).reshape(shape)

