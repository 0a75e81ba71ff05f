"""The search space of ``dropnet tune``: which config fields are searched, over which ranges.

Each searchable parameter is a :class:`Range` settings model (the project's one settings
mechanism), whose fields' types state what the parameter allows and whose defaults are the
paper's ranges (Srivastava et al. 2014, appendix A). A space maps parameter names to ranges:
:func:`default_space` for a base config, or :func:`load_space` from a YAML file that lists the
parameters to search (``{}`` or null takes a parameter's default range; the parameters not listed
keep the base config's values)::

    retain_hidden: {low: 0.3, high: 0.8}
    max_norm: {}
    lr: {low: 0.01, high: 0.3, log: true}

A bad space is refused before any trial (:func:`check_space`), naming the parameter, the value and
what is allowed; every sampled config is then checked by :class:`TrainConfig` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import yaml
from pydantic import Field, model_validator

from dropnet.core.errors import ConfigError
from dropnet.settings_base import Settings
from dropnet.settings_flags import merged
from dropnet.trainer.config import MaxNorm, Retain, TrainConfig

if TYPE_CHECKING:
    import optuna

Positive = Annotated[float, Field(gt=0)]
Momentum = Annotated[float, Field(ge=0, lt=1)]
Decay = Annotated[float, Field(gt=0, le=1)]
Epochs = Annotated[int, Field(ge=0)]


class Range(Settings):
    """A closed range [low, high] a parameter is sampled from (low == high fixes it)."""

    low: float
    high: float
    log: bool = False
    """Sample uniformly in log space (needs low > 0)."""

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(
                f"{self.section}: low {self.low!r} > high {self.high!r}; expected low <= high"
            )
        if self.log and self.low <= 0:
            raise ValueError(f"{self.section}: log sampling needs low > 0, got low {self.low!r}")
        return self

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample this parameter in ``trial``; returns {parameter: value}."""
        return {self.section: trial.suggest_float(self.section, self.low, self.high, log=self.log)}


class RetainInput(Range):
    """Retain probability p of the input units (paper: 0.8 for real-valued inputs such as pixels)."""

    section: ClassVar[str] = "retain_input"
    low: Retain = 0.5
    high: Retain = 1.0


class RetainHidden(Range):
    """Retain probability p of each fully connected hidden layer (paper: typically 0.5 to 0.8)."""

    section: ClassVar[str] = "retain_hidden"
    low: Retain = 0.4
    high: Retain = 0.9


class RetainConv(Range):
    """Retain probability after each conv block (conv nets only; paper: 0.75 to 0.9 in its conv nets)."""

    section: ClassVar[str] = "retain_conv"
    low: Retain = 0.5
    high: Retain = 1.0


class MaxNormC(Range):
    """Max-norm bound c on each hidden unit's incoming weights (paper: typically 3 to 4)."""

    section: ClassVar[str] = "max_norm"
    low: MaxNorm = 2.0
    high: MaxNorm = 5.0


class LearningRate(Range):
    """Initial learning rate (on the batch's mean loss; dropout nets want 10-100x a plain net's)."""

    section: ClassVar[str] = "lr"
    low: Positive = 0.01
    high: Positive = 0.3
    log: bool = True


class MomentumEnd(Range):
    """Final momentum, reached at the end of the ramp (paper: 0.95 to 0.99 for dropout nets)."""

    section: ClassVar[str] = "momentum_end"
    low: Momentum = 0.8
    high: Momentum = 0.99


class LrDecay(Range):
    """Multiplicative learning-rate decay per epoch (or per step of the "step" schedule)."""

    section: ClassVar[str] = "lr_decay"
    low: Decay = 0.9
    high: Decay = 1.0


class MomentumRamp(Range):
    """Epochs over which momentum rises linearly from its start to its final value (0 = final from the start)."""

    section: ClassVar[str] = "momentum_ramp_epochs"
    low: Epochs = 0
    high: Epochs = 20

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {self.section: trial.suggest_int(self.section, int(self.low), int(self.high), log=self.log)}


class WeightDecay(Range):
    """L2 penalty coefficient; with ``zero`` a trial may also go without (a separate yes/no parameter)."""

    section: ClassVar[str] = "weight_decay"
    low: Positive = 1e-6
    high: Positive = 1e-3
    log: bool = True
    zero: bool = True
    """Also search "no weight decay", as the parameter ``use_weight_decay``."""

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        if self.zero and not trial.suggest_categorical(USE_WEIGHT_DECAY, [False, True]):
            return {self.section: 0.0}
        return super().suggest(trial)


