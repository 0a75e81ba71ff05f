"""The training loop: SGD with momentum, dropout, max-norm after every step, best-by-validation weights.

The whole dataset lives on the device as tensors when it fits; each epoch shuffles with a seeded
permutation and slices batches by ``index_select`` (no DataLoader). The hot loop never
synchronises with the device: loss and error accumulate there and are read once per epoch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dropnet.core.errors import ConfigError, RunDirError
from dropnet.trainer.checkpoint import CHECKPOINT_DIR, TrainState, load_checkpoint, save_checkpoint
from dropnet.trainer.config import TrainConfig
from dropnet.trainer.data.dataset import check_classes_trainable
from dropnet.trainer.distributed import Replicas, training_processes
from dropnet.trainer.maxnorm import MaxNorm
from dropnet.trainer.metrics import Progress, append_record, plot_curves, truncate_records
from dropnet.trainer.models import build_model, weight_layers
from dropnet.trainer.pretrain.init import initialise
from dropnet.trainer.rundir import (
    CURVES_FILE, METRICS_FILE, WEIGHTS_FILE, cpu_state_dict, load_config, read_config,
    remove_interrupted_writes, reopen_config, save_weights, update_config, write_config,
)
from dropnet.trainer.schedules import learning_rate, momentum

if TYPE_CHECKING:
    from dropnet.trainer.data import Dataset

logger = logging.getLogger(__name__)

EVAL_CHUNK = 2048
RESUMABLE_CHANGES = ("optim.epochs", "device")
"""Config fields a resumed run may change: train longer, or continue on another device."""
_SHUFFLE_STREAM = 1
_MASK_STREAM = 2

EpochCallback = Callable[[dict[str, Any]], None]
"""Called with each epoch's record once it is logged and checkpointed; raising stops the run."""


class TrainingDiverged(ConfigError):
    """The mean training loss became infinite or NaN (usually: a learning rate too high)."""


def train(
    config: TrainConfig, run_dir: Path, resume: bool = False, dataset: Dataset | None = None, *,
    on_epoch: EpochCallback | None = None, evaluate_test: bool = True,
) -> dict[str, Any]:
    """Train the network ``config`` describes, write ``run_dir``, and return the final metrics.

    A new run needs an empty or missing ``run_dir``. With ``resume`` the run continues from its
    checkpoint (``config`` must equal the run's own, except for :data:`RESUMABLE_CHANGES`), after
    removing the temporary files a killed run left. ``dataset`` defaults to
    ``dropnet.trainer.data.load_dataset(config.data, config.seed)``; one whose training split lacks
    a class is refused (``check_classes_trainable``).

    Under torchrun (``WORLD_SIZE`` set) every rank calls this: the model is wrapped in
    DistributedDataParallel, each global batch of ``optim.batch_size`` examples is split across the
    ranks, and rank 0 alone evaluates and writes ``run_dir``; every rank returns the final metrics
    (see ``docs/distributed.md``).

    ``on_epoch`` (single process only) is called with each epoch's record after the record is
    appended and the epoch checkpointed. An exception it raises (e.g. ``optuna.TrialPruned``) stops
    training: the final metrics up to that epoch, with ``stopped_by`` naming the exception, are
    recorded in ``config.json`` and the curves plotted, then the exception propagates. With
    ``evaluate_test=False`` the test split is never evaluated: records and final metrics hold
    ``test_error: None`` (a hyper-parameter search must not look at it).
    """
    config.validate()
    with training_processes(config.device) as (replicas, device):
        if on_epoch is not None and replicas is not None:
            raise ConfigError("an on_epoch callback runs in a single process only, not under torchrun")
        return _train(config, Path(run_dir), resume, dataset, replicas, device, on_epoch, evaluate_test)


