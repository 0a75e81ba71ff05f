"""The project's one error hierarchy.

Every error a user can cause derives from :class:`DropnetError` and carries a message that
names what was wrong and what was expected. The CLI prints the message (no traceback); the
server maps each class to a status code in one table, ``dropnet.server.status_codes.CODE_BY_ERROR``
(shared by the gRPC error handler ``dropnet.server.grpc_errors`` and the metrics).

A message that repeats what a client sent quotes it through :func:`quoted` (one string) or
:func:`quoted_list` (several), so its length stays bounded whatever the client sent.
"""

from __future__ import annotations

from collections.abc import Iterable

QUOTE_LIMIT = 64
"""Most characters of one client string an error message repeats."""
LIST_LIMIT = 5
"""Most items of a list of client strings an error message repeats."""


class DropnetError(Exception):
    """Base class of every error dropnet raises on purpose."""


class ConfigError(DropnetError):
    """A configuration (preset, flags, config.json) is invalid or self-contradictory."""


class DataError(DropnetError):
    """A dataset file is missing, malformed, or holds values outside what is expected."""


class RunDirError(DropnetError):
    """A training run directory is missing files or is inconsistent."""


class ModelPackageError(DropnetError):
    """An exported model package is missing, corrupt, or fails verification."""


class InvalidInputError(DropnetError):
    """An inference request's input does not match what the model expects."""


class NotFoundError(DropnetError):
    """A requested model, version or output does not exist."""


class ResourceExhaustedError(DropnetError):
    """A bounded resource (queue, message size) is full; retry later or send less."""


class UnavailableError(DropnetError):
    """The server cannot finish the request now (it is shutting down); retry, on another instance if need be."""


def quoted(text: object, limit: int = QUOTE_LIMIT) -> str:
    """``text`` as ``repr(str(text))``, cut to its first ``limit`` characters when longer, the cut marked.

    ``quoted("nope") == "'nope'"``; ``quoted("x" * 20000)`` is 64 x in quotes, then ``... (20000 characters)``.
    """
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def quoted_list(items: Iterable[object], shown: int = LIST_LIMIT, limit: int = QUOTE_LIMIT) -> str:
    """Client strings as a list for an error message: the first ``shown``, each :func:`quoted`, and how many more.

    ``quoted_list(["a", "b"]) == "['a', 'b']"``; 2,000 names give ``['n0', 'n1', 'n2', 'n3', 'n4', ... 1995 more]``.
    """
    items = list(items)
    head = ", ".join(quoted(item, limit) for item in items[:shown])
    more = len(items) - shown
    return f"[{head}, ... {more} more]" if more > 0 else f"[{head}]"
