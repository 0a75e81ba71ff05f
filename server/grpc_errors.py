"""The one place where errors become gRPC status codes: a decorator on every servicer method.

The table itself is :data:`dropnet.server.status_codes.CODE_BY_ERROR` (shared with the metrics):
InvalidInputError → INVALID_ARGUMENT, NotFoundError → NOT_FOUND, ResourceExhaustedError →
RESOURCE_EXHAUSTED, each with the error's message. Anything else — including
ModelPackageError, a server-side fault the client cannot fix and whose message names server
paths — becomes INTERNAL with a generic message; the traceback goes to the log only.
Cancellation (client gone, deadline passed) is not an error and propagates to grpc untouched.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from dropnet.server.status_codes import INTERNAL, status_code_name

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal server error; the server log has the details"

Request = TypeVar("Request")
Response = TypeVar("Response")
Method = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]


def status_of(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for ``error``."""
    name = status_code_name(error)
    if name == INTERNAL:
        return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
    return grpc.StatusCode[name], str(error)


def handle_errors(method: Method[Request, Response]) -> Method[Request, Response]:
    """Wrap an async unary servicer method so every exception ends the call with its status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await method(self, request, context)
        except Exception as exc:
            code, message = status_of(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method.__qualname__)
            await context.abort(code, message)

    return wrapper
