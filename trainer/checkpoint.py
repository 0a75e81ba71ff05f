"""The ``--resume`` checkpoint: everything needed to continue a run exactly where it stopped.

``RUN_DIR/checkpoint/`` holds ``epoch-NNNNN.safetensors`` (model state, SGD momentum buffers,
torch and shuffling RNG states; for a distributed run also the torch RNG state of every other rank,
under ``rng/rank-R/``) and ``state.json`` (epochs done, best-so-far, elapsed seconds,
and the name of the tensors file). The tensors file is written first; replacing ``state.json``
(atomically) is the commit point; older tensors files are deleted afterwards. A run killed at
any moment therefore resumes from the last completed epoch, and the temporary files it was
writing (:data:`CHECKPOINT_FILES`) are removed by ``--resume``. A write that fails (disk full,
permission denied) leaves the previous checkpoint as it was and raises a RunDirError naming the
file and the reason. No pickle anywhere.

The run's ``model.safetensors`` is written after the commit of an improving epoch, so it may lag
behind ``state.json`` by that one epoch; the training loop rewrites it on resume (the
checkpoint's weights are then the best epoch's).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from dropnet.core.errors import RunDirError
from dropnet.core.fileio import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
CHECKPOINT_FORMAT = "dropnet-checkpoint/1"
TENSORS_FILES = "epoch-*.safetensors"
CHECKPOINT_FILES = (STATE_FILE, TENSORS_FILES)
"""What the checkpoint directory holds (names and patterns)."""
S = TypeVar("S")
"""The type of a checkpoint's committed state (TrainState, or a pretraining run's Progress)."""


@dataclass
class TrainState:
    """Progress of a run, as of the end of its last completed epoch."""

    epochs_done: int = 0
    best_epoch: int | None = None
    """1-based epoch whose weights are (or, after a crash, are due) in model.safetensors."""
    best_val_error: float | None = None
    """Validation error of ``best_epoch`` (None when there is no validation split)."""
    seconds: float = 0.0
    """Wall-clock seconds spent in the completed epochs."""


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    weights: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    shuffle: torch.Generator,
    state: TrainState,
    *,
    rank_rng: dict[int, dict[str, torch.Tensor]] | None = None,
) -> None:
    """Write the checkpoint of the epoch that just ended (see module docstring for the commit protocol).

    ``weights`` is ``dropnet.trainer.rundir.cpu_state_dict(model)``, taken once per epoch by the caller and
    also written to ``model.safetensors`` when the epoch is the best so far. ``rank_rng`` maps the
    other ranks of a distributed run to their RNG states (``torch``, and ``cuda`` on a GPU); this
    process's own are taken here.
    """
    directory = Path(run_dir) / CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v for k, v in weights.items()}
    tensors.update(momentum_tensors(model, optimizer))
    tensors["rng/torch"] = torch.get_rng_state()
    tensors["rng/shuffle"] = shuffle.get_state()
    if next(model.parameters()).is_cuda:
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    for rank, states in (rank_rng or {}).items():
        tensors.update({f"{_rng_prefix(rank)}{key}": value for key, value in states.items()})
    commit_checkpoint(
        directory, tensors, f"epoch-{state.epochs_done:05d}.safetensors",
        {"format": CHECKPOINT_FORMAT, **asdict(state)}, TENSORS_FILES,
        f"epoch {state.epochs_done}", f"dropnet train --resume --out {run_dir}",
    )


def momentum_tensors(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimiser's momentum buffer of each of ``module``'s parameters, on the CPU, keyed ``momentum/NAME``."""
    tensors = {}
    for name, param in module.named_parameters():
        buffer = optimizer.state.get(param, {}).get("momentum_buffer")
        if buffer is not None:
            tensors[f"momentum/{name}"] = buffer.detach().to("cpu").contiguous()
    return tensors


