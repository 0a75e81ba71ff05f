"""Greedy layer-wise pretraining: layer 1 on the data, each next layer on the previous layer's p(h | v).

Every layer is trained for ``pretrain.epochs`` epochs by SGD with momentum (``momentum_start``
for the first ``momentum_switch_epoch`` epochs, then ``momentum``) and weight decay on its
weights, in a seeded order of the training split, its samples drawn from one seeded generator.
Each epoch appends one record to ``metrics.jsonl`` and commits a checkpoint, so ``--resume``
continues mid-layer and mid-stack exactly as an uninterrupted run would have gone on.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dropnet.core.errors import ConfigError
from dropnet.core.fileio import atomic_write_bytes
from dropnet.trainer.device import resolve_device
from dropnet.trainer.loop import check_new_run_dir, stream_seed, diff_configs
from dropnet.trainer.metrics import append_record, read_records
from dropnet.trainer.pretrain.checkpoint import (
    Generators, Progress, load_checkpoint, restore_generators, restore_layer, save_checkpoint,
)
from dropnet.trainer.pretrain.config import PretrainConfig, PretrainSection
from dropnet.trainer.pretrain.dae import DenoisingAutoencoder
from dropnet.trainer.pretrain.inputs import resolve_visible, visible_map
from dropnet.trainer.pretrain.layer import Layer
from dropnet.trainer.pretrain.rbm import RBM
from dropnet.trainer.pretrain.rundir import (
    layer_file, load_config, load_layer, read_config, remove_interrupted_writes, save_layer, save_visible_map,
    update_config, write_config,
)
from dropnet.trainer.rundir import METRICS_FILE, reopen_config

if TYPE_CHECKING:
    from dropnet.trainer.data import Dataset

logger = logging.getLogger(__name__)

RESUMABLE_CHANGES = ("device",)
"""Config fields a resumed pretraining run may change."""
UP_CHUNK = 4096
"""Examples per chunk of the up pass that makes the next layer's data."""
_SHUFFLE_STREAM = 1
_SAMPLING_STREAM = 2


def pretrain(
    config: PretrainConfig, run_dir: Path, resume: bool = False, dataset: Dataset | None = None,
) -> dict[str, Any]:
    """Pretrain the stack ``config`` describes on the training split, write ``run_dir``, return the final metrics.

    A new run needs an empty or missing ``run_dir``; with ``resume`` the run continues from its
    checkpoint (``config`` must equal the run's own but for :data:`RESUMABLE_CHANGES`). ``dataset``
    defaults to ``load_dataset(config.data, config.seed)``.
    """
    config.validate()
    run_dir = Path(run_dir)
    device = resolve_device(config.device)
    if resume:
        _check_resumable(run_dir, config)
        remove_interrupted_writes(run_dir)
    else:
        check_new_run_dir(run_dir)
    if dataset is None:
        from dropnet.trainer.data import load_dataset

        dataset = load_dataset(config.data, config.seed)
    section = config.pretrain
    visible = visible_map(resolve_visible(section.visible, dataset.spec), dataset.train.x, dataset.spec)
    plan = layer_plan(section, len(visible.scale), visible.visible_type)
    generators = Generators(
        shuffle=torch.Generator().manual_seed(stream_seed(config.seed, _SHUFFLE_STREAM)),
        sampling=torch.Generator(device=device).manual_seed(stream_seed(config.seed, _SAMPLING_STREAM)),
    )
    if resume:
        progress, saved, records = _reopen(run_dir, config, dataset, generators)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, config, dataset.spec, dataset.describe(), plan)
        progress, saved, records = Progress(), None, []
    save_visible_map(run_dir, visible)  # the same bytes on every (re)start: a function of the training split

    data = visible(torch.from_numpy(dataset.train.x).to(device))
    logger.info(
        "pretraining %d %s layers %s on %s: %d examples, %s visible units, %d epochs per layer",
        len(plan), section.kind, section.hidden, device, len(data), visible.visible_type, section.epochs,
    )
    for index, entry in enumerate(plan):
        if saved is not None and (index, section.epochs) <= (progress.layer, progress.epochs_done):
            layer = load_layer(run_dir, index, entry).to(device)  # finished before the run was stopped
        else:
            layer = make_layer(section, entry).to(device)
            optimizer = _optimizer(layer, section)
            first_epoch = 0
            if saved is not None and index == progress.layer:
                restore_layer(saved, layer, optimizer)
                first_epoch = progress.epochs_done
            else:
                layer.reset_parameters(generators.sampling)
            for epoch in range(first_epoch, section.epochs):
                progress = _train_epoch(
                    run_dir, section, (index, epoch), layer, optimizer, data, generators, progress, records,
                )
        if index + 1 < len(plan):
            data = _up(layer, data)

    final = {
        "layers": [
            {"layer": index + 1, "recon_error": _last(records, index + 1)["recon_error"], "epochs": section.epochs}
            for index in range(len(plan))
        ],
        "seconds": progress.seconds,
    }
    update_config(run_dir, final_metrics=final)
    return final


def layer_plan(section: PretrainSection, features: int, visible_type: str) -> list[dict[str, Any]]:
    """One entry per layer, as config.json records it: kind, visible and hidden units, visible type, file."""
    sizes = [features, *section.hidden]
    return [
        {
            "layer": index + 1, "kind": section.kind, "visible": sizes[index], "hidden": sizes[index + 1],
            "visible_type": visible_type if index == 0 else "bernoulli", "file": layer_file(index),
        }
        for index in range(len(section.hidden))
    ]


