"""Weight scaling vs Monte-Carlo model averaging on a trained run (the paper's Figure 11).

The deterministic test-time network (each dropout site replaced by its test-time scaling)
approximates the average prediction of the exponentially many thinned networks. Monte-Carlo
averaging instead samples k thinned networks per example — masks drawn while batch norm keeps
its running statistics — averages their softmax outputs and predicts the argmax. Every k of a
list is read off one seeded sequence of max(k) samples: the error at k uses the first k samples.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dropnet.core.errors import ConfigError, DataError
from dropnet.trainer.config import DataConfig
from dropnet.trainer.data import load_dataset
from dropnet.trainer.device import resolve_device
from dropnet.trainer.dropout import set_mc_sampling
from dropnet.trainer.loop import error_rate
from dropnet.trainer.models import InputSpec, dropout_layers
from dropnet.trainer.rundir import load_run, versions

logger = logging.getLogger(__name__)

EVALUATE_FORMAT = "dropnet-evaluate/1"
DEFAULT_MC_SAMPLES = (1, 2, 5, 10, 20, 50, 100)
"""Sample counts k compared by default, spanning the paper's Figure 11 axis."""
SPLITS = ("test", "val")
MC_CHUNK = 1000
"""Rows per forward pass of the Monte-Carlo evaluation."""


def evaluate(
    run_dir: str | Path,
    data_cfg: DataConfig | None = None,
    mc_samples: Iterable[int] = DEFAULT_MC_SAMPLES,
    seed: int = 0,
    split: str = "test",
    device: str = "auto",
    repeats: int = 1,
) -> dict[str, Any]:
    """Error of the weight-scaled network and of MC averaging over k samples, for each k in ``mc_samples``.

    ``data_cfg`` defaults to the run's own data config; its splits are drawn with the run's seed,
    so the run's test split is the one evaluated. Repeat r draws its masks from seed ``seed + r``;
    with ``repeats > 1`` each k also reports the standard deviation over repeats. Returns a
    JSON-able dict (format :data:`EVALUATE_FORMAT`). The caller's global torch RNG state is left as it was.
    """
    ks = sample_counts(mc_samples)
    _check_count("seed", seed, minimum=0)
    _check_count("repeats", repeats, minimum=1)
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {list(SPLITS)}, got {split!r}")
    run_dir = Path(run_dir)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # building the net draws init weights; leave the caller's RNG alone
        config, spec, model = load_run(run_dir)
    data_cfg = config.data if data_cfg is None else data_cfg
    dataset = load_dataset(data_cfg, config.seed)
    check_compatible(dataset.spec, spec, data_cfg.name, run_dir)
    part = getattr(dataset, split)
    if not len(part):
        raise DataError(f"dataset {dataset.name!r} has no {split} examples; expected a non-empty {split} split")
    target = resolve_device(device)
    model.to(target)
    x = torch.tensor(part.x, dtype=torch.float32, device=target)
    y = torch.tensor(part.y, dtype=torch.int64, device=target)
    loaded = time.perf_counter()

    weight_scaling = error_rate(model, x, y)
    scaled = time.perf_counter()
    seeds = [seed + r for r in range(repeats)]
    runs = [mc_errors(model, x, y, ks, s, spec.num_classes) for s in seeds]
    finished = time.perf_counter()
    logger.info(
        "%s: weight scaling %.2f%%, MC k=%d %.2f%% on %d %s examples (%s)",
        run_dir, 100 * weight_scaling, ks[-1], 100 * runs[0][ks[-1]], len(part), split, target,
    )

    mc = []
    for k in ks:
        errors = [run[k] for run in runs]
        entry: dict[str, Any] = {"k": k, "error": statistics.fmean(errors)}
        if repeats > 1:
            entry.update(std=statistics.stdev(errors), errors=errors)
        mc.append(entry)
    sites = dropout_layers(model)
    return {
        "format": EVALUATE_FORMAT,
        "run_dir": str(run_dir),
        "dataset": {**dataset.describe(), "seed": config.seed},
        "split": split,
        "examples": len(part),
        "seed": seed,
        "repeats": repeats,
        "seeds": seeds,
        "device": str(target),
        "dropout": {"flavour": config.model.flavour, "retain": [m.retain for m in sites]},
        "weight_scaling_error": weight_scaling,
        "mc": mc,
        "seconds": {"load": loaded - started, "weight_scaling": scaled - loaded, "mc": finished - scaled},
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


@torch.inference_mode()
def mc_errors(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, ks: tuple[int, ...], seed: int, num_classes: int
) -> dict[int, float]:
    """Error of MC averaging over the first k of max(``ks``) sampled thinned networks, for each k in ``ks``.

    Masks come from ``torch.manual_seed(seed)`` inside a forked RNG state, so the caller's global
    RNG is untouched. Samples are drawn sample-major (all rows of sample 1, then of sample 2, ...),
    so the first k samples do not depend on max(``ks``).
    """
    model.eval()
    wanted = set(ks)
    prob_sum = torch.zeros(len(y), num_classes, dtype=torch.float64, device=x.device)
    errors: dict[int, float] = {}
    set_mc_sampling(model, True)
    try:
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(seed)
            for k in range(1, max(ks) + 1):
                for start in range(0, len(y), MC_CHUNK):
                    logits = model(x[start : start + MC_CHUNK])
                    prob_sum[start : start + MC_CHUNK] += torch.softmax(logits.double(), dim=1)
                if k in wanted:
                    errors[k] = (prob_sum.argmax(dim=1) != y).sum().item() / len(y)
    finally:
        set_mc_sampling(model, False)
    return errors


def sample_counts(values: Iterable[int]) -> tuple[int, ...]:
    """The distinct sample counts k of ``values``, sorted; :class:`ConfigError` unless all are integers >= 1."""
    values = list(values)
    if not values:
        raise ConfigError("the list of MC sample counts is empty; expected positive integers, e.g. 1,10,100")
    for k in values:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"MC sample counts must be integers >= 1, got {k!r} in {values}")
    return tuple(sorted(set(values)))


def check_compatible(data: InputSpec, run: InputSpec, name: str, run_dir: Path) -> None:
    """Refuse a dataset whose example shape or class count differs from what the run was trained on."""
    if data.shape != run.shape or data.num_classes != run.num_classes:
        raise DataError(
            f"dataset {name!r} has examples of shape {data.shape} in {data.num_classes} classes, but {run_dir} "
            f"was trained on shape {run.shape} with {run.num_classes} classes; expected a dataset that matches"
        )


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
