"""The KServe v2 / Open Inference Protocol HTTP/REST API, beside gRPC in the same process and event loop.

    rest = RestServer(settings, dataplane)
    port = await rest.start()   # binds settings.host:settings.http_port (0: a free one)
    ...
    await rest.stop()           # stop accepting, give in-flight requests the grace period

The HTTP stack is aiohttp: its server runs on the running asyncio loop, the one grpc.aio serves
on, so REST needs no second thread or loop, and it is a mature, well-kept library (streamed bodies
with a size limit, TLS through the standard ``ssl`` module, graceful shutdown). Routes:

    GET  /v2/health/live, /v2/health/ready            200 {"live"/"ready": true}; 400 when false (the spec's 4xx)
    GET  /v2                                           server metadata
    GET  /v2/models/NAME[/versions/V]                  model metadata
    GET  /v2/models/NAME[/versions/V]/ready            200 / 400, as health
    POST /v2/models/NAME[/versions/V]/infer            inference (:mod:`dropnet.server.rest_codecs`)

Every request goes through the same :class:`DataPlane` as gRPC (``infer_encoded``, ``describe``,
``ready``, ``model_ready``), so it is checked, batched, counted and answered the same way. Errors
are ``{"error": MESSAGE}`` with the HTTP status of :data:`dropnet.server.status_codes.STATUSES`
(the table beside the gRPC codes); messages are bounded as gRPC's
(:func:`dropnet.server.grpc_errors.bounded`), and an unexpected failure is 500 with a generic
message, its traceback logged. A body over ``--max-message-bytes`` is 413, refused from its
Content-Length before it is read (a chunked one once it passes the limit).

Security is gRPC's (:mod:`dropnet.server.security`, :mod:`dropnet.server.auth`): with ``--tls-cert``
the port speaks TLS with the same certificate and key, and requires a client certificate signed by
``--tls-client-ca`` when given; with ``--token-file`` every route but ``/v2/health/*`` needs
``Authorization: Bearer TOKEN`` (401 otherwise, before the body is read); the ``--insecure`` rule
for a non-loopback host holds for the host both ports share.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from dropnet.core.errors import ConfigError, quoted
from dropnet.server import rest_codecs
from dropnet.server.dataplane import CUT_MARGIN_S, DataPlane, InferRequest
from dropnet.server.grpc_errors import INTERNAL_MESSAGE, bounded
from dropnet.server.security import AUTHORIZATION, BEARER, check_exposure, read_server_tls, read_token, token_refusal
from dropnet.server.settings import ServerSettings
from dropnet.server.status_codes import BODY_TOO_LARGE, HTTP_STATUS, INTERNAL, UNAUTHENTICATED, status_code_name

log = logging.getLogger(__name__)

OPEN_PREFIX = "/v2/health/"
"""Routes reachable without the bearer token (load balancers and Kubernetes probes carry none)."""
NOT_READY = 400
"""Status of a health or model-ready answer that is false (the spec: 200 for true, a 4xx for false)."""
OFFLOAD_BYTES = 1 << 20
"""Bodies (and responses) larger than this are decoded (encoded) in a worker thread, off the event loop."""
BINARY = "application/octet-stream"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


def ssl_context(settings: ServerSettings) -> ssl.SSLContext | None:
    """The server's TLS context from the settings' checked files (None without ``--tls-cert``); mutual TLS with a
    client CA."""
    tls = read_server_tls(settings)
    if tls is None or settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if tls.client_ca is not None:
        context.load_verify_locations(cadata=tls.client_ca.decode("ascii"))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def error_response(status: int, message: str, **headers: str) -> web.Response:
    """``{"error": message}`` with ``status``."""
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _flag(key: str, value: bool) -> web.Response:
    """A health or readiness answer: 200 when true, :data:`NOT_READY` when false."""
    return web.json_response({key: value}, status=HTTP_STATUS["OK"] if value else NOT_READY)


async def _off_loop(size: int, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)``, in a worker thread when ``size`` passes :data:`OFFLOAD_BYTES`."""
    if size > OFFLOAD_BYTES:
        return await asyncio.to_thread(function, *args)
    return function(*args)


