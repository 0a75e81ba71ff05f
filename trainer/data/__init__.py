"""The trainer's data layer: every source becomes a :class:`Dataset` of train/val/test splits.

Sources (``DataConfig.name``):

* ``"digits"`` (default) — scikit-learn's bundled 8×8 digits, shape (1, 8, 8), values 0..16,
  1,797 examples, no download. Test = ``test_size`` (stratified, seeded); validation =
  ``val_size`` or 1/6 of the rest (stratified, seeded).
* ``"mnist"`` — the four original IDX .gz files, shape (1, 28, 28), pixels 0..255, from
  ``data_dir`` (validated structurally) or a per-user cache (``$XDG_CACHE_HOME/dropnet/mnist``,
  else ``~/.cache/dropnet/mnist``) that is filled from public mirrors and checked against the
  published SHA-256. Validation = the last ``val_size`` (10,000) training examples; test = t10k.
* a path ending ``.npz`` (arrays ``x`` [N, ...] and ``y`` [N]) or ``.csv`` (label in the last
  column, optional header row) — labels are non-negative integers; splits as for digits.

Values stay raw (float32); the network standardises them with the train split's scalar mean/std,
recorded in ``Dataset.spec``. Bad input raises :class:`dropnet.core.errors.DataError`.
"""

from __future__ import annotations

from pathlib import Path

from dropnet.core.errors import DataError
from dropnet.trainer.config import DataConfig, check_seed
from dropnet.trainer.data.dataset import Dataset, Split
from dropnet.trainer.data.digits import load_digits
from dropnet.trainer.data.mnist import load_mnist
from dropnet.trainer.data.sources import SourceFile
from dropnet.trainer.data.userfile import SUFFIXES, load_user_file

__all__ = ["Dataset", "SourceFile", "Split", "load_dataset"]


def load_dataset(cfg: DataConfig, seed: int) -> Dataset:
    """Load and split the dataset ``cfg`` names; ``seed`` draws the hold-outs of unsplit sources."""
    cfg.validate()
    check_seed(seed)
    if cfg.name == "digits":
        return load_digits(cfg.test_size, cfg.val_size, seed)
    if cfg.name == "mnist":
        return load_mnist(cfg.data_dir, cfg.val_size)
    path = Path(cfg.name).expanduser()
    if path.suffix.lower() in SUFFIXES:
        return load_user_file(path, cfg.test_size, cfg.val_size, seed)
    if path.is_dir():
        raise DataError(
            f"{path} is a directory; expected 'digits', 'mnist' or a path to a .npz or .csv file (MNIST's IDX "
            f"files in a directory are read with --data mnist --data-dir {path})"
        )
    raise DataError(
        f"unknown dataset {cfg.name!r}; expected 'digits', 'mnist', or a path to a .npz or .csv file"
    )
