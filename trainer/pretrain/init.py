"""``dropnet train --init PRETRAINED_RUN``: a fine-tuning network's hidden layers from a pretraining run.

Hidden layer k of the network gets layer k's weight W and hidden bias c, with W scaled by
1/s, s the test-time scale of the dropout site on that layer's input (``Dropout.test_scale()``:
the retain probability p for paper-flavour dropout, 1 for inverted and Gaussian dropout, whose
noise has mean 1 already). Under paper-flavour dropout a unit's input is m ⊙ a with
m ~ Bernoulli(p), so E[W/p · (m ⊙ a)] + c = W·a + c: the expected pre-activation equals the one the
unit had in pretraining (and the deterministic test-time network, which multiplies a by p,
computes exactly the pretrained up pass). The first layer also folds in the pretraining's visible
map (v = x·scale + shift) and the network's own Standardize ((x - mean)/std = z):
v = (scale·std)·z + (scale·mean + shift), so W₁' = W₁·diag(scale·std) and
c₁' = c₁ + W₁·(scale·mean + shift).
The output layer keeps its random initialisation.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dropnet.core.errors import ConfigError
from dropnet.trainer.checkpoint import CHECKPOINT_DIR, STATE_FILE
from dropnet.trainer.config import TrainConfig
from dropnet.trainer.dropout import Dropout
from dropnet.trainer.models import Standardize
from dropnet.trainer.pretrain.rundir import PRETRAIN_FORMAT, read_config
from dropnet.trainer.pretrain.stack import Stack, load_stack

logger = logging.getLogger(__name__)


def initialise(model: nn.Sequential, config: TrainConfig, run_dir: Path, resume: bool) -> dict[str, Any] | None:
    """Apply ``config.init`` to ``model`` unless there is none or the run resumes from a checkpoint (which holds
    its weights); return what config.json records under ``init``, or None when nothing was applied."""
    if config.init is None or (resume and (Path(run_dir) / CHECKPOINT_DIR / STATE_FILE).is_file()):
        return None
    return apply_pretrained(model, config.init)


def apply_pretrained(model: nn.Sequential, run_dir: str | Path) -> dict[str, Any]:
    """Copy the pretraining run's layers into ``model``'s hidden layers (see the module docstring).

    Refuses (ConfigError) a network that is not an MLP of logistic hidden layers without batch
    norm, or whose hidden layers do not match the run's; a ``run_dir`` that is no finished
    pretraining run is a RunDirError.
    """
    stack = load_stack(run_dir)
    hidden = _hidden_layers(model, stack)
    standardize = model[0]
    if not isinstance(standardize, Standardize):
        raise ConfigError(f"the network starts with {type(standardize).__name__}; expected dropnet's Standardize")
    layers = []
    with torch.no_grad():
        for index, ((position, linear, site), layer, path) in enumerate(zip(hidden, stack.layers, stack.files)):
            weight, bias = layer.weight.detach().clone(), layer.hidden_bias.detach().clone()
            if index == 0:
                mean, std = float(standardize.mean), float(standardize.std)
                bias += weight @ (stack.visible.scale * mean + stack.visible.shift)
                weight *= stack.visible.scale * std
            scale = 1.0 if site is None else 1.0 / site.test_scale()
            linear.weight.copy_(weight * scale)
            linear.bias.copy_(bias)
            layers.append({
                "layer": index + 1,
                "module": str(position),
                "file": path.name,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "shape": list(linear.weight.shape),
                "dropout_site": None if site is None else {"retain": site.retain, "flavour": site.flavour},
                "weight_scale": scale,
                **({"input_folded": _folded(stack, mean, std)} if index == 0 else {}),
            })
    raw = read_config(stack.run_dir)
    logger.info(
        "initialised %d hidden layers from %s (weights scaled by %s)", len(layers), stack.run_dir,
        [entry["weight_scale"] for entry in layers],
    )
    return {
        "run": str(stack.run_dir.resolve()),
        "format": PRETRAIN_FORMAT,
        "kind": stack.config.pretrain.kind,
        "created": raw.get("created"),
        "layers": layers,
    }


def _folded(stack: Stack, mean: float, std: float) -> str:
    return (
        f"the pretraining's {stack.visible.visible_type} visible map v = x*scale + shift (input.safetensors) and the "
        f"network's Standardize(mean={mean:g}, std={std:g})"
    )


def _hidden_layers(model: nn.Sequential, stack: Stack) -> list[tuple[int, nn.Linear, Dropout | None]]:
    """(position, Linear, the Dropout on its input or None) of each hidden layer; a ConfigError names what does
    not fit."""
    modules = list(model)
    kinds = {type(module).__name__ for module in modules}
    if "Conv2d" in kinds:
        raise ConfigError(
            "--init initialises the fully connected hidden layers of an MLP, but the network has conv layers "
            "(model.arch conv); use --arch mlp"
        )
    if kinds & {"BatchNorm1d", "BatchNorm2d"}:
        raise ConfigError(
            "--init needs a network without batch norm (pretrained units take W·v + c as it is); use --no-batch-norm"
        )
    linears = [(position, module) for position, module in enumerate(modules) if isinstance(module, nn.Linear)]
    hidden = linears[:-1]
    pretrained = [layer.weight.shape[0] for layer in stack.layers]
    widths = [linear.out_features for _, linear in hidden]
    if widths != pretrained:
        raise ConfigError(
            f"the network's hidden layers {widths} (model.hidden) do not match the {len(pretrained)} pretrained layers "
            f"{pretrained} of {stack.run_dir}; expected model.hidden {pretrained}"
        )
    features = stack.layers[0].weight.shape[1]
    if hidden[0][1].in_features != features:
        raise ConfigError(
            f"the network's input has {hidden[0][1].in_features} features but {stack.run_dir} was pretrained on "
            f"{features} (shape {list(stack.spec.shape)}); expected the same data"
        )
    result = []
    for number, (position, linear) in enumerate(hidden, start=1):
        following = modules[position + 1]
        if not isinstance(following, nn.Sigmoid):
            raise ConfigError(
                f"--init's pretrained units are logistic, but hidden layer {number} (module {position}) is followed by "
                f"{type(following).__name__}; expected model.activation sigmoid"
            )
        before = modules[position - 1]
        result.append((position, linear, before if isinstance(before, Dropout) else None))
    return result
