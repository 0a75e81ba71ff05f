"""Read prediction inputs from files: .npy, .npz (array ``x`` or its only array) and grayscale .png."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from dropnet.core.errors import DataError

SUFFIXES = (".npy", ".npz", ".png")


def read_input_file(path: str | Path, shape: tuple[int, ...], value_range: tuple[float, float]) -> np.ndarray:
    """The array stored in ``path``; a .png becomes one example of ``shape`` scaled to ``value_range``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _load_numpy(path)
    if suffix == ".npz":
        return _load_npz(path)
    if suffix == ".png":
        return read_png(path, shape, value_range)
    raise DataError(f"input file {path} has suffix {path.suffix!r}; expected one of {list(SUFFIXES)}")


def _load_numpy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array without pickled objects ({exc})") from None


def _load_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if "x" in names:
                return archive["x"]
            if len(names) == 1:
                return archive[names[0]]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz archive without pickled objects ({exc})") from None
    raise DataError(f"{path} holds arrays {names}; expected one named 'x' or a single array")


def png_geometry(shape: tuple[int, ...]) -> tuple[int, int]:
    """(height, width) of an image for an input of ``shape``: (1, H, W), (H, W) or a square (H·W,)."""
    if len(shape) == 3 and shape[0] == 1:
        return shape[1], shape[2]
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 1 and math.isqrt(shape[0]) ** 2 == shape[0]:
        return math.isqrt(shape[0]), math.isqrt(shape[0])
    raise DataError(f"a .png input needs a model input of shape (1, H, W), (H, W) or (N*N,); this model takes {shape}")


def read_png(path: Path, shape: tuple[int, ...], value_range: tuple[float, float]) -> np.ndarray:
    """A grayscale image as one example of ``shape``: resized to H×W, pixel 0..255 mapped onto ``value_range``."""
    from PIL import Image, UnidentifiedImageError  # Pillow only when a .png is given

    height, width = png_geometry(shape)
    try:
        with Image.open(path) as image:
            gray = image.convert("L")
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: image too large to read safely ({exc}); expected a small grayscale image") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    if gray.size != (width, height):
        shrinking = gray.width >= width and gray.height >= height
        gray = gray.resize((width, height), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)
    low, high = value_range
    pixels = np.asarray(gray, dtype=np.float32) / 255.0
    return (low + pixels * (high - low)).astype(np.float32).reshape(shape)
