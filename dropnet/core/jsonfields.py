"""Typed reads of a parsed JSON document whose every refusal names the key path and what was expected.

    fields = JsonObject(raw, "", "manifest.json", ModelPackageError, keys=("name", "input"))
    name = fields.string("name")
    spec = fields.object("input", keys=("shape", "dtype"))  # refused as "manifest.json: input.shape ..."

Standard library only (the core imports it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar

from dropnet.core.errors import DropnetError

T = TypeVar("T")


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite JSON number (bool is not a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    """Whether ``value`` is a JSON integer (bool is not an integer)."""
    return isinstance(value, int) and not isinstance(value, bool)


def frozen(value: Any) -> Any:
    """A JSON value made read-only: objects become mappingproxies and arrays tuples, recursively."""
    if isinstance(value, dict):
        return MappingProxyType({key: frozen(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(frozen(item) for item in value)
    return value


def thawed(value: Any) -> Any:
    """The plain JSON value (dicts and lists) of a :func:`frozen` one."""
    if isinstance(value, Mapping):
        return {key: thawed(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thawed(item) for item in value]
    return value


class JsonObject:
    """One JSON object at key path ``path`` of the document ``where``, read key by key.

    ``keys`` are the keys it may hold; any other key is refused, so a misspelt key is an error
    rather than a silently ignored one. Failures raise ``error`` with a message such as
    "manifest.json: input.value_range must be [low, high], got [0]".
    """

    def __init__(
        self, value: Any, path: str, where: str, error: type[DropnetError], keys: Collection[str]
    ) -> None:
        self.path, self.where, self.error = path, where, error
        if not isinstance(value, dict):
            self._refuse(path or "the document", f"a JSON object with keys {sorted(keys)}", value)
        unknown = sorted(set(value) - set(keys))
        if unknown:
            inside = f"{path} has" if path else "has"
            raise error(f"{where}: {inside} unknown key(s) {unknown}; expected only {sorted(keys)}")
        self._value: dict[str, Any] = value

    def has(self, key: str) -> bool:
        """Whether the object holds ``key``."""
        return key in self._value

    def key_path(self, key: str) -> str:
        """The full key path of ``key``, e.g. "input.shape"."""
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, expected: str, got: Any) -> NoReturn:
        """Refuse the value ``got`` of ``key``: "<where>: <path> must be <expected>, got <got>"."""
        self._refuse(self.key_path(key), expected, got)

    def refuse_present(self, key: str, expected: str) -> None:
        """Refuse ``key`` if the object holds it (``expected`` says why it must be absent)."""
        if key in self._value:
            self.fail(key, expected, self._value[key])

    def get(self, key: str, expected: str, parse: Callable[[Any], T | None]) -> T:
        """``parse(value)`` of ``key``; refused when the key is missing or ``parse`` returns None.

        ``expected`` describes an acceptable value for the messages ("a positive integer").
        """
        if key not in self._value:
            raise self.error(f"{self.where}: {self.key_path(key)} is missing; expected {expected}")
        parsed = parse(self._value[key])
        if parsed is None:
            self.fail(key, expected, self._value[key])
        return parsed

    def object(self, key: str, keys: Collection[str]) -> JsonObject:
        """The JSON object under ``key``, which may hold ``keys``."""
        expected = f"a JSON object with keys {sorted(keys)}"
        return JsonObject(self.get(key, expected, _same), self.key_path(key), self.where, self.error, keys)

    def string(self, key: str) -> str:
        """A non-empty string."""
        return self.get(key, "a non-empty string", lambda v: v if isinstance(v, str) and v else None)

    def choice(self, key: str, choices: Collection[str]) -> str:
        """One of ``choices``."""
        return self.get(key, f"one of {list(choices)}", lambda v: v if isinstance(v, str) and v in choices else None)

    def integer(self, key: str, low: int = 1) -> int:
        """An integer >= ``low``."""
        return self.get(key, f"an integer >= {low}", lambda v: v if is_int(v) and v >= low else None)

    def number(self, key: str, positive: bool = False) -> float:
        """A finite number (> 0 when ``positive``)."""
        expected = "a positive finite number" if positive else "a finite number"
        return self.get(key, expected, lambda v: float(v) if is_number(v) and (v > 0 or not positive) else None)

    def boolean(self, key: str) -> bool:
        """true or false."""
        return self.get(key, "true or false", lambda v: v if isinstance(v, bool) else None)

    def strings(self, key: str, non_empty: bool) -> tuple[str, ...]:
        """A list of distinct non-empty strings, e.g. labels (with at least one when ``non_empty``)."""
        expected = f"a {'non-empty ' if non_empty else ''}list of distinct non-empty strings"
        return self.get(key, expected, lambda v: _distinct(_list_of(v, lambda s: isinstance(s, str) and bool(s), non_empty)))

    def mapping(self, key: str) -> Mapping[str, Any]:
        """A JSON object of any content, read-only."""
        return self.get(key, "a JSON object", lambda v: frozen(v) if isinstance(v, dict) else None)

    def _refuse(self, path: str, expected: str, got: Any) -> NoReturn:
        raise self.error(f"{self.where}: {path} must be {expected}, got {_show(got)}")


def _same(value: Any) -> Any:
    return value


def _list_of(value: Any, accept: Callable[[Any], bool], non_empty: bool) -> tuple[Any, ...] | None:
    if not isinstance(value, list) or (non_empty and not value) or not all(accept(item) for item in value):
        return None
    return tuple(value)


def _distinct(items: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    return items if items is not None and len(set(items)) == len(items) else None


def _show(value: Any, limit: int = 120) -> str:
    """``repr(value)``, shortened: a whole manifest section in a message helps nobody."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
