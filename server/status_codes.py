"""Which status each outcome of a request gets, on gRPC (by code name, no grpc import) and on HTTP.

The one table, :data:`STATUSES`: error class → gRPC status code name → HTTP status. The data plane
labels its metrics with the code names, the gRPC layer turns them into ``grpc.StatusCode[name]``
and the REST layer (:mod:`dropnet.server.rest`) answers with the HTTP status beside them.

HTTP choices: RESOURCE_EXHAUSTED is 429 (Too Many Requests), the standard mapping of that gRPC code
(google.rpc.Code): it covers a full queue, where retrying later helps, and a request over the cost
or response-size limits, whose message says what to make smaller. A request *body* over
``--max-message-bytes`` is refused by the HTTP layer itself with 413 (:data:`BODY_TOO_LARGE`), as
grpc refuses an oversized message before any servicer sees it. CANCELLED is 499 (the client closed
the request; nginx's convention), which no client sees.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from dropnet.core.errors import InvalidInputError, NotFoundError, ResourceExhaustedError, UnavailableError

OK = "OK"
INTERNAL = "INTERNAL"
UNAUTHENTICATED = "UNAUTHENTICATED"
BODY_TOO_LARGE = 413
"""HTTP status of a request body over ``--max-message-bytes``."""


@dataclass(frozen=True)
class Status:
    """One outcome: its gRPC status code name, its HTTP status and the error class that leads to it."""

    code: str
    http: int
    error: type[BaseException] | None = None
    """None: set by the transport layers themselves (success, a missing token, an unexpected failure)."""


STATUSES: tuple[Status, ...] = (
    Status(OK, 200),
    Status("INVALID_ARGUMENT", 400, InvalidInputError),
    Status(UNAUTHENTICATED, 401),
    Status("NOT_FOUND", 404, NotFoundError),
    Status("RESOURCE_EXHAUSTED", 429, ResourceExhaustedError),
    Status("CANCELLED", 499, asyncio.CancelledError),
    Status(INTERNAL, 500),
    Status("UNAVAILABLE", 503, UnavailableError),
)
"""Every outcome; for errors, the first row whose class matches wins, anything else is INTERNAL."""

CODE_BY_ERROR: tuple[tuple[type[BaseException], str], ...] = tuple(
    (status.error, status.code) for status in STATUSES if status.error is not None
)
"""Error class → status code name (the rows of :data:`STATUSES` with an error class)."""
HTTP_STATUS: dict[str, int] = {status.code: status.http for status in STATUSES}
"""Status code name → HTTP status."""


def status_code_name(error: BaseException | None) -> str:
    """The status code name of a request that raised ``error`` (None: it succeeded)."""
    if error is None:
        return OK
    for error_class, code in CODE_BY_ERROR:
        if isinstance(error, error_class):
            return code
    return INTERNAL


def http_status(error: BaseException | None) -> int:
    """The HTTP status of a request that raised ``error`` (None: it succeeded)."""
    return HTTP_STATUS[status_code_name(error)]
