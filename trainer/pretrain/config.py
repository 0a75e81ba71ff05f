"""Typed settings of a greedy layer-wise pretraining run (``dropnet pretrain``).

A :class:`PretrainConfig` is a :class:`~dropnet.settings_base.Settings` like the trainer's
:class:`~dropnet.trainer.config.TrainConfig`: the same strict checks, the same YAML presets
(``trainer/presets``; a preset with a ``pretrain`` section loads as a PretrainConfig) and the same
generated flags. Its ``data`` section is the trainer's, so a pretraining run and the fine-tuning
run that starts from it read the same examples.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from dropnet.core.devices import Device
from dropnet.settings_base import Settings
from dropnet.trainer.config import SEED_LIMIT, DataConfig, ModelConfig

LayerKind = Literal["rbm", "dae"]
VisibleType = Literal["bernoulli", "gaussian"]
Width = Annotated[int, Field(ge=1)]


class PretrainSection(Settings):
    """The stack of layers and how each one is trained."""

    section: ClassVar[str] = "pretrain"
    kind: LayerKind = "rbm"
    """"rbm" (restricted Boltzmann machines, contrastive divergence) or "dae" (denoising autoencoders, tied weights)."""
    hidden: list[Width] = [500, 500, 2000]
    """Units of each hidden layer, bottom first: the hidden layers of the network fine-tuned from this run."""
    visible: Literal["auto", "bernoulli", "gaussian"] = "auto"
    """First layer's visible units: "bernoulli" (inputs scaled into [0, 1] by the data's value range), "gaussian"
    (each input standardised to mean 0, variance 1), "auto": bernoulli for non-negative data (pixels), else gaussian."""
    epochs: int = Field(10, ge=1)
    """Passes over the training split per layer."""
    batch_size: int = Field(100, ge=1)
    """Examples per SGD step."""
    lr: float = Field(0.1, gt=0)
    """Learning rate (constant) of the weights and biases; a gaussian first layer wants a smaller one (e.g. 0.005)."""
    momentum_start: float = Field(0.5, ge=0, lt=1)
    """Momentum of each layer's first momentum_switch_epoch epochs."""
    momentum: float = Field(0.9, ge=0, lt=1)
    """Momentum of each layer's later epochs."""
    momentum_switch_epoch: int = Field(5, ge=0)
    """Epochs of each layer trained with momentum_start before switching to momentum."""
    weight_decay: float = Field(0.0002, ge=0)
    """L2 penalty on the weights (not the biases)."""
    cd_k: int = Field(1, ge=1)
    """Gibbs steps of contrastive divergence CD-k (kind "rbm")."""
    corruption: Literal["mask", "gaussian"] = "mask"
    """Denoising corruption (kind "dae"): "mask" (each input set to 0 with probability corruption_level) or
    "gaussian" (additive noise of standard deviation corruption_level)."""
    corruption_level: float = Field(0.2, ge=0)
    """Masking probability in [0, 1) or Gaussian noise standard deviation (kind "dae")."""

    @model_validator(mode="after")
    def _consistent(self) -> PretrainSection:
        if not self.hidden:
            raise ValueError("pretrain.hidden must list at least one layer's units, got []")
        if self.corruption == "mask" and not self.corruption_level < 1:
            raise ValueError(
                f"pretrain.corruption_level is the masking probability of corruption 'mask' and must be in [0, 1), "
                f"got {self.corruption_level}"
            )
        return self


class PretrainConfig(Settings):
    """Everything that defines a pretraining run."""

    pretrain: PretrainSection = Field(default_factory=PretrainSection)
    data: DataConfig = Field(default_factory=DataConfig)
    seed: int = Field(0, ge=0, lt=SEED_LIMIT)
    """Seeds the weights' initialisation, the data shuffling and every sample (Gibbs steps, corruption)."""
    device: Device = "auto"
    """"auto" (CUDA when usable, else CPU), "cpu" or "cuda"."""
    preset: str | None = None
    """Name of the preset this config started from."""
    target: str | None = None
    """What the preset aims to reproduce."""

    @property
    def model(self) -> ModelConfig:
        """The deterministic network the stack defines: an MLP of logistic hidden layers, no dropout, no max-norm."""
        sites = 1 + len(self.pretrain.hidden)
        return ModelConfig(
            arch="mlp", hidden=list(self.pretrain.hidden), activation="sigmoid", retain=[1.0] * sites, max_norm=None,
        )
