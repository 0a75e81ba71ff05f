"""MNIST from the four original IDX .gz files, in a user directory or a verified download cache.

Rule: files in the per-user cache must match the published SHA-256 (otherwise they are
downloaded again); files in a user-given directory are validated structurally (magic numbers,
lengths, counts, labels 0..9) and their SHA-256 is recorded in ``Dataset.describe()``.
Validation is the last ``val_size`` (default 10,000) of the 60,000 training examples.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from dropnet.core.errors import DataError
from dropnet.trainer.data.dataset import Dataset, Split, make_dataset
from dropnet.trainer.data.download import Fetch, ensure_cached, fetch_url
from dropnet.trainer.data.idx import IMAGES_MAGIC, LABELS_MAGIC, gunzip, parse_idx
from dropnet.trainer.data.sources import SourceFile, read_source
from dropnet.trainer.data.splits import tail_split

log = logging.getLogger(__name__)

FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
"""File name → published SHA-256."""
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = FILES
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
DEFAULT_VAL_SIZE = 10_000
NUM_CLASSES = 10
ORIGIN = "MNIST (LeCun, Cortes, Burges), original IDX files"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dropnet/mnist``, or ``~/.cache/dropnet/mnist`` when that is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dropnet" / "mnist"


def load_mnist(data_dir: str | None, val_size: int | None, fetch: Fetch = fetch_url) -> Dataset:
    """MNIST with the last ``val_size`` training examples as validation and t10k as test."""
    if data_dir is None:
        paths = ensure_cached(FILES, cache_dir(), MIRRORS, fetch)
    else:
        paths = _user_files(Path(data_dir).expanduser())
    sources: list[SourceFile] = []
    train_x, train_y = _read_pair(paths[TRAIN_IMAGES], paths[TRAIN_LABELS], sources)
    test_x, test_y = _read_pair(paths[TEST_IMAGES], paths[TEST_LABELS], sources)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"{paths[TEST_IMAGES]}: test images are {test_x.shape[2:]} pixels but the training "
            f"images are {train_x.shape[2:]}; expected equal image sizes"
        )
    val_size = DEFAULT_VAL_SIZE if val_size is None else val_size
    train, val = tail_split(train_x, train_y, val_size, f"MNIST training set {paths[TRAIN_IMAGES]}")
    labels = tuple(str(d) for d in range(NUM_CLASSES))
    dataset = make_dataset("mnist", ORIGIN, (train, val, Split(test_x, test_y)), (0.0, 255.0), labels, tuple(sources))
    log.info("loaded MNIST: %d train, %d val, %d test", len(train), len(val), len(dataset.test))
    return dataset


def _user_files(directory: Path) -> dict[str, Path]:
    if directory.exists() and not directory.is_dir():
        raise DataError(f"{directory} is not a directory; expected a directory holding the MNIST files {list(FILES)}")
    paths = {name: directory / name for name in FILES}
    missing = [name for name, path in paths.items() if not path.exists()]
    if missing:
        raise DataError(f"{directory}: missing MNIST file(s) {missing}; expected all of {list(FILES)} there")
    return paths


def _read_idx(path: Path, magic: int, sources: list[SourceFile]) -> np.ndarray:
    raw, source = read_source(path, "a gzipped IDX file of the MNIST distribution")
    sources.append(source)
    return parse_idx(gunzip(raw, path), magic, path)


def _read_pair(images_path: Path, labels_path: Path, sources: list[SourceFile]) -> tuple[np.ndarray, np.ndarray]:
    """float32 images [N, 1, rows, cols] and int64 labels [N] from one images/labels file pair."""
    images = _read_idx(images_path, IMAGES_MAGIC, sources)
    labels = _read_idx(labels_path, LABELS_MAGIC, sources)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            "expected one label per image"
        )
    if images.size == 0:
        raise DataError(
            f"{images_path}: holds no pixels (header dimensions {images.shape}); expected at least one image"
        )
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise DataError(
            f"{labels_path}: label {labels[bad[0]]} at index {bad[0]} ({bad.size} label(s) out of range); "
            f"expected digits 0..{NUM_CLASSES - 1}"
        )
    return images.astype(np.float32)[:, None], labels.astype(np.int64)
