"""scikit-learn's bundled 8×8 handwritten digits (1,797 examples, values 0..16; no download)."""

from __future__ import annotations

import logging

import numpy as np
import sklearn
from sklearn.datasets import load_digits as _sklearn_digits

from trainer.data.dataset import Dataset, make_dataset
from trainer.data.splits import holdout_splits

log = logging.getLogger(__name__)

SHAPE = (1, 8, 8)
VALUE_RANGE = (0.0, 16.0)


def load_digits(test_size: float, val_size: int | None, seed: int) -> Dataset:
    """The digits with seeded, stratified test and validation hold-outs."""
    bunch = _sklearn_digits()
    x = bunch.data.astype(np.float32).reshape(-1, *SHAPE)
    y = bunch.target.astype(np.int64)
    splits = holdout_splits(x, y, test_size, val_size, seed, "digits")
    labels = tuple(str(c) for c in bunch.target_names)
    dataset = make_dataset("digits", f"scikit-learn {sklearn.__version__} load_digits", splits, VALUE_RANGE, labels)
    log.info("loaded digits: %d train, %d val, %d test", *(len(s) for s in splits))
    return dataset
