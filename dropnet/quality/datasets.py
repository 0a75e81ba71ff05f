"""The labelled split a package is measured on, loaded with the trainer's data layer (dropnet.trainer.data).

A package exported from a training run records the run's config in ``source_run``; its data
config and seed give back exactly the run's splits, so "val" is the validation split the run held
out. ``data`` (a dataset name or a .npz/.csv file, as ``dropnet train --data`` takes it) replaces
the run's dataset, and is required for a package without a recorded run (your own model's).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from dropnet.core.errors import ConfigError, DataError
from dropnet.core.jsonfields import thawed
from dropnet.core.manifest import Manifest
from dropnet.core.outputs import Task
from dropnet.trainer.config import DataConfig, check_seed
from dropnet.trainer.data import load_dataset

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DEFAULT_SEED = 0
"""The seed of the hold-outs of a dataset without its own split, for a package without a recorded run."""


def package_split(
    manifest: Manifest, split: str, data: str | None = None, data_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(x float32 [N, *shape], y int64 [N], description) of ``split`` of the package's data.

    The description is the dataset's (name, origin, split sizes, source files with their SHA-256)
    plus the split, the seed of its hold-outs and the data config used.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {list(SPLITS)}, got {split!r}")
    where = f"{manifest.name} version {manifest.version}"
    if manifest.task is not Task.CLASSIFICATION:
        raise DataError(
            f"{where} is a {manifest.task.value} package; expected a classification package (dropnet's datasets "
            "hold class labels)"
        )
    config, seed = _data_config(manifest, where, data, data_dir)
    dataset = load_dataset(config, seed)
    classes = len(manifest.classes)
    if dataset.spec.shape != manifest.input.shape or dataset.spec.num_classes != classes:
        raise DataError(
            f"dataset {config.name!r} has examples of shape {list(dataset.spec.shape)} in {dataset.spec.num_classes} "
            f"classes; {where} takes shape {list(manifest.input.shape)} with {classes} classes; expected a dataset "
            "that matches the package"
        )
    part = getattr(dataset, split)
    if not len(part):
        raise DataError(f"dataset {dataset.name!r} has no {split} examples; expected a non-empty {split} split")
    log.info("%s: %d %s examples of %s", where, len(part), split, dataset.name)
    description = {**dataset.describe(), "split": split, "seed": seed, "config": config.to_dict()}
    return part.x, part.y, description


def _data_config(
    manifest: Manifest, where: str, data: str | None, data_dir: str | None
) -> tuple[DataConfig, int]:
    """The data config and hold-out seed: the recorded run's with ``data``/``data_dir`` applied, else ``data``'s."""
    run = manifest.source_run.get("config")
    if not isinstance(run, Mapping):
        if data is None:
            raise ConfigError(
                f"{where} records no training run (its manifest's source_run has no config), so its data is "
                "unknown; expected --data NAME|PATH (digits, mnist, or a .npz/.csv file, as `dropnet train --data` "
                "takes it)"
            )
        return DataConfig.from_dict({"name": data, "data_dir": data_dir}), DEFAULT_SEED
    raw = thawed(run)
    if not isinstance(raw.get("data"), dict):
        raise ConfigError(f"{where}: source_run.config.data is {raw.get('data')!r}; expected the run's data config")
    changes = {key: value for key, value in (("name", data), ("data_dir", data_dir)) if value is not None}
    return DataConfig.from_dict({**raw["data"], **changes}), check_seed(raw.get("seed", DEFAULT_SEED))
