"""The dataset types every loader returns, the input statistics measured on the train split, and the
check that the train split can teach every class."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dropnet.core.errors import DataError
from dropnet.trainer.data.sources import SourceFile
from dropnet.trainer.models import InputSpec

log = logging.getLogger(__name__)

_CHUNK_VALUES = 1 << 20
"""Values per chunk when measuring mean/std in float64 without a full-size float64 copy."""
_LISTED_CLASSES = 10
"""Classes a message names before it only counts the rest."""


@dataclass(frozen=True, eq=False)
class Split:
    """Examples and labels of one split (compared by identity: it holds arrays)."""

    x: np.ndarray
    """float32 [N, *shape], raw values (e.g. MNIST pixels 0..255)."""
    y: np.ndarray
    """int64 [N], class ids 0..C-1."""

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/validation/test splits and the network input they describe."""

    name: str
    train: Split
    val: Split
    """May hold 0 rows (validation disabled)."""
    test: Split
    spec: InputSpec
    """Shape, classes, and scalar mean/std measured on the train split only."""
    origin: str = ""
    """Where the data comes from, in words."""
    sources: tuple[SourceFile, ...] = ()
    """Files read, with their SHA-256 (empty for bundled data)."""

    def describe(self) -> dict[str, Any]:
        """JSON-able summary: name, origin, split sizes and source files with their SHA-256."""
        return {
            "name": self.name,
            "origin": self.origin,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "sources": [asdict(s) for s in self.sources],
        }


def make_dataset(
    name: str,
    origin: str,
    splits: tuple[Split, Split, Split],
    value_range: tuple[float, float],
    class_labels: tuple[str, ...],
    sources: tuple[SourceFile, ...] = (),
) -> Dataset:
    """Assemble a :class:`Dataset`, measuring the input's mean and std on the train split."""
    train, val, test = splits
    mean, std = _moments(train.x)
    if not std > 0:
        raise DataError(
            f"{name}: every value of the {len(train)} training examples equals {mean:g}; "
            "expected inputs that vary (a constant input cannot be standardised)"
        )
    spec = InputSpec(
        shape=tuple(int(d) for d in train.x.shape[1:]),
        num_classes=len(class_labels),
        mean=mean,
        std=std,
        value_range=(float(value_range[0]), float(value_range[1])),
        class_labels=class_labels,
    )
    return Dataset(name=name, train=train, val=val, test=test, spec=spec, origin=origin, sources=sources)


def check_classes_trainable(dataset: Dataset) -> None:
    """Refuse a dataset whose training split lacks a class that its validation or test split holds.

    Such a class is never learned, yet counted in the test error (a 2-example file trains on one
    class and tests on the other: 100% error). A class with no example in any split (a gap in the
    labels 0..C-1) is only warned about: the network has an output for it that is never trained.
    """
    train, val, test = dataset.train, dataset.val, dataset.test
    classes = dataset.spec.num_classes
    absent = np.flatnonzero(np.bincount(train.y, minlength=classes) == 0)
    if absent.size == 0:
        return
    held_out = np.union1d(val.y, test.y)
    left_out = absent[np.isin(absent, held_out)]
    if left_out.size:
        few = f"only {len(train)} training example(s) for {classes} classes; " if len(train) < classes else ""
        raise DataError(
            f"{dataset.name}: the training split holds no example of class(es) {_named(dataset, left_out)}, which the "
            f"validation or test split holds ({few}{len(train)} train / {len(val)} val / {len(test)} test examples); "
            "a class never seen in training cannot be learned. Expected at least one training example of every "
            "class: add examples, or hold out fewer (--test-size, --val-size)"
        )
    log.warning(
        "%s: no example of class(es) %s in any split (labels run 0..%d); the network has an output for each that is "
        "never trained", dataset.name, _named(dataset, absent), classes - 1,
    )


def _named(dataset: Dataset, classes: np.ndarray) -> str:
    labels = [dataset.spec.class_labels[c] for c in classes[:_LISTED_CLASSES].tolist()]
    more = f" and {classes.size - _LISTED_CLASSES} more" if classes.size > _LISTED_CLASSES else ""
    return f"{labels}{more}"


def _moments(x: np.ndarray) -> tuple[float, float]:
    """Scalar mean and (population) std over all values of ``x``, accumulated in float64."""
    flat = x.reshape(len(x), -1)
    step = max(1, _CHUNK_VALUES // max(1, flat.shape[1]))
    chunks = [flat[i : i + step] for i in range(0, len(flat), step)]
    mean = sum(float(c.sum(dtype=np.float64)) for c in chunks) / flat.size
    var = sum(float(np.square(c.astype(np.float64) - mean).sum()) for c in chunks) / flat.size
    return mean, var**0.5
