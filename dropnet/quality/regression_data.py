"""The labelled rows a regression package is measured on: a user's ``.npz`` with arrays ``x`` and ``y``.

dropnet's datasets hold class labels, so a regression package's report reads its evaluation rows
from a file (``dropnet report MODEL_DIR --data rows.npz``): ``x`` [N, *input.shape] and ``y``
[N, D] (or [N] for one target), every row used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dropnet.core.arrayfiles import array_names, read_npz
from dropnet.core.errors import ConfigError, DataError, DropnetError
from dropnet.core.manifest import Manifest
from dropnet.server.validation import as_batch
from dropnet.trainer.data.sources import read_source

EXPECTED = "a .npz archive with arrays 'x' [N, *input shape] and 'y' [N, D] of regression targets"


def read_regression_data(manifest: Manifest, data: str | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(x [N, *shape] of the input's dtype, y float64 [N, D], description) of the ``.npz`` file ``data``."""
    if data is None or Path(data).suffix.lower() != ".npz":
        raise ConfigError(
            f"{manifest.name} version {manifest.version} is a regression package; expected --data PATH: {EXPECTED}, "
            f"got {data!r}"
        )
    path = Path(data).expanduser()
    raw, source = read_source(path, EXPECTED)

    def select(names: list[str]) -> list[str]:
        if not {"x", "y"} <= set(names):
            raise DataError(f"{path} holds arrays {array_names(names)}; expected {EXPECTED}")
        return ["x", "y"]

    x, y = read_npz(raw, path, EXPECTED, select)
    try:
        rows = as_batch(x, manifest.input)
    except DropnetError as exc:
        raise DataError(f"{path}: {exc}") from None
    targets = len(manifest.targets)
    shapes = {(len(rows), targets)} | ({(len(rows),)} if targets == 1 else set())
    if y.dtype.kind not in "iuf" or y.shape not in shapes:
        raise DataError(
            f"{path}: y is {y.dtype} {list(y.shape)}; expected numbers [{len(rows)}, {targets}] (one per target "
            f"{list(manifest.targets)})"
        )
    values = y.reshape(len(rows), targets).astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"{path}: y holds non-finite values; expected finite regression targets")
    description = {"name": path.name, "rows": len(rows), "sources": [vars(source)]}
    return rows, values, description
