"""The gRPC side of :mod:`dropnet.server.security`: TLS server credentials and the bearer-token interceptor.

Every call must carry ``authorization: Bearer TOKEN`` when the server has a ``--token-file``,
except calls to the ``open_services`` (the health service: load balancers and Kubernetes probes
carry no token, and it tells nothing but SERVING / NOT_SERVING). Reflection needs the token like
the inference services: it lists the services to whoever asks, and no probe needs it. A refused
call ends with UNAUTHENTICATED before its request is even parsed; the message never quotes what
the client sent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection

import grpc

from dropnet.server.security import AUTHORIZATION, read_server_tls, read_token, token_refusal
from dropnet.server.settings import ServerSettings

log = logging.getLogger(__name__)


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]

_REFUSAL_HANDLERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}
"""The handler factory for each (request streaming, response streaming) kind of method."""


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' checked PEM files (None without ``--tls-cert``); mutual TLS with a
    client CA."""
    tls = read_server_tls(settings)
    if tls is None:
        return None
    return grpc.ssl_server_credentials(
        [(tls.private_key, tls.certificate_chain)],
        root_certificates=tls.client_ca,
        require_client_auth=tls.client_ca is not None,
    )


def token_interceptors(
    settings: ServerSettings, open_services: Collection[str]
) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors of a server with these settings: a :class:`TokenInterceptor` with ``--token-file``, else none.

    ``open_services`` (full service names) are reachable without the token.
    """
    if settings.token_file is None:
        return []
    return [TokenInterceptor(read_token(settings.token_file), open_services)]


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Lets a call through when it carries the bearer token (compared in constant time) or calls an open service."""

    def __init__(self, token: str, open_services: Collection[str]) -> None:
        self._token = token
        self._open_services = frozenset(open_services)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or _service(method) in self._open_services:
            return handler
        metadata = handler_call_details.invocation_metadata or ()
        values = [value for key, value in metadata if key == AUTHORIZATION and isinstance(value, str)]
        refusal = token_refusal(values, self._token)
        if refusal is None:
            return handler
        return _refusing(handler, method, refusal)


def _service(method: str) -> str:
    """The full service name of a method path ``/package.Service/Method``."""
    return method.lstrip("/").rpartition("/")[0]


def _refusing(handler: grpc.RpcMethodHandler, method: str, message: str) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s kind that ends the call with UNAUTHENTICATED without reading the request."""

    async def refuse(_request: object, context: grpc.aio.ServicerContext) -> None:
        log.info("refused %s from %s: %s", method, context.peer(), message.partition(";")[0])
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return _REFUSAL_HANDLERS[(handler.request_streaming, handler.response_streaming)](refuse)
