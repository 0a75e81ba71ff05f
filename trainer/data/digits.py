"""scikit-learn's bundled 8×8 handwritten digits (1,797 examples, values 0..16; no download).

The examples are read straight from the ``digits.csv.gz`` file that the scikit-learn package
ships (64 pixel columns then the label), without importing scikit-learn itself: importing it
costs seconds, longer than training the demo's network for several epochs.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import logging
from pathlib import Path

import numpy as np

from dropnet.core.errors import DataError
from dropnet.trainer.data.dataset import Dataset, make_dataset
from dropnet.trainer.data.splits import holdout_splits

log = logging.getLogger(__name__)

SHAPE = (1, 8, 8)
VALUE_RANGE = (0.0, 16.0)
EXAMPLES = 1797


def digits_file() -> Path:
    """Path of the digits CSV inside the installed scikit-learn package."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the digits dataset needs the scikit-learn package, which is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DataError(f"scikit-learn is installed but its digits file {path} is missing")
    return path


def load_digits(test_size: float, val_size: int | None, seed: int) -> Dataset:
    """The digits with seeded, stratified test and validation hold-outs."""
    path = digits_file()
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    if table.shape != (EXAMPLES, 65):
        raise DataError(f"{path}: expected {EXAMPLES} rows of 64 pixels and a label, got shape {table.shape}")
    x = table[:, :-1].reshape(-1, *SHAPE)
    y = table[:, -1].astype(np.int64)
    splits = holdout_splits(x, y, test_size, val_size, seed, "digits")
    labels = tuple(str(c) for c in range(10))
    origin = f"scikit-learn {importlib.metadata.version('scikit-learn')} digits.csv.gz"
    dataset = make_dataset("digits", origin, splits, VALUE_RANGE, labels)
    log.info("loaded digits: %d train, %d val, %d test", *(len(s) for s in splits))
    return dataset