def make_layer(section: PretrainSection, entry: dict[str, Any]) -> Layer:
    """An untrained layer of the section's kind with ``entry``'s sizes (weights still zero)."""
    if section.kind == "rbm":
        return RBM(entry["visible"], entry["hidden"], entry["visible_type"], cd_k=section.cd_k)
    return DenoisingAutoencoder(
        entry["visible"], entry["hidden"], entry["visible_type"], section.corruption, section.corruption_level,
    )


def train_epoch(
    layer: Layer, optimizer: torch.optim.Optimizer, data: torch.Tensor, batch_size: int, generators: Generators,
) -> float:
    """One pass over ``data`` in a shuffled order; returns the mean squared reconstruction error per unit."""
    layer.train()
    order = torch.randperm(len(data), generator=generators.shuffle).to(data.device)
    total = torch.zeros((), device=data.device)
    for start in range(0, len(data), batch_size):
        total += layer.train_step(data.index_select(0, order[start : start + batch_size]), generators.sampling)
        optimizer.step()
    return total.item() / data.numel()


def _train_epoch(
    run_dir: Path, section: PretrainSection, at: tuple[int, int], layer: Layer, optimizer: torch.optim.Optimizer,
    data: torch.Tensor, generators: Generators, progress: Progress, records: list[dict[str, Any]],
) -> Progress:
    """Train epoch ``at[1]`` (0-based) of the layer at index ``at[0]``, log it, save the layer when done, commit."""
    index, epoch = at
    started = time.perf_counter()
    momentum = section.momentum_start if epoch < section.momentum_switch_epoch else section.momentum
    for group in optimizer.param_groups:
        group["momentum"] = momentum
    error = train_epoch(layer, optimizer, data, section.batch_size, generators)
    if not math.isfinite(error):
        raise ConfigError(
            f"pretraining diverged in layer {index + 1}, epoch {epoch + 1}: the reconstruction error became {error}. "
            f"The learning rate {section.lr:g} is probably too high; try a lower --lr (e.g. {section.lr / 10:g})"
        )
    record = {
        "layer": index + 1, "epoch": epoch + 1, "recon_error": error, "lr": section.lr, "momentum": momentum,
        "seconds": time.perf_counter() - started,
    }
    append_record(Path(run_dir) / METRICS_FILE, record)
    records.append(record)
    logger.info(
        "layer %d/%d epoch %d/%d: reconstruction error %.5f per unit, momentum %.2f, %.1fs", index + 1,
        len(section.hidden), epoch + 1, section.epochs, error, momentum, record["seconds"],
    )
    progress = Progress(index, epoch + 1, progress.seconds + record["seconds"])
    if epoch + 1 == section.epochs:  # before the commit: a committed finished layer always has its file
        save_layer(run_dir, index, layer)
    save_checkpoint(run_dir, progress, layer, optimizer, generators)
    return progress


def _optimizer(layer: Layer, section: PretrainSection) -> torch.optim.SGD:
    """SGD with momentum; weight decay on the weights only."""
    return torch.optim.SGD(
        [
            {"params": [layer.weight], "weight_decay": section.weight_decay},
            {"params": [layer.hidden_bias, layer.visible_bias], "weight_decay": 0.0},
        ],
        lr=section.lr, momentum=section.momentum_start,
    )


@torch.no_grad()
def _up(layer: Layer, data: torch.Tensor) -> torch.Tensor:
    """p(h | v) for every row of ``data``: the next layer's data."""
    layer.eval()
    return torch.cat([layer.hidden_probs(data[start : start + UP_CHUNK]) for start in range(0, len(data), UP_CHUNK)])


def _last(records: list[dict[str, Any]], layer: int) -> dict[str, Any]:
    return [record for record in records if record["layer"] == layer][-1]


def _check_resumable(run_dir: Path, config: PretrainConfig) -> None:
    """Refuse to resume a run whose config differs from ``config`` beyond :data:`RESUMABLE_CHANGES`."""
    stored, _, _ = load_config(run_dir)
    differences = [
        f"{key}: the run has {old!r}, requested {new!r}"
        for key, (old, new) in diff_configs(stored.to_dict(), config.to_dict()).items()
        if key not in RESUMABLE_CHANGES
    ]
    if differences:
        raise ConfigError(
            f"cannot resume {run_dir} with a different config ({'; '.join(differences)}); resume with the run's own "
            f"settings (only {', '.join(RESUMABLE_CHANGES)} may change) or start a new run with another --out"
        )


def _reopen(
    run_dir: Path, config: PretrainConfig, dataset: Dataset, generators: Generators,
) -> tuple[Progress, dict[str, torch.Tensor] | None, list[dict[str, Any]]]:
    """Reopen a run to resume: refuse other data, record the config, drop stale final metrics, restore the
    generators; return the checkpoint's progress and tensors (a fresh start without one) and the kept records."""
    reopen_config(run_dir, read_config(run_dir), config.to_dict(), load_config(run_dir)[1], dataset.spec, "pretrained")
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is None:
        return Progress(), None, _keep_records(run_dir / METRICS_FILE, Progress())
    progress, saved = checkpoint
    restore_generators(saved, generators)
    return progress, saved, _keep_records(run_dir / METRICS_FILE, progress)


def _keep_records(path: Path, progress: Progress) -> list[dict[str, Any]]:
    """Keep the metrics records up to the checkpoint's layer and epoch (rewritten atomically); return them."""
    done = (progress.layer + 1, progress.epochs_done)
    kept = [record for record in read_records(path) if (record["layer"], record["epoch"]) <= done]
    atomic_write_bytes(path, "".join(json.dumps(record) + "\n" for record in kept).encode())
    return kept