def commit_checkpoint(
    directory: Path, tensors: dict[str, torch.Tensor], tensors_name: str, state: dict[str, Any], pattern: str,
    what: str, resume_command: str,
) -> None:
    """Write ``tensors`` to ``directory/tensors_name``, then commit it by replacing state.json (``state`` plus
    ``tensors``: the file's name), then remove the older tensor files matching ``pattern``.

    A write that fails removes this tensors file and leaves the previous checkpoint as it was; the
    RunDirError names ``what`` was being checkpointed and the ``resume_command`` that continues.
    """
    try:
        # serialised in memory: safetensors' own save_file would leave a second kind of temporary file
        atomic_write_bytes(directory / tensors_name, save(tensors))
        atomic_write_json(directory / STATE_FILE, {**state, "tensors": tensors_name})
    except OSError as exc:
        # not committed: state.json still names the previous file, never this one
        (directory / tensors_name).unlink(missing_ok=True)
        raise RunDirError(
            f"cannot write the checkpoint of {what}: {exc.strerror}: {exc.filename}; the previous checkpoint in "
            f"{directory} is unchanged. Free space or fix the permissions, then continue with: {resume_command}"
        ) from exc
    for old in directory.glob(pattern):
        if old.name != tensors_name:
            old.unlink(missing_ok=True)


def read_committed(run_dir: Path, checkpoint_format: str, state_type: type[S]) -> tuple[S, dict[str, torch.Tensor]] | None:
    """The committed state (``state_type`` built from state.json) and its tensors; None without a checkpoint.

    A state.json of another format, a missing or unreadable tensors file, or fields that do not fit
    ``state_type`` raise RunDirError naming the checkpoint directory.
    """
    directory = Path(run_dir) / CHECKPOINT_DIR
    state_path = directory / STATE_FILE
    if not state_path.is_file():
        return None
    try:
        raw = json.loads(state_path.read_text())
        if raw.pop("format") != checkpoint_format:
            raise ValueError(f"expected format {checkpoint_format!r}")
        tensors_path = directory / raw.pop("tensors")
        state = state_type(**raw)
        tensors = load_file(str(tensors_path))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, OSError, SafetensorError) as exc:
        raise RunDirError(f"{directory}: unreadable checkpoint ({exc}); start a new run instead of --resume") from None
    return state, tensors


def load_checkpoint(
    run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, shuffle: torch.Generator, *, rank: int = 0
) -> TrainState | None:
    """Restore model, momentum buffers and RNG states in place; None when the run has no checkpoint yet.

    ``rank`` picks the torch RNG state a distributed run's rank restores; a rank the checkpoint has
    none for (the run had fewer ranks) keeps the RNG state it has.
    """
    committed = read_committed(run_dir, CHECKPOINT_FORMAT, TrainState)
    if committed is None:
        return None
    state, tensors = committed
    weights = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise RunDirError(f"{Path(run_dir) / CHECKPOINT_DIR}: checkpoint does not match the configured model ({exc})") from None
    for name, param in model.named_parameters():
        buffer = tensors.get(f"momentum/{name}")
        if buffer is not None:
            optimizer.state[param]["momentum_buffer"] = buffer.to(device=param.device, dtype=param.dtype)
    shuffle.set_state(tensors["rng/shuffle"])
    prefix = _rng_prefix(rank)
    if f"{prefix}torch" in tensors:
        torch.set_rng_state(tensors[f"{prefix}torch"])
        if f"{prefix}cuda" in tensors and next(model.parameters()).is_cuda:
            torch.cuda.set_rng_state(tensors[f"{prefix}cuda"])
    else:
        logger.info("the checkpoint has no RNG state of rank %d; its dropout masks continue from a fresh stream", rank)
    logger.info("resuming after epoch %d (best epoch so far: %s)", state.epochs_done, state.best_epoch)
    return state


def _rng_prefix(rank: int) -> str:
    """Key prefix of a rank's RNG states: rank 0 (and a single process) keeps the plain ``rng/`` keys."""
    return "rng/" if rank == 0 else f"rng/rank-{rank}/"
