"""Which gRPC status code each outcome of a request gets, by name (no grpc import).

The one table from error class to status code: the data plane labels its metrics with these
names and the gRPC layer turns them into ``grpc.StatusCode[name]``.
"""

from __future__ import annotations

import asyncio

from dropnet.core.errors import InvalidInputError, NotFoundError, ResourceExhaustedError, UnavailableError

OK = "OK"
INTERNAL = "INTERNAL"

CODE_BY_ERROR: tuple[tuple[type[BaseException], str], ...] = (
    (InvalidInputError, "INVALID_ARGUMENT"),
    (NotFoundError, "NOT_FOUND"),
    (ResourceExhaustedError, "RESOURCE_EXHAUSTED"),
    (UnavailableError, "UNAVAILABLE"),
    (asyncio.CancelledError, "CANCELLED"),
)
"""Error class → status code name; the first matching class wins, anything else is INTERNAL."""


def status_code_name(error: BaseException | None) -> str:
    """The status code name of a request that raised ``error`` (None: it succeeded)."""
    if error is None:
        return OK
    for error_class, code in CODE_BY_ERROR:
        if isinstance(error, error_class):
            return code
    return INTERNAL