def _train(
    config: TrainConfig, run_dir: Path, resume: bool, dataset: Dataset | None, replicas: Replicas | None,
    device: torch.device, on_epoch: EpochCallback | None = None, evaluate_test: bool = True,
) -> dict[str, Any]:
    main = replicas is None or replicas.is_main
    if main:
        if resume:
            _check_resumable(run_dir, config)
            remove_interrupted_writes(run_dir)
        else:
            check_new_run_dir(run_dir)
        if config.bf16 and device.type != "cuda":
            logger.info("bf16 autocast is ignored on %s", device)
    if replicas is not None:
        _check_global_batch(config.optim.batch_size, replicas.world_size)
    if dataset is None:
        dataset = _load_dataset(config, replicas)
    check_classes_trainable(dataset)

    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = build_model(config.model, dataset.spec).to(device)
    init = initialise(model, config, run_dir, resume)  # --init: pretrained hidden layers (not over a checkpoint)
    if replicas is not None:  # but each rank its own dropout masks
        torch.manual_seed(stream_seed(config.seed, _MASK_STREAM, replicas.rank))
    shuffle = torch.Generator().manual_seed(stream_seed(config.seed, _SHUFFLE_STREAM))
    optimizer = sgd(model, config.optim.lr, config.optim.momentum_start, config.optim.weight_decay)
    max_norm = MaxNorm(weight_layers(model), config.model.resolved_max_norm())
    metrics_path = run_dir / METRICS_FILE
    records: list[dict[str, Any]] = []
    if resume:
        rank = 0 if replicas is None else replicas.rank
        state = load_checkpoint(run_dir, model, optimizer, shuffle, rank=rank) or TrainState()
        if state.epochs_done > config.optim.epochs:
            raise ConfigError(
                f"{run_dir} has already trained {state.epochs_done} epochs; --epochs must be at least that, "
                f"got {config.optim.epochs}"
            )
        if main:
            reopen_config(run_dir, read_config(run_dir), config.to_dict(), load_config(run_dir)[1], dataset.spec)
            if state.best_epoch == state.epochs_done:
                # the run may have stopped between the checkpoint commit and the best weights' write
                save_weights(run_dir / WEIGHTS_FILE, cpu_state_dict(model))
            records = truncate_records(metrics_path, state.epochs_done)
    else:
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_config(run_dir, config, dataset.spec, dataset.describe())
            if init is not None:
                update_config(run_dir, init=init)
        state = TrainState()
    net: nn.Module = model
    if replicas is not None:  # broadcasts rank 0's parameters and buffers (already equal: same seed or checkpoint)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = _place(dataset, device)
    bf16 = config.bf16 and device.type == "cuda"
    batch_size = config.optim.batch_size
    world = 1 if replicas is None else replicas.world_size
    steps = math.ceil(_examples_per_epoch(len(train_y), batch_size, world) / batch_size)
    progress = Progress(config.optim.epochs, steps) if main else None
    if main:
        logger.info(
            "training on %s: %d train / %d val / %d test examples, %d parameters, epochs %d..%d",
            device, len(train_y), len(val_y), len(test_y), sum(p.numel() for p in model.parameters()),
            state.epochs_done + 1, config.optim.epochs,
        )

    for epoch in range(state.epochs_done, config.optim.epochs):
        started = time.perf_counter()
        lr, mom = learning_rate(config.optim, epoch), momentum(config.optim, epoch)
        for group in optimizer.param_groups:
            group["lr"], group["momentum"] = lr, mom
        loss, train_error = train_epoch(
            net, optimizer, max_norm, train_x, train_y, batch_size, shuffle, bf16=bf16, progress=progress,
            epoch=epoch + 1, replicas=replicas,
        )
        if not math.isfinite(loss):  # the same all-reduced loss on every rank: all stop
            raise TrainingDiverged(
                f"training diverged in epoch {epoch + 1}: the mean training loss became {loss}. The learning "
                f"rate {lr:g} is probably too high; try a lower --lr (e.g. {config.optim.lr / 10:g}). "
                f"{_best_note(run_dir, state)}"
            )
        rank_rng: dict[int, dict[str, torch.Tensor]] = {}
        if replicas is not None:
            replicas.check_in_sync(model, epoch + 1)
            rank_rng = _other_ranks_rng(replicas, device)
        state.epochs_done = epoch + 1
        if not main:
            continue
        val_error = error_rate(model, val_x, val_y, bf16) if len(val_y) else None
        record = {
            "epoch": epoch + 1,
            "train_loss": loss,
            "train_error_dropout": train_error,
            "val_error": val_error,
            "test_error": error_rate(model, test_x, test_y, bf16) if evaluate_test else None,
            "lr": lr,
            "momentum": mom,
            "seconds": time.perf_counter() - started,
        }
        improved = val_error is None or state.best_val_error is None or val_error < state.best_val_error
        if improved:
            state.best_epoch, state.best_val_error = epoch + 1, val_error
        append_record(metrics_path, record)
        records.append(record)
        progress.epoch_done(record)
        state.seconds += record["seconds"]
        weights = cpu_state_dict(model)
        extra = {"rank_rng": rank_rng} if rank_rng else {}
        save_checkpoint(run_dir, model, weights, optimizer, shuffle, state, **extra)
        if improved:  # only after the commit: model.safetensors never holds an epoch state.json has not recorded
            save_weights(run_dir / WEIGHTS_FILE, weights)
        if on_epoch is not None:
            try:
                on_epoch(record)
            except Exception as exc:
                _finish(run_dir, metrics_path, records, state, stopped_by=f"{type(exc).__name__}: {exc}")
                raise

    final = _finish(run_dir, metrics_path, records, state) if main else None
    return final if replicas is None else replicas.broadcast_json(final, device)