class RestRoutes:
    """The route handlers over one data plane."""

    def __init__(self, dataplane: DataPlane, max_body_bytes: int) -> None:
        self._dataplane = dataplane
        self._max_body_bytes = max_body_bytes

    def add_to(self, app: web.Application) -> None:
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            app.router.add_get(prefix, self.model_metadata)
            app.router.add_get(prefix + "/ready", self.model_ready)
            app.router.add_post(prefix + "/infer", self.infer)
        app.router.add_get("/v2/health/live", self.live)
        app.router.add_get("/v2/health/ready", self.ready)
        app.router.add_get("/v2", self.server_metadata)

    async def live(self, request: web.Request) -> web.Response:
        return _flag("live", self._dataplane.live())

    async def ready(self, request: web.Request) -> web.Response:
        return _flag("ready", self._dataplane.ready())

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(rest_codecs.server_metadata())

    async def model_metadata(self, request: web.Request) -> web.Response:
        name, version = _model(request)
        return web.json_response(rest_codecs.model_metadata(self._dataplane.describe(name, version)))

    async def model_ready(self, request: web.Request) -> web.Response:
        return _flag("ready", self._dataplane.model_ready(*_model(request)))

    async def infer(self, request: web.Request) -> web.Response:
        name, version = _model(request)
        if request.content_length is not None and request.content_length > self._max_body_bytes:
            return self._too_large(f"{request.content_length} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._too_large(f"over {self._max_body_bytes} bytes")
        header_length = request.headers.get(rest_codecs.HEADER_LENGTH)
        decoded: rest_codecs.RestInferRequest | None = None
        failure: Exception | None = None
        try:
            decoded = await _off_loop(len(body), rest_codecs.decode_infer_request, body, header_length, name, version)
        except Exception as exc:  # raised again inside infer_encoded, so that the refusal is counted there
            failure = exc

        def decode() -> InferRequest:
            if failure is not None:
                raise failure
            assert decoded is not None
            return decoded.request

        result = await self._dataplane.infer_encoded(name, decode)
        assert decoded is not None  # infer_encoded raised otherwise
        size = sum(array.nbytes for array in result.outputs.values())
        content, head_length = await _off_loop(size, rest_codecs.encode_infer_response, result, decoded)
        if head_length is None:
            return web.Response(body=content, content_type="application/json")
        return web.Response(body=content, content_type=BINARY, headers={rest_codecs.HEADER_LENGTH: str(head_length)})

    def _too_large(self, size: str) -> web.Response:
        return error_response(BODY_TOO_LARGE, (
            f"the request body has {size}; expected at most --max-message-bytes {self._max_body_bytes} bytes "
            f"(send fewer rows per request, binary tensor data, or raise the server's limit)"
        ))


def _model(request: web.Request) -> tuple[str, str | None]:
    """The model name and version (None: the latest) a route's path names."""
    return request.match_info["name"], request.match_info.get("version") or None


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as ``{"error": ...}`` with its HTTP status; unexpected ones 500, traceback logged."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, _http_error_message(request, exc))
    except Exception as exc:
        code = status_code_name(exc)
        if code == INTERNAL:
            log.exception("%s %s failed", request.method, request.path)
            return error_response(HTTP_STATUS[INTERNAL], INTERNAL_MESSAGE)
        return error_response(HTTP_STATUS[code], bounded(str(exc)))


def _http_error_message(request: web.Request, exc: web.HTTPException) -> str:
    """What was wrong and expected, for the HTTP layer's own refusals (no route, wrong method, ...)."""
    where = f"{request.method} {quoted(request.path)}"
    if isinstance(exc, web.HTTPNotFound):
        return f"{where}: no such endpoint; expected a KServe v2 path: /v2, /v2/health/live|ready, " \
               f"/v2/models/NAME[/versions/V][/ready|/infer]"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return f"{where}: method not allowed; expected {sorted(exc.allowed_methods)}"
    return bounded(f"{where}: {exc.reason}")


def token_middleware(token: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """A middleware that answers 401 unless a request carries the bearer token (:func:`dropnet.server.security.token_refusal`,
    as gRPC's :class:`dropnet.server.auth.TokenInterceptor`) or asks a route under :data:`OPEN_PREFIX`."""

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(OPEN_PREFIX):
            return await handler(request)
        values = request.headers.getall(AUTHORIZATION, [])
        refusal = token_refusal(values, token)
        if refusal is None:
            return await handler(request)
        log.info("refused %s %s from %s: %s", request.method, request.path, request.remote, refusal.partition(";")[0])
        return error_response(HTTP_STATUS[UNAUTHENTICATED], refusal, **{"WWW-Authenticate": BEARER})

    return require_token


class ProtocolLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server log, where a request that is not valid HTTP (a 9 KB request line, a bad header) is one
    INFO line naming the client and the problem, without the traceback aiohttp logs for it: a client's mistake.

    Handler failures never reach it: :func:`errors_as_json` answers (and logs) them.
    """

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        self.info("%s: %s", str(msg) % args, exc_info if isinstance(exc_info, BaseException) else "bad request")


def build_app(settings: ServerSettings, dataplane: DataPlane) -> web.Application:
    """The aiohttp application: the routes, JSON errors and, with ``--token-file``, the token check."""
    middlewares = [errors_as_json]
    if settings.token_file is not None:
        middlewares.append(token_middleware(read_token(settings.token_file)))
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_message_bytes)
    RestRoutes(dataplane, settings.max_message_bytes).add_to(app)
    return app


class RestServer:
    """The REST API of one :class:`DataPlane` on ``settings.host:settings.http_port``; :meth:`start`, :meth:`stop`."""

    def __init__(self, settings: ServerSettings, dataplane: DataPlane) -> None:
        self.settings = settings
        self.dataplane = dataplane
        self.port: int | None = None
        """The bound port once started."""
        self.tls = False
        """Whether the port speaks TLS."""
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Bind and serve (the data plane must be started); ConfigError for bad TLS files, an unprotected public
        address or a port that cannot be bound."""
        if self.settings.http_port is None:
            raise ConfigError("http_port is None, so REST is off; expected a port (--http-port) to serve REST on")
        context = ssl_context(self.settings)
        check_exposure(self.settings)
        runner = web.AppRunner(
            build_app(self.settings, self.dataplane),
            access_log=None,  # one line per request is the metrics' job, as on gRPC
            logger=ProtocolLog(log, {}),
            handler_cancellation=True,  # a client that disconnects cancels its request, as on gRPC
            shutdown_timeout=self.settings.shutdown_grace_s + CUT_MARGIN_S,
        )
        await runner.setup()
        host, port = self.settings.host, self.settings.http_port
        try:
            await web.TCPSite(runner, host, port, ssl_context=context, reuse_port=self.settings.reuse_port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"cannot listen on {host}:{port} for REST ({exc.strerror or exc}); expected a free "
                              f"port on a local interface") from None
        self._runner = runner
        self.tls = context is not None
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        """Stop accepting connections; in-flight requests get the settings' grace period (the data plane ends those
        still running then with UNAVAILABLE, 503) before they are cancelled."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