USE_WEIGHT_DECAY = "use_weight_decay"
"""The yes/no parameter a :class:`WeightDecay` range with ``zero`` adds."""


@dataclass(frozen=True)
class Parameter:
    """A searchable parameter: its range model and the config field it sets."""

    range: type[Range]
    section: str
    """Config section of the field ("model" or "optim")."""
    conv_only: bool = False


PARAMETERS: dict[str, Parameter] = {
    p.range.section: p
    for p in (
        Parameter(RetainInput, "model"),
        Parameter(RetainHidden, "model"),
        Parameter(RetainConv, "model", conv_only=True),
        Parameter(MaxNormC, "model"),
        Parameter(LearningRate, "optim"),
        Parameter(MomentumEnd, "optim"),
        Parameter(MomentumRamp, "optim"),
        Parameter(LrDecay, "optim"),
        Parameter(WeightDecay, "optim"),
    )
}
"""Every searchable parameter, by name (the name of the config field it sets)."""

Space = dict[str, Range]
"""A search space: parameter name → its range."""


def default_space(base: TrainConfig) -> Space:
    """Every parameter that applies to ``base`` (retain_conv only for conv nets) with its paper range."""
    return {name: p.range() for name, p in PARAMETERS.items() if not p.conv_only or base.model.arch == "conv"}


def load_space(path: Path) -> Space:
    """The space a YAML file lists: a mapping of parameter names to ranges (``{}`` or null: the default range)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"space file {path}: not valid YAML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"space file {path}: cannot be read ({reason})") from None
    try:
        return parse_space(raw)
    except ConfigError as exc:
        raise ConfigError(f"space file {path}: {exc}") from None


def parse_space(raw: Any) -> Space:
    """A space from a mapping such as a parsed YAML file; unknown parameters and bad ranges are refused."""
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(
            f"a search space must be a non-empty mapping of parameter names to ranges, got {raw!r}; "
            f"parameters: {sorted(PARAMETERS)}"
        )
    unknown = sorted(str(name) for name in raw if name not in PARAMETERS)
    if unknown:
        raise ConfigError(f"unknown search parameter(s) {unknown}; expected some of {sorted(PARAMETERS)}")
    return {name: PARAMETERS[name].range.from_dict(value or {}) for name, value in raw.items()}


def check_space(space: Space, base: TrainConfig) -> None:
    """Refuse a space that does not fit ``base``: every range is checked again, then against the config."""
    for name, value in space.items():
        value.validate()
        if PARAMETERS[name].conv_only and base.model.arch != "conv":
            raise ConfigError(
                f"{name} is searched but the base config's model.arch is {base.model.arch!r}; "
                f"{name} applies to conv nets only: remove it from the space"
            )
    retains = sorted(set(space) & {"retain_input", "retain_hidden", "retain_conv"})
    if retains and base.model.retain is not None:
        raise ConfigError(
            f"{retains} are searched but the base config sets model.retain {base.model.retain}, which overrides "
            "them; remove model.retain from the base config or those parameters from the space"
        )
    if "max_norm" in space and base.model.max_norm_per_layer is not None:
        raise ConfigError(
            f"max_norm is searched but the base config sets model.max_norm_per_layer "
            f"{base.model.max_norm_per_layer}, which overrides it; remove one of them"
        )
    if "lr_decay" in space and base.optim.lr_schedule == "constant":
        raise ConfigError(
            "lr_decay is searched but the base config's optim.lr_schedule is 'constant', which ignores it; "
            "use an 'exponential' or 'step' schedule or remove lr_decay from the space"
        )


def sample_config(space: Space, base: TrainConfig, trial: optuna.Trial) -> TrainConfig:
    """``base`` with every parameter of ``space`` sampled in ``trial``, checked by :class:`TrainConfig`."""
    changes: dict[str, dict[str, Any]] = {}
    for name, value in space.items():
        changes.setdefault(PARAMETERS[name].section, {}).update(value.suggest(trial))
    return TrainConfig.from_dict(merged(base.to_dict(), changes))


def space_to_dict(space: Space) -> dict[str, dict[str, Any]]:
    """A JSON-able form of ``space`` that :func:`parse_space` reads back."""
    return {name: value.to_dict() for name, value in space.items()}