def _finish(
    run_dir: Path, metrics_path: Path, records: list[dict[str, Any]], state: TrainState, stopped_by: str | None = None,
) -> dict[str, Any]:
    """Record the final metrics (those of the best epoch) in config.json, plot the curves, return them.

    ``stopped_by`` (what ended the run before its last epoch) is recorded with them when given.
    """
    best = next((r for r in records if r["epoch"] == state.best_epoch), None)
    if best is None:
        raise RunDirError(
            f"{metrics_path} has no record of epoch {state.best_epoch}, the best epoch in {run_dir / CHECKPOINT_DIR}; "
            "the run directory is inconsistent: start a new run"
        )
    final = {
        "best_epoch": state.best_epoch,
        "val_error": best["val_error"],
        "test_error": best["test_error"],
        "epochs": state.epochs_done,
        "seconds": state.seconds,
    }
    if stopped_by is not None:
        final["stopped_by"] = stopped_by
    update_config(run_dir, final_metrics=final)
    plot_curves(records, run_dir / CURVES_FILE)
    return final


@torch.inference_mode()
def sgd(model: nn.Module, lr: float, momentum: float, weight_decay: float = 0.0) -> torch.optim.SGD:
    """The paper's optimiser for ``model``: SGD with momentum, one multi-tensor update per step.

    (The fused kernel measured no faster in the whole loop on the CPU, 6,755 vs 6,737 samples/s, and
    rounds the tail of each tensor differently, so runs would no longer repeat earlier ones exactly.)
    """
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=True)


def error_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool = False) -> float:
    """Classification error of the deterministic test-time network (``model.eval()``) on ``x``, ``y``."""
    model.eval()
    device = next(model.parameters()).device
    wrong = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, len(y), EVAL_CHUNK):
        xb = x[start : start + EVAL_CHUNK].to(device, non_blocking=True)
        yb = y[start : start + EVAL_CHUNK].to(device, non_blocking=True)
        with _autocast(device, bf16):
            logits = model(xb)
        wrong += (logits.argmax(dim=1) != yb).sum()
    return wrong.item() / len(y)


def train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, max_norm: MaxNorm, x: torch.Tensor, y: torch.Tensor,
    batch_size: int, shuffle: torch.Generator, *, bf16: bool = False, progress: Progress | None = None,
    epoch: int = 1, replicas: Replicas | None = None,
) -> tuple[float, float]:
    """One pass over the training set in a ``shuffle``-seeded order, max-norm after every step.

    Returns (mean batch loss, training error of the dropout forward passes). ``progress``, if
    given, is redrawn every ``progress.every`` steps as epoch ``epoch`` (with ``replicas``: from
    this rank's share alone). With ``replicas`` (``model`` wrapped in DistributedDataParallel) each
    rank trains on its share of every global batch of ``batch_size`` examples, its loss weighted so
    that the averaged gradient is the gradient of the global batch's mean loss; both results are
    then summed over the ranks, so every rank returns the same figures.
    """
    model.train()
    device = next(model.parameters()).device
    order = torch.randperm(len(y), generator=shuffle).to(x.device)
    world = 1 if replicas is None else replicas.world_size
    n = _examples_per_epoch(len(y), batch_size, world)
    loss_sum = torch.zeros((), device=device)
    wrong = torch.zeros((), dtype=torch.int64, device=device)
    steps = seen = 0
    for start in range(0, n, batch_size):
        index = order[start : min(start + batch_size, n)]
        share = index if replicas is None else replicas.shard(index)
        xb = x.index_select(0, share).to(device, non_blocking=True)
        yb = y.index_select(0, share).to(device, non_blocking=True)
        with _autocast(device, bf16):
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
        if len(share) * world != len(index):  # an uneven split of the global batch
            loss = loss * (len(share) * world / len(index))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        max_norm()
        loss_sum += loss.detach()
        wrong += (logits.detach().argmax(dim=1) != yb).sum()
        steps += 1
        seen += len(share)
        if progress is not None and progress.every and steps % progress.every == 0:
            progress.update(epoch, steps, (loss_sum / steps).item(), wrong.item() / seen)
    if replicas is not None:
        loss_sum = replicas.sum(loss_sum) / world
        wrong = replicas.sum(wrong)
    return (loss_sum / steps).item(), wrong.item() / n


