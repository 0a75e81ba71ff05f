"""Registering a generated gRPC service with request deserializers that cannot fail.

The generated ``add_*Servicer_to_server`` decodes each request with its message's ``FromString``.
Bytes that are not such a message make that raise inside grpc, which logs a traceback and ends the
call UNKNOWN. :func:`add_service` registers the same service from the generated function's own
method table (it calls the function on a recorder, so no method is listed by hand) with each
deserializer wrapped: bytes that do not decode become an :class:`Undecodable` marker, which
:func:`dropnet.server.grpc_errors.handle_errors` turns into INVALID_ARGUMENT without a traceback.
Like a message over the size limit, which grpc refuses itself, such a call never reaches the data
plane, so it is not counted in ``dropnet_requests_total``. Health and reflection keep their own
registration (the library's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from dropnet.core.errors import InvalidInputError

Deserializer = Callable[[bytes], Any]


@dataclass(frozen=True)
class Undecodable:
    """Stands for a request message that could not be decoded, in place of the message."""

    method: str
    """The full method name, ``/package.Service/Method``."""
    reason: str
    """Why decoding failed (protobuf's message)."""

    def error(self) -> InvalidInputError:
        return InvalidInputError(
            f"the request to {self.method} is not a valid protobuf message ({self.reason}); "
            "expected a serialized request message of that method"
        )


class _Recorder:
    """Stands in for a server to a generated ``add_*Servicer_to_server``: keeps the method tables it registers."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        """Ignored: the same table comes through :meth:`add_registered_method_handlers`."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.tables[service] = handlers


def add_service(server: grpc.aio.Server, servicer: object, add_to_server: Callable[[Any, Any], None]) -> None:
    """Register ``servicer`` on ``server`` as the generated ``add_to_server`` would, with tolerant deserializers."""
    recorder = _Recorder()
    add_to_server(servicer, recorder)
    if not recorder.tables:
        raise TypeError(f"{add_to_server.__qualname__} registered no method table; expected generated gRPC code")
    for service, table in recorder.tables.items():
        handlers = {name: _tolerant(f"/{service}/{name}", handler) for name, handler in table.items()}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        server.add_registered_method_handlers(service, handlers)


def _tolerant(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` whose request deserializer returns an :class:`Undecodable` instead of raising."""
    if handler.request_streaming or handler.response_streaming:
        raise TypeError(f"{method} streams; add_service registers unary-unary methods only")
    decode: Deserializer = handler.request_deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as exc:  # whatever the bytes, the client sent them: never an error of the server
            return Undecodable(method, str(exc))

    return grpc.unary_unary_rpc_method_handler(
        handler.unary_unary, request_deserializer=deserialize, response_serializer=handler.response_serializer
    )
