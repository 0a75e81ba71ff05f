"""Out-of-distribution input sets from files (``dropnet report --ood PATH``).

A PATH is a directory of gzipped IDX image files (as MNIST and Fashion-MNIST are distributed), a
``.npz`` (array ``x``, or its only array, of rows [N, *input.shape]; a ``.npy`` of such rows is
taken too) or a directory of grayscale ``.png`` images (one input each). IDX and PNG pixels 0..255
are mapped onto the package's ``input.value_range``, as ``dropnet predict --input image.png`` does;
array files must already hold values of the package's input, within its value range. A set is
named by the path's stem.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dropnet.core.errors import DataError, DropnetError, quoted_list
from dropnet.core.manifest import InputSpec
from dropnet.quality.shifts import image_geometry
from dropnet.server.input_files import read_input_file
from dropnet.server.validation import as_batch
from dropnet.trainer.data.idx import IMAGES_MAGIC, gunzip, parse_idx
from dropnet.trainer.data.sources import read_source

log = logging.getLogger(__name__)

IDX_PATTERN = "*idx3-ubyte.gz"
"""Gzipped IDX image files ([count, rows, cols] uint8)."""
IDX_PREFERRED = "t10k-images-idx3-ubyte.gz"
"""The file taken from a directory holding several IDX image files (the MNIST-style test images)."""
ARRAY_SUFFIXES = (".npz", ".npy")
EXPECTED = (
    "a directory of gzipped IDX image files (*-idx3-ubyte.gz), a .npz archive with an array 'x' of input rows, "
    "or a directory of grayscale .png images"
)


@dataclass(frozen=True)
class OodSet:
    """Inputs from outside the training distribution: rows [N, *input.shape] of the input's dtype."""

    name: str
    description: str
    x: np.ndarray
    source: dict[str, object]
    """Where the rows came from: path, format, and the SHA-256 of an IDX file."""


def read_ood_sets(paths: Iterable[str | Path], spec: InputSpec, taken: Iterable[str] = ()) -> list[OodSet]:
    """Each path's :class:`OodSet`; a name already ``taken`` (or repeated) gets ``-2``, ``-3``, ... appended."""
    names = set(taken)
    sets = []
    for path in paths:
        found = read_ood(path, spec)
        name, number = found.name, 2
        while name in names:
            name, number = f"{found.name}-{number}", number + 1
        names.add(name)
        sets.append(OodSet(name, found.description, found.x, found.source))
    return sets


def read_ood(path: str | Path, spec: InputSpec) -> OodSet:
    """The rows stored at ``path`` (see the module docstring), checked against ``spec``'s shape and range."""
    path = Path(path)
    if path.is_dir():
        idx = sorted(path.glob(IDX_PATTERN))
        pngs = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
        if idx and pngs:
            raise DataError(f"{path} holds both IDX files and .png images; expected {EXPECTED}, not both")
        if idx:
            return _idx_set(path, idx, spec)
        if pngs:
            return _png_set(path, pngs, spec)
        raise DataError(f"{path} holds no IDX image file ({IDX_PATTERN}) and no .png image; expected {EXPECTED}")
    if path.suffix.lower() not in ARRAY_SUFFIXES:
        if not path.exists():
            raise DataError(f"OOD set {path} does not exist; expected {EXPECTED}")
        raise DataError(f"OOD set {path} has suffix {path.suffix!r}; expected {EXPECTED}")
    x = _checked(read_input_file(path, spec.shape, spec.value_range), spec, path)
    return OodSet(path.stem, f"{len(x)} rows of {path}", x, {"path": str(path), "format": path.suffix.lower()[1:]})


def _idx_set(directory: Path, files: list[Path], spec: InputSpec) -> OodSet:
    """The images of the directory's one IDX image file (or of its ``t10k-images-idx3-ubyte.gz``)."""
    preferred = [f for f in files if f.name == IDX_PREFERRED]
    if len(files) > 1 and not preferred:
        raise DataError(
            f"{directory} holds several IDX image files {quoted_list(f.name for f in files)}; expected one, "
            f"or one named {IDX_PREFERRED}"
        )
    path = (preferred or files)[0]
    raw, source = read_source(path, "a gzipped IDX image file")
    images = parse_idx(gunzip(raw, path), IMAGES_MAGIC, path)
    geometry = image_geometry(spec.shape)
    if geometry is None or geometry[0] != 1 or geometry[1:] != images.shape[1:]:
        raise DataError(
            f"{path} holds {images.shape[1]}×{images.shape[2]} images; the package takes inputs of shape "
            f"{list(spec.shape)}, so expected one-channel images of its size"
        )
    x = _checked(_scaled(images, spec).reshape(len(images), *spec.shape), spec, path)
    return OodSet(
        directory.name, f"{len(x)} IDX images of {path}", x,
        {"path": str(path), "format": "idx", "sha256": source.sha256},
    )


def _png_set(directory: Path, files: list[Path], spec: InputSpec) -> OodSet:
    """One input per .png image of ``directory`` (sorted by name), as ``dropnet predict`` reads an image."""
    rows = [read_input_file(path, spec.shape, spec.value_range) for path in files]
    x = _checked(np.stack(rows), spec, directory)
    return OodSet(directory.name, f"{len(x)} .png images of {directory}", x, {"path": str(directory), "format": "png"})


def _scaled(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Pixels 0..255 mapped linearly onto the input's value range (rounded for an integer input)."""
    low, high = spec.value_range
    values = low + pixels.astype(np.float64) / 255.0 * (high - low)
    return np.rint(values).astype(np.int64) if spec.is_integer else values


def _checked(x: np.ndarray, spec: InputSpec, path: Path) -> np.ndarray:
    """``x`` as rows [N, *spec.shape] of the input's dtype, refused naming ``path`` when it does not fit ``spec``."""
    if x.ndim != len(spec.shape) + 1:
        raise DataError(
            f"{path} holds an array of shape {list(x.shape)}; expected rows of the package's input: "
            f"[N, {', '.join(map(str, spec.shape))}]"
        )
    try:
        rows = as_batch(x, spec)
    except DropnetError as exc:
        raise DataError(f"{path}: {exc}") from None
    low, high = spec.value_range
    smallest, largest = float(rows.min()), float(rows.max())
    if smallest < low or largest > high:
        raise DataError(
            f"{path} holds values in [{smallest:g}, {largest:g}]; expected values within the package's input "
            f"value_range [{low:g}, {high:g}]"
        )
    log.debug("read %d OOD rows from %s", len(rows), path)
    return rows