def _examples_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    """Examples an epoch trains on: all but a trailing partial batch that would give a rank fewer than 2.

    Batch norm cannot train on one example; a single process drops at most a trailing batch of one.
    """
    tail = n % batch_size
    return n - tail if 0 < tail < 2 * world and n > tail else n


def _check_global_batch(batch_size: int, world: int) -> None:
    if batch_size < 2 * world:
        raise ConfigError(
            f"--batch-size {batch_size} is too small for {world} processes: it is the global batch (examples per "
            f"SGD step over all ranks), split across them, and each rank needs at least 2; expected at least "
            f"{2 * world}"
        )


def _load_dataset(config: TrainConfig, replicas: Replicas | None) -> Dataset:
    """The configured dataset; under torchrun local rank 0 of each node loads (and downloads) it first."""
    from dropnet.trainer.data import load_dataset

    first = replicas is None or replicas.local_rank == 0
    if not first:
        replicas.barrier()
    dataset = load_dataset(config.data, config.seed)
    if replicas is not None and first:
        replicas.barrier()
    return dataset


def _other_ranks_rng(replicas: Replicas, device: torch.device) -> dict[int, dict[str, torch.Tensor]]:
    """The RNG states (torch, and CUDA on a GPU) of ranks 1.., for the checkpoint; a collective on every rank."""
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    gathered = {key: replicas.gather(value.to(device)) for key, value in states.items()}
    return {rank: {key: parts[rank].cpu() for key, parts in gathered.items()} for rank in range(1, replicas.world_size)}


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _place(dataset: Dataset, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(examples, labels) tensors of the train, val and test splits, on ``device`` when they fit.

    On CUDA the data stays on the device if it needs at most half the free memory; otherwise it
    stays in pinned host memory and batches are copied over as they are used.
    """
    splits = (dataset.train, dataset.val, dataset.test)
    storage, pin = device, False
    if device.type == "cuda":
        needed = sum(s.x.size * 4 + s.y.size * 8 for s in splits)
        free, _ = torch.cuda.mem_get_info(device)
        if needed > free // 2:
            logger.info(
                "dataset (%.0f MB) does not fit on %s; batches are copied from pinned host memory", needed / 1e6, device
            )
            storage, pin = torch.device("cpu"), True
    placed = []
    for split in splits:
        x = torch.from_numpy(np.array(split.x, dtype=np.float32))
        y = torch.from_numpy(np.array(split.y, dtype=np.int64))
        placed.append((x.pin_memory(), y.pin_memory()) if pin else (x.to(storage), y.to(storage)))
    return placed


def stream_seed(seed: int, *stream: int) -> int:
    """An independent 63-bit seed for one random stream of a run (e.g. one rank's dropout masks)."""
    words = np.random.SeedSequence((seed, *stream)).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse a run directory that is a file or a non-empty directory (a new run starts in an empty one)."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise RunDirError(
            f"run directory {run_dir} already exists and is not empty; pass --resume to continue the run "
            "in it, or choose another --out"
        )


def _check_resumable(run_dir: Path, config: TrainConfig) -> None:
    """Refuse to resume a run directory whose config differs from ``config`` (beyond RESUMABLE_CHANGES)."""
    stored = load_config(run_dir)[0].to_dict()
    differences = [
        f"{key}: the run has {old!r}, requested {new!r}"
        for key, (old, new) in diff_configs(stored, config.to_dict()).items()
        if key not in RESUMABLE_CHANGES
    ]
    if differences:
        raise ConfigError(
            f"cannot resume {run_dir} with a different config ({'; '.join(differences)}); resume with the run's "
            f"own settings (only {', '.join(RESUMABLE_CHANGES)} may change) or start a new run with another --out"
        )
    if not (run_dir / CHECKPOINT_DIR).is_dir():
        logger.info("%s has no checkpoint yet; training starts from epoch 1", run_dir)


def diff_configs(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Flattened ``section.field`` keys whose values differ between two config dicts."""
    changed: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed.update(diff_configs(a, b, f"{prefix}{key}."))
        elif a != b:
            changed[f"{prefix}{key}"] = (a, b)
    return changed


def _best_note(run_dir: Path, state: TrainState) -> str:
    if state.best_epoch is None:
        return "No weights were saved."
    return f"The best weights so far (epoch {state.best_epoch}) remain in {run_dir / WEIGHTS_FILE}."
