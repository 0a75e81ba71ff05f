"""Typed configuration of a training run.

A run is described by :class:`TrainConfig` (model, optimiser, data and run settings), built on the
project's one settings mechanism (:mod:`dropnet.settings_base`): every value is checked against its
field's type and range when a config is built, and again by :meth:`~dropnet.settings_base.Settings.validate`
after fields were assigned. Each field says why it exists. Configs load from YAML presets, are
overridden by CLI flags, and are written into the run directory's ``config.json`` so that a run
rebuilds its own model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import yaml
from pydantic import Field, model_validator

from dropnet.core.devices import Device
from dropnet.core.errors import ConfigError
from dropnet.core.manifest import DROPOUT_KINDS, DropoutKind
from dropnet.settings_base import Settings

if TYPE_CHECKING:
    from dropnet.trainer.pretrain.config import PretrainConfig

Flavour = DropoutKind
FLAVOURS = DROPOUT_KINDS
PRESET_DIR = Path(__file__).parent / "presets"
SEED_LIMIT = 2**63
"""Seeds lie in [0, 2**63): torch's and numpy's generators take any such integer."""

Width = Annotated[int, Field(ge=1)]
Retain = Annotated[float, Field(gt=0, le=1)]
"""A retain probability p in (0, 1]."""
MaxNorm = Annotated[float, Field(gt=0)]


class ModelConfig(Settings):
    """Architecture and dropout placement of the network."""

    section: ClassVar[str] = "model"
    arch: Literal["mlp", "conv"] = "mlp"
    """"mlp" (input flattened, then fully connected layers) or "conv" (conv–pool blocks, then fully connected)."""
    hidden: list[Width] = [1024, 1024]
    """Width of each fully connected hidden layer (for "conv": the layers after the conv blocks)."""
    activation: Literal["relu", "sigmoid", "maxout"] = "relu"
    """Hidden non-linearity: "relu", "sigmoid" (logistic) or "maxout"."""
    maxout_pieces: int = Field(2, ge=2)
    """Linear pieces per maxout unit (only for activation "maxout")."""
    conv_channels: list[Width] = [32, 64]
    """Output channels of each conv block (only for arch "conv")."""
    conv_kernel: int = Field(5, ge=1)
    """Square kernel size of every conv layer ("same" padding; odd)."""
    pool: int = Field(2, ge=1)
    """Max-pool window and stride after every conv layer."""
    retain_input: Retain = 0.8
    """Retain probability p of the input units (the paper's 0.8; 1.0 = no input dropout)."""
    retain_conv: Retain = 0.75
    """Retain probability after each conv block (the paper's 0.75 for conv nets)."""
    retain_hidden: Retain = 0.5
    """Retain probability of each fully connected hidden layer (the paper's 0.5)."""
    retain: list[Retain] | None = None
    """Explicit p per dropout site (input, each conv block, each hidden layer); overrides the three above."""
    flavour: Flavour = "paper"
    """"paper" (Bernoulli masks, test-time W·p), "inverted" (masks/p, no test-time scaling) or "gaussian" (N(1,(1-p)/p) noise)."""
    max_norm: MaxNorm | None = 3.5
    """Max-norm bound c on each hidden unit's incoming weight vector; None disables it."""
    max_norm_per_layer: list[MaxNorm | None] | None = None
    """Explicit c per weight layer (hidden layers then output layer); overrides max_norm."""
    batch_norm: bool = False
    """Batch normalisation after each hidden linear/conv layer (dropout then follows it)."""
    dropout_before_batch_norm: bool = False
    """Refused when True: dropout before BN shifts BN's statistics between training and test."""

    def dropout_sites(self) -> int:
        """Number of dropout sites: the input, each conv block, each hidden layer."""
        convs = len(self.conv_channels) if self.arch == "conv" else 0
        return 1 + convs + len(self.hidden)

    def resolved_retain(self) -> list[float]:
        """Retain probability per dropout site, in network order."""
        if self.retain is not None:
            return list(self.retain)
        convs = len(self.conv_channels) if self.arch == "conv" else 0
        return [self.retain_input] + [self.retain_conv] * convs + [self.retain_hidden] * len(self.hidden)

    def weight_layers(self) -> int:
        """Number of layers with weights: each conv, each hidden layer and the output layer."""
        convs = len(self.conv_channels) if self.arch == "conv" else 0
        return convs + len(self.hidden) + 1

    def resolved_max_norm(self) -> list[float | None]:
        """Max-norm bound per weight layer (None = unconstrained); the output layer is unconstrained by default."""
        if self.max_norm_per_layer is not None:
            return list(self.max_norm_per_layer)
        return [self.max_norm] * (self.weight_layers() - 1) + [None]

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        """Checks across fields; each field's own type and range are checked before."""
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"model.conv_kernel must be an odd int >= 1, got {self.conv_kernel}")
        if self.retain is not None and len(self.retain) != self.dropout_sites():
            raise ValueError(
                f"model.retain lists {len(self.retain)} probabilities but the network has {self.dropout_sites()} "
                "dropout sites (input, each conv block, each hidden layer)"
            )
        if self.max_norm_per_layer is not None and len(self.max_norm_per_layer) != self.weight_layers():
            raise ValueError(
                f"model.max_norm_per_layer lists {len(self.max_norm_per_layer)} bounds but the network has "
                f"{self.weight_layers()} weight layers (conv layers, hidden layers, output)"
            )
        if self.batch_norm and self.dropout_before_batch_norm:
            raise ValueError(
                "dropout before batch norm is not supported: BN would normalise with statistics of "
                "thinned activations during training but of full (scaled) activations at test time, so "
                "the two networks disagree (a variance shift). dropnet places dropout after BN; set "
                "dropout_before_batch_norm: false"
            )
        return self


