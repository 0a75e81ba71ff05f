"""The one place where errors become gRPC status codes: a decorator on every servicer method.

The table itself is :data:`dropnet.server.status_codes.CODE_BY_ERROR` (shared with the metrics):
InvalidInputError → INVALID_ARGUMENT, NotFoundError → NOT_FOUND, ResourceExhaustedError →
RESOURCE_EXHAUSTED, UnavailableError → UNAVAILABLE, each with the error's message (a request
that could not be decoded, :class:`dropnet.server.registration.Undecodable`, is an
InvalidInputError). Anything else — including ModelPackageError, a server-side fault the client
cannot fix and whose message names server paths — becomes INTERNAL with a generic message; the
traceback goes to the log only, and only then: a client's mistake logs nothing. Cancellation
(client gone, deadline passed) is not an error and propagates to grpc untouched.

A status message travels in a response trailer (``grpc-message``, percent-encoded), and grpc
refuses trailers over 8 KiB by default, so the client would see RESOURCE_EXHAUSTED instead of the
real code. Messages quote client strings through :func:`dropnet.core.errors.quoted`; as a last
bound, :func:`bounded` cuts any message to :data:`MAX_STATUS_MESSAGE_BYTES` on the wire.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from dropnet.server.registration import Undecodable
from dropnet.server.status_codes import INTERNAL, status_code_name

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal server error; the server log has the details"
MAX_STATUS_MESSAGE_BYTES = 2048
"""Most bytes a status message takes in its trailer, percent-encoded: a quarter of grpc's default limit."""
CUT = " ... (message cut)"

Request = TypeVar("Request")
Response = TypeVar("Response")
Method = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]


def status_of(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for ``error``."""
    name = status_code_name(error)
    if name == INTERNAL:
        return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
    return grpc.StatusCode[name], bounded(str(error))


def bounded(message: str, limit: int = MAX_STATUS_MESSAGE_BYTES) -> str:
    """``message``, cut (and marked so) where its percent-encoded form would pass ``limit`` bytes."""
    budget = limit - len(CUT)
    used = 0
    for index, char in enumerate(message):
        used += _wire_bytes(char)
        if used > budget:
            return message[:index] + CUT
    return message


def _wire_bytes(char: str) -> int:
    """Bytes ``char`` takes in grpc-message: printable ASCII but ``%`` as is, any other UTF-8 byte as ``%XX``."""
    if " " <= char <= "~" and char != "%":
        return 1
    return 3 * len(char.encode("utf-8", "surrogatepass"))


def handle_errors(method: Method[Request, Response]) -> Method[Request, Response]:
    """Wrap an async unary servicer method so every exception (or undecodable request) ends the call with its status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            if isinstance(request, Undecodable):
                raise request.error()
            return await method(self, request, context)
        except Exception as exc:
            code, message = status_of(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method.__qualname__)
            await context.abort(code, message)

    return wrapper
