"""Typed configuration of a training run.

A run is described by :class:`TrainConfig` (model, optimiser, data and run settings). Each
field says why it exists. Configs load from YAML presets, are overridden by CLI flags, and
are written into the run directory's ``config.json`` so that a run rebuilds its own model.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dropnet.core.errors import ConfigError

FLAVOURS = ("paper", "inverted", "gaussian")
ACTIVATIONS = ("relu", "sigmoid", "maxout")
ARCHITECTURES = ("mlp", "conv")
LR_SCHEDULES = ("constant", "exponential", "step")
DEVICES = ("auto", "cpu", "cuda")
PRESET_DIR = Path(__file__).parent / "presets"
SEED_LIMIT = 2**63
"""Seeds lie in [0, 2**63): torch's and numpy's generators take any such integer."""


@dataclass
class ModelConfig:
    """Architecture and dropout placement of the network."""

    arch: str = "mlp"
    """"mlp" (input flattened, then fully connected layers) or "conv" (conv–pool blocks, then fully connected)."""
    hidden: list[int] = field(default_factory=lambda: [1024, 1024])
    """Width of each fully connected hidden layer (for "conv": the layers after the conv blocks)."""
    activation: str = "relu"
    """Hidden non-linearity: "relu", "sigmoid" (logistic) or "maxout"."""
    maxout_pieces: int = 2
    """Linear pieces per maxout unit (only for activation "maxout")."""
    conv_channels: list[int] = field(default_factory=lambda: [32, 64])
    """Output channels of each conv block (only for arch "conv")."""
    conv_kernel: int = 5
    """Square kernel size of every conv layer ("same" padding)."""
    pool: int = 2
    """Max-pool window and stride after every conv layer."""
    retain_input: float = 0.8
    """Retain probability p of the input units (the paper's 0.8; 1.0 = no input dropout)."""
    retain_conv: float = 0.75
    """Retain probability after each conv block (the paper's 0.75 for conv nets)."""
    retain_hidden: float = 0.5
    """Retain probability of each fully connected hidden layer (the paper's 0.5)."""
    retain: list[float] | None = None
    """Explicit p per dropout site (input, each conv block, each hidden layer); overrides the three above."""
    flavour: str = "paper"
    """"paper" (Bernoulli masks, test-time W·p), "inverted" (masks/p, no test-time scaling) or "gaussian" (N(1,(1-p)/p) noise)."""
    max_norm: float | None = 3.5
    """Max-norm bound c on each hidden unit's incoming weight vector; None disables it."""
    max_norm_per_layer: list[float | None] | None = None
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
            return [float(p) for p in self.retain]
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

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first field that is out of range."""
        _choice("model.arch", self.arch, ARCHITECTURES)
        _choice("model.activation", self.activation, ACTIVATIONS)
        _choice("model.flavour", self.flavour, FLAVOURS)
        for width in self.hidden + (self.conv_channels if self.arch == "conv" else []):
            if int(width) < 1:
                raise ConfigError(f"layer widths must be >= 1, got {width} in model.hidden/conv_channels")
        if self.activation == "maxout" and self.maxout_pieces < 2:
            raise ConfigError(f"model.maxout_pieces must be >= 2, got {self.maxout_pieces}")
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise ConfigError(f"model.conv_kernel must be an odd integer >= 1, got {self.conv_kernel}")
        if self.pool < 1:
            raise ConfigError(f"model.pool must be >= 1, got {self.pool}")
        retain = self.resolved_retain()
        if len(retain) != self.dropout_sites():
            raise ConfigError(
                f"model.retain lists {len(retain)} probabilities but the network has {self.dropout_sites()} "
                "dropout sites (input, each conv block, each hidden layer)"
            )
        for p in retain:
            if not 0.0 < p <= 1.0:
                raise ConfigError(f"retain probabilities must lie in (0, 1], got {p}")
        norms = self.resolved_max_norm()
        if len(norms) != self.weight_layers():
            raise ConfigError(
                f"model.max_norm_per_layer lists {len(norms)} bounds but the network has "
                f"{self.weight_layers()} weight layers (conv layers, hidden layers, output)"
            )
        for c in norms:
            if c is not None and not c > 0:
                raise ConfigError(f"max-norm bounds must be > 0 or null, got {c}")
        if self.batch_norm and self.dropout_before_batch_norm:
            raise ConfigError(
                "dropout before batch norm is not supported: BN would normalise with statistics of "
                "thinned activations during training but of full (scaled) activations at test time, so "
                "the two networks disagree (a variance shift). dropnet places dropout after BN; set "
                "dropout_before_batch_norm: false"
            )


@dataclass
class OptimConfig:
    """SGD with momentum, the paper's optimiser, and its schedules."""

    epochs: int = 20
    """Passes over the training set."""
    batch_size: int = 100
    """Examples per SGD step (the paper's 100)."""
    lr: float = 0.05
    """Initial learning rate, applied to the mean loss over the batch."""
    lr_schedule: str = "exponential"
    """"constant", "exponential" (lr·decay^epoch) or "step" (lr·decay every lr_step_epochs)."""
    lr_decay: float = 0.95
    """Multiplicative learning-rate decay factor."""
    lr_step_epochs: int = 10
    """Epochs between decays for the "step" schedule."""
    momentum_start: float = 0.5
    """Momentum at epoch 0."""
    momentum_end: float = 0.95
    """Momentum reached at the end of the ramp."""
    momentum_ramp_epochs: int = 10
    """Epochs over which momentum rises linearly from start to end (0 = constant end value)."""
    weight_decay: float = 0.0
    """L2 penalty coefficient added to the gradient."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first field that is out of range."""
        _choice("optim.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.epochs < 1:
            raise ConfigError(f"optim.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"optim.batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"optim.lr_decay must lie in (0, 1], got {self.lr_decay}")
        if self.lr_step_epochs < 1:
            raise ConfigError(f"optim.lr_step_epochs must be >= 1, got {self.lr_step_epochs}")
        for name in ("momentum_start", "momentum_end"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(f"optim.{name} must lie in [0, 1), got {value}")
        if self.momentum_ramp_epochs < 0:
            raise ConfigError(f"optim.momentum_ramp_epochs must be >= 0, got {self.momentum_ramp_epochs}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass
class DataConfig:
    """Where the examples come from and how they are split."""

    name: str = "digits"
    """"digits" (bundled, no download), "mnist", or a path to a .npz (arrays x, y) or .csv file."""
    data_dir: str | None = None
    """Directory holding the four MNIST IDX .gz files (default: a per-user cache, downloaded if missing)."""
    val_size: int | None = None
    """Examples held out of the training set for validation (MNIST: the last 10,000; else 1/6 of train)."""
    test_size: float = 0.2
    """Fraction of a dataset without its own test set (digits, user files) held out for testing."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first field that is out of range."""
        if self.val_size is not None and self.val_size < 0:
            raise ConfigError(f"data.val_size must be >= 0, got {self.val_size}")
        if not 0 < self.test_size < 1:
            raise ConfigError(f"data.test_size must lie in (0, 1), got {self.test_size}")


@dataclass
class TrainConfig:
    """Everything that defines a training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0
    """Seeds weight init, data shuffling and every dropout mask."""
    device: str = "auto"
    """"auto" (CUDA when usable, else CPU), "cpu" or "cuda"."""
    bf16: bool = False
    """bf16 autocast for the forward pass on CUDA (ignored on CPU)."""
    preset: str | None = None
    """Name of the preset this config started from."""
    target: str | None = None
    """What the preset aims to reproduce (e.g. a row of the paper's Table 2)."""

    def validate(self) -> None:
        """Validate every section; raise :class:`ConfigError` on the first problem."""
        self.model.validate()
        self.optim.validate()
        self.data.validate()
        check_seed(self.seed)
        _choice("device", self.device, DEVICES)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict that :meth:`from_dict` turns back into an equal config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrainConfig":
        """Build a config from a (possibly partial) dict.

        Unknown keys and values of the wrong type are refused by name (see :func:`_typed`); ranges
        are checked later, by :meth:`validate`.
        """
        if not isinstance(raw, dict):
            raise ConfigError(f"a config must be a mapping of sections and settings, got {type(raw).__name__}")
        sections = {"model": ModelConfig, "optim": OptimConfig, "data": DataConfig}
        top_level = {key: value for key, value in raw.items() if key not in sections}
        kwargs = _typed_fields(cls, top_level, prefix="")
        for key, cls_ in sections.items():
            if key in raw:
                value = raw[key]
                if not isinstance(value, dict):
                    raise ConfigError(f"config section '{key}' must be a mapping, got {type(value).__name__}")
                kwargs[key] = cls_(**_typed_fields(cls_, value, prefix=f"{key}."))
        return cls(**kwargs)


def load_preset(name_or_path: str) -> TrainConfig:
    """Load a YAML preset by file path or by name from the bundled ``trainer/presets``."""
    path = Path(name_or_path)
    if not path.exists():
        bundled = PRESET_DIR / f"{name_or_path.removesuffix('.yaml')}.yaml"
        if not bundled.exists():
            names = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
            raise ConfigError(f"preset '{name_or_path}' is neither a file nor a bundled preset; bundled: {names}")
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
    config = TrainConfig.from_dict(raw)
    if config.preset is None:
        config.preset = path.stem
    return config


def list_presets() -> list[str]:
    """Names of the bundled presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def check_seed(seed: Any) -> None:
    """Raise :class:`ConfigError` unless ``seed`` is an integer in [0, :data:`SEED_LIMIT`)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"seed must be an integer with 0 <= seed < 2**63, got {seed!r}")


_WRONG_TYPE = object()
"""Returned by :func:`_typed` for a value that does not fit the type."""


def _typed_fields(cls: type, raw: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``raw``'s values checked against the type hints of dataclass ``cls`` (ints converted where floats are due).

    ``prefix`` ("model." or "" for top-level settings) names the keys in error messages.
    """
    hints = typing.get_type_hints(cls)
    names = {name for name in _field_names(cls) if not dataclasses.is_dataclass(hints[name])}  # sections apart
    unknown = set(raw) - names
    if unknown:
        where = f"in config section '{prefix.rstrip('.')}'" if prefix else "in the config"
        raise ConfigError(f"unknown key(s) {sorted(unknown, key=str)} {where}; expected {sorted(names)}")
    typed: dict[str, Any] = {}
    for key, value in raw.items():
        converted = _typed(value, hints[key])
        if converted is _WRONG_TYPE:
            raise ConfigError(
                f"{prefix}{key} must be {_describe(hints[key])}, got {value!r}{_quoted_number_hint(value)}"
            )
        typed[key] = converted
    return typed


def _typed(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (an int becomes a float where a float is due), or :data:`_WRONG_TYPE`.

    Supports the config's types: str, bool, int (never a bool), float, list[T] and optional T.
    """
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _typed(value, inner)
    if typing.get_origin(tp) is list:
        if not isinstance(value, list):
            return _WRONG_TYPE
        items = [_typed(item, args[0]) for item in value]
        return _WRONG_TYPE if any(item is _WRONG_TYPE for item in items) else items
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        return _WRONG_TYPE
    return value if isinstance(value, tp) else _WRONG_TYPE


def _quoted_number_hint(value: Any) -> str:
    """A hint for a number that arrived as text (quoted, or YAML's ``1e-3``, which YAML 1.1 reads as a string)."""
    if not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    return " (a number written as text: do not quote numbers, and write exponents with a dot, e.g. 1.0e-3)"


def _describe(tp: Any, article: bool = True) -> str:
    """How an error message names type ``tp``: "a list of int", "a float or null", ..."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        described = f"{_describe(inner, article)}{',' if typing.get_origin(inner) is list else ''} or null"
        return described if article else f"({described})"
    if typing.get_origin(tp) is list:
        return f"{'a ' if article else ''}list of {_describe(args[0], article=False)}"
    name = {str: "string", bool: "bool (true or false)"}.get(tp, tp.__name__)
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}" if article else name


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")