class OptimConfig(Settings):
    """SGD with momentum, the paper's optimiser, and its schedules."""

    section: ClassVar[str] = "optim"
    epochs: int = Field(20, ge=1)
    """Passes over the training set."""
    batch_size: int = Field(100, ge=1)
    """Examples per SGD step (the paper's 100)."""
    lr: float = Field(0.05, gt=0)
    """Initial learning rate, applied to the mean loss over the batch."""
    lr_schedule: Literal["constant", "exponential", "step"] = "exponential"
    """"constant", "exponential" (lr·decay^epoch) or "step" (lr·decay every lr_step_epochs)."""
    lr_decay: float = Field(0.95, gt=0, le=1)
    """Multiplicative learning-rate decay factor."""
    lr_step_epochs: int = Field(10, ge=1)
    """Epochs between decays for the "step" schedule."""
    momentum_start: float = Field(0.5, ge=0, lt=1)
    """Momentum at epoch 0."""
    momentum_end: float = Field(0.95, ge=0, lt=1)
    """Momentum reached at the end of the ramp."""
    momentum_ramp_epochs: int = Field(10, ge=0)
    """Epochs over which momentum rises linearly from start to end (0 = constant end value)."""
    weight_decay: float = Field(0.0, ge=0)
    """L2 penalty coefficient added to the gradient."""


class DataConfig(Settings):
    """Where the examples come from and how they are split."""

    section: ClassVar[str] = "data"
    name: str = "digits"
    """"digits" (bundled, no download), "mnist", or a path to a .npz (arrays x, y) or .csv file."""
    data_dir: str | None = None
    """Directory holding the four MNIST IDX .gz files (default: a per-user cache, downloaded if missing)."""
    val_size: int | None = Field(None, ge=0)
    """Examples held out of the training set for validation (MNIST: the last 10,000; else 1/6 of train)."""
    test_size: float = Field(0.2, gt=0, lt=1)
    """Fraction of a dataset without its own test set (digits, user files) held out for testing."""


class TrainConfig(Settings):
    """Everything that defines a training run."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    seed: int = Field(0, ge=0, lt=SEED_LIMIT)
    """Seeds weight init, data shuffling and every dropout mask."""
    device: Device = "auto"
    """"auto" (CUDA when usable, else CPU), "cpu" or "cuda"."""
    bf16: bool = False
    """bf16 autocast for the forward pass on CUDA (ignored on CPU)."""
    preset: str | None = None
    """Name of the preset this config started from."""
    target: str | None = None
    """What the preset aims to reproduce (e.g. a row of the paper's Table 2)."""
    init: str | None = None
    """Pretraining run directory (dropnet pretrain) whose layers initialise the hidden layers, each weight matrix
    scaled by 1/p of the dropout on its input (paper flavour); None: random initialisation."""


def load_preset(name_or_path: str) -> TrainConfig | PretrainConfig:
    """Load a YAML preset by file path or by name from the bundled ``trainer/presets``.

    A preset with a ``pretrain`` section is a pretraining preset (``dropnet pretrain``) and loads as a
    :class:`~dropnet.trainer.pretrain.config.PretrainConfig`; any other as a :class:`TrainConfig`.
    """
    path = Path(name_or_path)
    if not path.exists():
        bundled = PRESET_DIR / f"{name_or_path.removesuffix('.yaml')}.yaml"
        if not bundled.exists():
            raise ConfigError(
                f"preset '{name_or_path}' is neither a file nor a bundled preset; bundled: {list_presets()}"
            )
        path = bundled
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"{path}: cannot be read as a YAML preset ({reason})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a preset must be a mapping of config sections, got {type(raw).__name__}")
    if "pretrain" in raw:
        from dropnet.trainer.pretrain.config import PretrainConfig  # imports this module: not at the top

        config: TrainConfig | PretrainConfig = PretrainConfig.from_dict(raw)
    else:
        config = TrainConfig.from_dict(raw)
    if config.preset is None:
        config.preset = path.stem
    return config


def load_training_preset(name_or_path: str, command: str = "dropnet train") -> TrainConfig:
    """:func:`load_preset` for the commands that train (``command``): a pretraining preset is refused."""
    config = load_preset(name_or_path)
    if not isinstance(config, TrainConfig):
        raise ConfigError(
            f"preset {name_or_path!r} is a pretraining preset (it has a pretrain section): run it with "
            f"`dropnet pretrain --config {name_or_path}`; {command} needs a training preset, e.g. mnist_cpu_budget"
        )
    return config


def list_presets() -> list[str]:
    """Names of the bundled presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def check_seed(seed: Any) -> int:
    """``seed`` if it is an integer in [0, :data:`SEED_LIMIT`), else a :class:`ConfigError`: the config's own check."""
    return TrainConfig(seed=seed).seed
