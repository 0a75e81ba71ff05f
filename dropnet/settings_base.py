"""The one typed-settings mechanism: the trainer's config, the server's settings and their CLI flags.

Each is a :class:`Settings`, a pydantic v2 ``BaseModel`` (the library MLServer and KServe build their
settings on). A model rather than a pydantic dataclass because its ``model_config`` carries the whole
policy in one place and nested sections (``model``, ``optim``, ``data``) validate from plain dicts:

- strict types: ``"10"`` is no int, ``1`` is no bool; an int is taken where a float is due;
- unknown keys refused by name (``extra="forbid"``); inf and nan refused for every float;
- each field's docstring is its description (``use_attribute_docstrings``), which ``--help`` shows.

Every check runs when a settings object is built, and again on :meth:`Settings.validate` (the
trainer's sections stay mutable; the server's settings are frozen). A failed check raises the
project's :class:`ConfigError`, converted from pydantic's ``ValidationError`` here only, with one
line per problem (see :mod:`dropnet.settings_errors`). pydantic lives outside :mod:`dropnet.core`,
which stays standard library and numpy only, so the embedded Predictor never imports it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from dropnet.core.errors import ConfigError
from dropnet.settings_errors import problems

S = TypeVar("S", bound="Settings")


class Settings(BaseModel):
    """Base of every typed settings model; build it from keywords or :meth:`from_dict`."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        allow_inf_nan=False,
        use_attribute_docstrings=True,
        revalidate_instances="always",  # validate() re-checks sections assigned or changed since
    )
    section: ClassVar[str] = ""
    """Key of this model inside its parent ("model" for the trainer's model section), prefixed to error paths."""

    def __init__(self, **values: Any) -> None:
        with _config_errors(type(self), values):
            super().__init__(**values)

    # A plain wrapper of BaseModel.__init__: nested sections keep being validated by pydantic itself,
    # so one ConfigError lists every problem with its full path (pydantic's own marker, as RootModel uses).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def from_dict(cls: type[S], raw: Any) -> S:
        """Build from a (possibly partial) mapping, e.g. a YAML preset or a config.json section."""
        with _config_errors(cls, raw):
            return cls.model_validate(raw)

    def validate(self) -> None:  # type: ignore[override]  # pydantic's deprecated v1 classmethod
        """Check the current values again, as when built; :class:`ConfigError` lists each problem."""
        with _config_errors(type(self), self):
            type(self).model_validate(self)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict that :meth:`from_dict` turns back into an equal object."""
        return self.model_dump()


@contextmanager
def _config_errors(cls: type[Settings], raw: Any) -> Iterator[None]:
    """Turn a ValidationError of ``cls`` built from ``raw`` into a ConfigError, one line per problem."""
    try:
        yield
    except ValidationError as exc:
        prefix = (cls.section,) if cls.section else ()
        raise ConfigError("\n".join(problems(exc, cls, raw, prefix))) from None
