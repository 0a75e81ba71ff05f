"""Command-line flags generated from a :class:`~dropnet.settings_base.Settings` model, one per field.

Each flag's help is its field's description (the docstring under the field) and default. Lists
are comma-separated (``--hidden 1024,1024``), optional values accept ``none``, booleans come as
``--x/--no-x`` and a Literal shows its choices as metavar. A flag is named after its field
(``--max-norm``) unless renamed; a field name used in two sections is prefixed with its section.
Only the flags given on the command line are collected (:func:`given_values`): the settings
model checks them, so a value out of range is a ConfigError naming the field.
"""

from __future__ import annotations

import argparse
import typing
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from dropnet.settings_errors import is_section

_DEST_PREFIX = "settings:"


@dataclass(frozen=True)
class Flag:
    """One command-line flag that sets one settings field."""

    key: str
    """Dotted field path: "optim.lr", or "seed" for a top-level field."""
    option: str
    """The flag, e.g. "--lr"."""
    field: FieldInfo
    owner: type[BaseModel]
    """The model (or section) the field belongs to."""

    @property
    def dest(self) -> str:
        return _DEST_PREFIX + self.key


def flags(model: type[BaseModel], renames: Mapping[str, str] | None = None) -> list[Flag]:
    """A flag for every leaf field of ``model`` and its sections; ``renames`` maps dotted keys to flags."""
    leaves = list(_leaves(model))
    counts = Counter(key.rpartition(".")[2] for key, _, _ in leaves)
    result = []
    for key, field, owner in leaves:
        section, _, name = key.rpartition(".")
        spelled = name if counts[name] == 1 else f"{section.replace('.', '_')}_{name}"
        result.append(Flag(key, (renames or {}).get(key) or "--" + spelled.replace("_", "-"), field, owner))
    return result


def add_flags(
    parser: argparse.ArgumentParser, model: type[BaseModel], name: str, note: str = "",
    renames: Mapping[str, str] | None = None,
) -> None:
    """Add one flag per field of ``model``, grouped as "``name`` settings``note``" and one group per section."""
    groups: dict[str, Any] = {"": parser.add_argument_group(f"{name} settings{note}")}
    for flag in flags(model, renames):
        section = flag.key.rpartition(".")[0]
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} settings{note}", flag.owner.__doc__)
        help_text = " ".join((flag.field.description or "").split())
        if flag.field.is_required():
            help_text += " (required)"
        else:
            help_text += f" (default: {_show(flag.field.get_default(call_default_factory=True))})"
        kwargs: dict[str, Any] = {"dest": flag.dest, "default": argparse.SUPPRESS, "help": help_text.replace("%", "%%")}
        if flag.field.annotation is bool:
            groups[section].add_argument(flag.option, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            convert, metavar = converter(flag.field.annotation)
            groups[section].add_argument(
                flag.option, type=convert, metavar=metavar, required=flag.field.is_required(), **kwargs
            )


def given_values(args: argparse.Namespace) -> dict[str, Any]:
    """The values of the flags given on the command line, nested by section: {"optim": {"lr": 0.1}}."""
    values: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if dest.startswith(_DEST_PREFIX):
            *sections, name = dest.removeprefix(_DEST_PREFIX).split(".")
            target = values
            for section in sections:
                target = target.setdefault(section, {})
            target[name] = value
    return values


def merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied, section by section (e.g. a preset's dict with the flags given)."""
    result = dict(base)
    for key, value in changes.items():
        nested = isinstance(value, Mapping) and isinstance(base.get(key), Mapping)
        result[key] = merged(base[key], value) if nested else value
    return result


def converter(tp: Any) -> tuple[Callable[[str], Any], str]:
    """A parser for one command-line value of type ``tp``, and its metavar."""
    if typing.get_origin(tp) is Annotated:
        return converter(typing.get_args(tp)[0])
    args = typing.get_args(tp)
    if type(None) in args:
        (inner_type,) = [arg for arg in args if arg is not type(None)]
        inner, metavar = converter(inner_type)

        def optional(text: str) -> Any:
            return None if text.strip().lower() == "none" else inner(text)

        return optional, f"{metavar}|none"
    if typing.get_origin(tp) is list:
        item, metavar = converter(args[0])

        def items(text: str) -> list[Any]:
            return [item(part) for part in text.split(",")]

        return items, f"{metavar},..."
    if typing.get_origin(tp) is Literal:
        return _scalar(str), "{" + ",".join(args) + "}"
    if tp in (int, float, str, Path):
        return _scalar(tp), "PATH" if tp is Path else tp.__name__.upper()
    raise TypeError(f"no command-line converter for settings type {tp!r}")


def _scalar(tp: type) -> Callable[[str], Any]:
    expected = {int: "an integer", float: "a number", str: "a string", Path: "a path"}[tp]

    def parse(text: str) -> Any:
        try:
            return tp(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return parse


def _leaves(model: type[BaseModel], prefix: str = "") -> typing.Iterator[tuple[str, FieldInfo, type[BaseModel]]]:
    """(dotted key, field, model holding it) of every field that is no section; top-level fields first."""
    sections = []
    for name, field in model.model_fields.items():
        if is_section(field.annotation):
            sections.append((name, field.annotation))
        else:
            yield prefix + name, field, model
    for name, section in sections:
        yield from _leaves(section, f"{prefix}{name}.")


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(_show(v) for v in value)
    return str(value)
