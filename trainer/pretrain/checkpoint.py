"""The ``dropnet pretrain --resume`` checkpoint: the layer in training, its epoch, momentum and RNG states.

``RUN_DIR/checkpoint/`` holds ``layer-K-epoch-NNNNN.safetensors`` (the parameters and SGD momentum
buffers of layer K, the shuffling and sampling generators' states) and ``state.json`` (the layer's
0-based index, its epochs done, the seconds spent so far, and the tensors file's name). The protocol
is the trainer's (:mod:`dropnet.trainer.checkpoint`): the tensors file is written first, replacing
``state.json`` commits, older tensors files are deleted afterwards, and a failed write leaves the
previous checkpoint as it was and raises a RunDirError. Layers below the checkpoint's are read from
their own files, which are written before the commit of their last epoch.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dropnet.core.errors import RunDirError
from dropnet.trainer.checkpoint import CHECKPOINT_DIR, STATE_FILE, commit_checkpoint, momentum_tensors, read_committed
from dropnet.trainer.pretrain.layer import Layer

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "dropnet-pretrain-checkpoint/1"
TENSORS_FILES = "layer-*-epoch-*.safetensors"
CHECKPOINT_FILES = (STATE_FILE, TENSORS_FILES)
"""What the checkpoint directory holds (names and patterns)."""


@dataclass
class Progress:
    """How far a pretraining run is, as of its last completed epoch."""

    layer: int = 0
    """0-based index of the layer the checkpoint holds."""
    epochs_done: int = 0
    """Completed epochs of that layer (the layer is done when it equals the epochs per layer)."""
    seconds: float = 0.0
    """Wall-clock seconds spent in the completed epochs of every layer."""


@dataclass(frozen=True)
class Generators:
    """The run's two random streams."""

    shuffle: torch.Generator
    """Order of the examples in each epoch (on the CPU)."""
    sampling: torch.Generator
    """Initial weights, Gibbs samples and corruptions (on the training device)."""


def save_checkpoint(
    run_dir: Path, progress: Progress, layer: Layer, optimizer: torch.optim.Optimizer, generators: Generators,
) -> None:
    """Write and commit the checkpoint of the epoch that just ended."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"layer/{name}": param.detach().to("cpu").contiguous() for name, param in layer.named_parameters()}
    tensors.update(momentum_tensors(layer, optimizer))
    tensors["rng/shuffle"] = generators.shuffle.get_state()
    tensors["rng/sampling"] = generators.sampling.get_state()
    commit_checkpoint(
        directory, tensors, f"layer-{progress.layer + 1}-epoch-{progress.epochs_done:05d}.safetensors",
        {"format": CHECKPOINT_FORMAT, **asdict(progress)}, TENSORS_FILES,
        f"layer {progress.layer + 1}, epoch {progress.epochs_done}", f"dropnet pretrain --resume --out {run_dir}",
    )


def load_checkpoint(run_dir: Path) -> tuple[Progress, dict[str, torch.Tensor]] | None:
    """The committed progress and its tensors; None when the run has no checkpoint yet."""
    committed = read_committed(run_dir, CHECKPOINT_FORMAT, Progress)
    if committed is None:
        return None
    progress, tensors = committed
    logger.info("resuming layer %d after epoch %d", progress.layer + 1, progress.epochs_done)
    return progress, tensors


def restore_generators(tensors: dict[str, torch.Tensor], generators: Generators) -> None:
    """Put the checkpoint's generator states back."""
    generators.shuffle.set_state(tensors["rng/shuffle"])
    generators.sampling.set_state(tensors["rng/sampling"])


def restore_layer(tensors: dict[str, torch.Tensor], layer: Layer, optimizer: torch.optim.Optimizer) -> None:
    """Put the checkpoint's layer parameters and their momentum buffers back into ``layer`` and ``optimizer``."""
    with torch.no_grad():
        for name, param in layer.named_parameters():
            saved = tensors.get(f"layer/{name}")
            if saved is None or saved.shape != param.shape:
                raise RunDirError(
                    f"the checkpoint's tensor layer/{name} is missing or does not fit {tuple(param.shape)}; start a "
                    "new run instead of --resume"
                )
            param.copy_(saved)
            buffer = tensors.get(f"momentum/{name}")
            if buffer is not None:
                optimizer.state[param]["momentum_buffer"] = buffer.to(device=param.device, dtype=param.dtype)
