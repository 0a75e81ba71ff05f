"""A finished pretraining run, loaded: its visible map and its trained layers, bottom first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dropnet.core.errors import RunDirError
from dropnet.trainer.models import InputSpec
from dropnet.trainer.pretrain.config import PretrainConfig
from dropnet.trainer.pretrain.inputs import VisibleMap
from dropnet.trainer.pretrain.layer import Layer
from dropnet.trainer.pretrain.rundir import layer_file, load_config, load_layer, load_visible_map, read_config
from dropnet.trainer.rundir import CONFIG_FILE


@dataclass(frozen=True)
class Stack:
    """The layers of a pretraining run and the map from raw examples to the first layer's visible units."""

    run_dir: Path
    config: PretrainConfig
    spec: InputSpec
    """The pretraining data's input spec."""
    visible: VisibleMap
    layers: list[Layer]
    files: list[Path]
    """Each layer's safetensors file."""

    @torch.no_grad()
    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """p(h | ·) of every layer for raw examples ``x`` [batch, *shape]: the stack's deterministic up pass."""
        outputs, v = [], self.visible(x)
        for layer in self.layers:
            v = layer.hidden_probs(v)
            outputs.append(v)
        return outputs


def load_stack(run_dir: str | Path) -> Stack:
    """Load a finished pretraining run; a RunDirError says what ``run_dir`` is instead, or what is missing."""
    run_dir = Path(run_dir)
    config, spec, plan = load_config(run_dir)
    if "final_metrics" not in read_config(run_dir):
        raise RunDirError(
            f"pretraining in {run_dir} has not finished ({CONFIG_FILE} has no final_metrics); finish it with: "
            f"dropnet pretrain --resume --out {run_dir}"
        )
    layers = [load_layer(run_dir, index, entry) for index, entry in enumerate(plan)]
    visible = load_visible_map(run_dir, plan[0]["visible_type"], plan[0]["visible"])
    files = [run_dir / layer_file(index) for index in range(len(plan))]
    return Stack(run_dir, config, spec, visible, [layer.eval() for layer in layers], files)
