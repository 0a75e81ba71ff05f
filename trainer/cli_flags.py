"""Command-line flags generated from the config dataclasses, one per field.

Help text comes from the string literal that follows each field in ``trainer/config.py`` (read
with ``ast``, so the config module stays the single source). Lists are comma-separated
(``--hidden 1024,1024``), optional values accept ``none``, booleans come as ``--x/--no-x``.
A flag is named after its field (``--max-norm``); ``data.name`` is ``--data``; a field name
used in two sections would be prefixed with its section. Only flags given on the command line
override the config.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dropnet.fielddocs import field_docs
from dropnet.trainer.config import DataConfig, ModelConfig, OptimConfig, TrainConfig

SECTIONS: dict[str, type] = {"model": ModelConfig, "optim": OptimConfig, "data": DataConfig}
RENAMES = {"data.name": "data"}
_DEST_PREFIX = "config:"


@dataclass(frozen=True)
class Flag:
    """One command-line flag that sets one config field."""

    key: str
    """Dotted config key: "optim.lr", or "seed" for a top-level field."""
    option: str
    """The flag, e.g. "--lr"."""
    help: str
    type: Any
    """The field's resolved type annotation."""
    default: Any
    """The field's dataclass default, shown in --help."""

    @property
    def dest(self) -> str:
        return _DEST_PREFIX + self.key


def config_flags() -> list[Flag]:
    """A flag for every field of :class:`TrainConfig` and its sections."""
    fields: list[tuple[str, str, type]] = [
        (section, f.name, cls) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)
    ]
    fields += [("", f.name, TrainConfig) for f in dataclasses.fields(TrainConfig) if f.name not in SECTIONS]
    counts: dict[str, int] = {}
    for _, name, _ in fields:
        counts[name] = counts.get(name, 0) + 1
    defaults = TrainConfig()
    flags = []
    for section, name, cls in fields:
        key = f"{section}.{name}" if section else name
        option = RENAMES.get(key) or (name if counts[name] == 1 else f"{section}_{name}")
        owner = getattr(defaults, section) if section else defaults
        flags.append(
            Flag(
                key=key,
                option="--" + option.replace("_", "-"),
                help=field_docs(cls).get(name, ""),
                type=typing.get_type_hints(cls)[name],
                default=getattr(owner, name),
            )
        )
    return flags


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per config field, grouped by section; unset flags leave ``args`` untouched."""
    groups = {
        "": parser.add_argument_group("run settings (override the preset)"),
        **{
            section: parser.add_argument_group(f"{section} settings (override the preset)", cls.__doc__)
            for section, cls in SECTIONS.items()
        },
    }
    for flag in config_flags():
        group = groups[flag.key.rpartition(".")[0]]
        help_text = f"{flag.help} (default: {_show(flag.default)})".replace("%", "%%")
        if flag.type is bool:
            group.add_argument(
                flag.option, dest=flag.dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            convert, metavar = converter(flag.type)
            group.add_argument(
                flag.option, dest=flag.dest, type=convert, metavar=metavar, default=argparse.SUPPRESS, help=help_text
            )


def apply_flags(config: TrainConfig, args: argparse.Namespace) -> TrainConfig:
    """A copy of ``config`` with every flag given on the command line applied."""
    config = copy.deepcopy(config)
    given = vars(args)
    for flag in config_flags():
        if flag.dest in given:
            section, _, name = flag.key.rpartition(".")
            setattr(getattr(config, section) if section else config, name, given[flag.dest])
    return config


def converter(tp: Any) -> tuple[Callable[[str], Any], str]:
    """A parser for one command-line value of type ``tp``, and its metavar."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        (inner_type,) = [a for a in args if a is not type(None)]
        inner, metavar = converter(inner_type)

        def optional(text: str) -> Any:
            return None if text.strip().lower() == "none" else inner(text)

        return optional, f"{metavar}|none"
    if typing.get_origin(tp) is list:
        item, metavar = converter(args[0])

        def items(text: str) -> list[Any]:
            return [item(part) for part in text.split(",")]

        return items, f"{metavar},..."
    if tp in (int, float, str):
        return _scalar(tp), tp.__name__.upper()
    raise TypeError(f"no command-line converter for config type {tp!r}")


def _scalar(tp: type) -> Callable[[str], Any]:
    expected = {int: "an integer", float: "a number", str: "a string"}[tp]

    def parse(text: str) -> Any:
        try:
            return tp(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return parse


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(_show(v) for v in value)
    return str(value)
