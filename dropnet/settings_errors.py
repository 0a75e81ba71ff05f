"""One line per problem of a pydantic ``ValidationError``: the field's path, what it must be, the value given.

``model.hidden must be a list of int, got 512`` (a wrong type names the field's whole type and
value), ``model.hidden[1] must be an int >= 1, got 0`` and ``port must be an int in [0, 65535],
got 70000`` (a value out of range names its allowed range), ``model.flavour must be one of
['paper', 'inverted', 'gaussian'], got 'bogus'``, ``unknown key(s) ['widths'] in config section
'model'; expected [...]``. Checks written as validators raise ``ValueError`` with a whole sentence,
which is passed on as it is.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}
_KEY_ERRORS = {"extra_forbidden", "invalid_key"}
_MAPPING_ERRORS = {"model_type", "model_attributes_type", "dict_type"}
_SYMBOLS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
_TYPE_NAMES = {str: "string", bool: "bool (true or false)", Path: "path"}


def problems(exc: ValidationError, root: type[BaseModel], raw: Any, prefix: tuple[str, ...] = ()) -> list[str]:
    """One line per problem of ``exc``, raised validating ``raw`` as ``root``; ``prefix`` starts every path.

    Unknown keys come first, grouped per section; a field with several wrong items is named once.
    """
    unknown: dict[tuple[Any, ...], list[Any]] = {}
    lines: list[str] = []
    for error in exc.errors():
        if error["type"] in _KEY_ERRORS:
            unknown.setdefault(error["loc"][:-1], []).append(error["loc"][-1])
            continue
        line = _problem(error, root, raw, prefix)
        if line not in lines:
            lines.append(line)
    return [_unknown_keys(root, parent, keys, prefix) for parent, keys in unknown.items()] + lines


def _describe(tp: Any, bounds: bool = False, article: bool = True) -> str:
    """How a message names type ``tp``: "a list of int", "a float or null", with ``bounds`` "an int >= 1"."""
    metadata: list[Any] = []
    if typing.get_origin(tp) is Annotated:
        tp, *extra = typing.get_args(tp)
        metadata = [m for item in extra for m in (item.metadata if isinstance(item, FieldInfo) else [item])]
    args = typing.get_args(tp)
    if _is_optional(tp):
        inner = _non_null(tp)
        inner_text = _describe(Annotated[(inner, *metadata)] if metadata else inner, bounds, article)
        text = f"{inner_text}{',' if typing.get_origin(inner) is list else ''} or null"
        return text if article else f"({text})"
    if typing.get_origin(tp) is list:
        return f"{'a ' if article else ''}list of {_describe(args[0], bounds, article=False)}"
    if typing.get_origin(tp) is Literal:
        return f"one of {list(args)}"
    name = _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))
    if bounds:
        name = "finite float" if tp is float else name
        name = f"{name} {_range(metadata)}".rstrip()
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}" if article else name


def _problem(error: Any, root: type[BaseModel], raw: Any, prefix: tuple[str, ...]) -> str:
    """The line for one error that is not an unknown key."""
    loc = error["loc"]
    names, _, field, rest = _locate(root, loc)
    path = ".".join(prefix + tuple(names))
    if error["type"] in ("value_error", "assertion_error"):
        return str(error["ctx"]["error"])
    if field is None:
        if error["type"] in _MAPPING_ERRORS:
            where = f"config section '{path}'" if path else "a config"
            return f"{where} must be a mapping, got {type(error['input']).__name__}"
        return f"{path or 'config'}: {error['msg']}"
    if error["type"] == "missing":
        return f"{path} is required"
    field_type = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    if error["type"] in _RANGE_ERRORS:
        index = "".join(f"[{part}]" for part in rest)
        return f"{path}{index} must be {_describe(_item_type(field_type, rest), bounds=True)}, got {error['input']!r}"
    value = _value_at(raw, loc[: len(names)])
    return f"{path} must be {_describe(field_type)}, got {value!r}{_quoted_number_hint(value)}"


def _unknown_keys(root: type[BaseModel], parent: tuple[Any, ...], keys: list[Any], prefix: tuple[str, ...]) -> str:
    names, owner, _, _ = _locate(root, parent)
    path = ".".join(prefix + tuple(names))
    where = f"in config section '{path}'" if path else "in the config"
    return f"unknown key(s) {sorted(keys, key=str)} {where}; expected {sorted(owner.model_fields)}"


def _locate(
    root: type[BaseModel], loc: tuple[Any, ...]
) -> tuple[list[str], type[BaseModel], FieldInfo | None, tuple[Any, ...]]:
    """Split ``loc`` into the names down to a field, the model holding it, the field (None where ``loc``
    ends in a section or past its fields) and what lies past it (list indices)."""
    model, names = root, []
    for i, part in enumerate(loc):
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return names, model, None, loc[i:]
        names.append(part)
        if not is_section(field.annotation):
            return names, model, field, loc[i + 1 :]
        model = field.annotation
    return names, model, None, ()


def _item_type(tp: Any, rest: tuple[Any, ...]) -> Any:
    """The type of the item at ``rest`` (list indices) inside a value of type ``tp``."""
    for part in rest:
        while typing.get_origin(tp) is Annotated or _is_optional(tp):
            tp = typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else _non_null(tp)
        if typing.get_origin(tp) is list and isinstance(part, int):
            tp = typing.get_args(tp)[0]
    return tp


def _value_at(raw: Any, loc: tuple[Any, ...]) -> Any:
    """The value ``raw`` (a mapping or a model) holds at ``loc``; None where it holds none."""
    for part in loc:
        if isinstance(raw, Mapping):
            raw = raw.get(part)
        elif isinstance(raw, BaseModel):
            raw = getattr(raw, part, None)
        else:
            return None
    return raw


def _range(metadata: list[Any]) -> str:
    """The bounds among pydantic constraints: "in (0, 1]", ">= 1", "< 2**63", or ""."""
    limits = {kind: getattr(m, kind) for m in metadata for kind in _SYMBOLS if getattr(m, kind, None) is not None}
    low = next((kind for kind in ("ge", "gt") if kind in limits), None)
    high = next((kind for kind in ("le", "lt") if kind in limits), None)
    if low and high:
        opening, closing = ("[" if low == "ge" else "("), ("]" if high == "le" else ")")
        return f"in {opening}{_number(limits[low])}, {_number(limits[high])}{closing}"
    kind = low or high
    return f"{_SYMBOLS[kind]} {_number(limits[kind])}" if kind else ""


def _number(value: Any) -> str:
    """``value`` as a bound is written: large powers of two as ``2**63``."""
    if isinstance(value, int) and value >= 2**32 and value & (value - 1) == 0:
        return f"2**{value.bit_length() - 1}"
    return str(value)


def _quoted_number_hint(value: Any) -> str:
    """A hint for a number that arrived as text (quoted, or YAML's ``1e-3``, which YAML 1.1 reads as a string)."""
    if not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    return " (a number written as text: do not quote numbers, and write exponents with a dot, e.g. 1.0e-3)"


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _non_null(tp: Any) -> Any:
    (inner,) = [arg for arg in typing.get_args(tp) if arg is not type(None)]
    return inner


def is_section(tp: Any) -> bool:
    """Whether a field of type ``tp`` is a nested settings model (a section such as ``model``)."""
    return isinstance(tp, type) and issubclass(tp, BaseModel)
