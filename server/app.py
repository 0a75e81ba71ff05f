"""The gRPC server: both inference services, health checking and reflection on one port; and, with
``--http-port``, the KServe v2 REST API (:mod:`dropnet.server.rest`) on a second port, served by the
same process, event loop and data plane.

    server = GrpcServer(settings)
    port = await server.start()   # loads every model, then binds (port 0: a free one); REST too when asked
    server.http_port              # the bound REST port (None: REST off)
    ...
    await server.stop()           # stop accepting, finish in-flight requests (up to the grace), stop the data plane

The standard ``grpc.health.v1.Health`` service reports SERVING (overall and per service) only
while every configured model is loaded (:meth:`DataPlane.ready`); it is refreshed after start
and every reload interval, and turns NOT_SERVING as soon as a graceful stop begins.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2

from dropnet.core.errors import ConfigError
from dropnet.protos.dropnet.v1 import predictor_pb2 as v1
from dropnet.protos.dropnet.v1 import predictor_pb2_grpc as v1_grpc
from dropnet.protos.inference import grpc_service_pb2 as oip
from dropnet.protos.inference import grpc_service_pb2_grpc as oip_grpc
from dropnet.server.auth import server_credentials, token_interceptors
from dropnet.server.dataplane import CUT_MARGIN_S, DataPlane
from dropnet.server.registration import add_service
from dropnet.server.rest import RestServer
from dropnet.server.security import check_exposure
from dropnet.server.servicers import InferenceServicer, PredictorServicer
from dropnet.server.settings import ServerSettings


PREDICTOR_SERVICE = v1.DESCRIPTOR.services_by_name["Predictor"].full_name
INFERENCE_SERVICE = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
HEALTH_NAMES = ("", PREDICTOR_SERVICE, INFERENCE_SERVICE)
"""Names the health service answers for: the whole server ("") and each inference service."""
REFLECTED_SERVICES = (PREDICTOR_SERVICE, INFERENCE_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME)

log = logging.getLogger(__name__)


def address(host: str, port: int) -> str:
    """``host:port`` for binding and logging, IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reflection_pool() -> descriptor_pool.DescriptorPool:
    """A pool holding every served .proto file (the OIP one lives outside the default pool)."""
    pool = descriptor_pool.DescriptorPool()
    for module in (v1, oip, health_pb2, reflection_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    return pool


class GrpcServer:
    """A ``grpc.aio`` server in front of one :class:`DataPlane`; build, :meth:`start`, :meth:`stop`."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.dataplane = DataPlane(settings)
        self.port: int | None = None
        """The bound port once started."""
        self.http_port: int | None = None
        """The bound REST port once started (None: REST off)."""
        self._server: grpc.aio.Server | None = None
        self._rest: RestServer | None = None
        self._health = health_aio.HealthServicer()
        self._health_task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Load the models, bind ``settings.host:port`` and start serving; return the bound port."""
        await self.dataplane.start()
        try:
            await self._sync_health()
            self._server = self._build()
            self.port = self._bind(self._server)  # last before start: grpc holds a bound port until started
            await self._server.start()
            if self.settings.http_port is not None:
                await self._start_rest()
        except BaseException:  # e.g. the port is taken: leave no reload task, worker pool or metrics thread behind
            if self._server is not None:
                await self._server.stop(0)
                self._server = None
            await self.dataplane.stop()
            raise
        if self.settings.reload_interval_s > 0:
            self._health_task = asyncio.create_task(self._health_loop(), name="dropnet-health")
        return self.port

    async def stop(self, grace: float | None = None) -> bool:
        """Refuse new calls, give in-flight ones ``grace`` seconds (default: the settings'), stop the data plane.

        Inference calls still running at the deadline end UNAVAILABLE (:meth:`DataPlane.stop`), and grpc
        cancels whatever call remains :data:`CUT_MARGIN_S` later, so the stop takes about ``grace`` +
        :data:`CUT_MARGIN_S` at most. Returns False if onnxruntime runs were left running in their threads.
        """
        grace = self.settings.shutdown_grace_s if grace is None else grace
        if self._health_task is not None:
            self._health_task.cancel()
            try:
                await self._health_task
            except asyncio.CancelledError:
                pass
            self._health_task = None
        await self._health.enter_graceful_shutdown()
        stopping = [] if self._server is None else [asyncio.ensure_future(self._server.stop(grace + CUT_MARGIN_S))]
        if self._rest is not None:
            stopping.append(asyncio.ensure_future(self._rest.stop()))
        try:
            return await self.dataplane.stop(grace)
        finally:
            if stopping:
                await asyncio.gather(*stopping)
            self._server = self._rest = None
            self.http_port = None

    async def _start_rest(self) -> None:
        """Serve REST on ``settings.http_port`` and log where (``REST on http[s]://HOST:PORT``)."""
        self._rest = RestServer(self.settings, self.dataplane)
        self.http_port = await self._rest.start()
        scheme = "https" if self._rest.tls else "http"
        log.info("REST on %s://%s", scheme, address(self.settings.host, self.http_port))

    def _build(self) -> grpc.aio.Server:
        limit = self.settings.max_message_bytes
        server = grpc.aio.server(
            interceptors=token_interceptors(self.settings, open_services=(HEALTH_SERVICE,)),  # reads --token-file
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
                ("grpc.so_reuseport", int(self.settings.reuse_port)),  # off: a port in use is an error, not shared
            ],
        )
        add_service(server, PredictorServicer(self.dataplane), v1_grpc.add_PredictorServicer_to_server)
        add_service(server, InferenceServicer(self.dataplane), oip_grpc.add_GRPCInferenceServiceServicer_to_server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(REFLECTED_SERVICES, server, pool=reflection_pool())
        return server

    def _bind(self, server: grpc.aio.Server) -> int:
        """Bind the port, with TLS when configured; ConfigError for bad TLS files or an unprotected public address."""
        where = address(self.settings.host, self.settings.port)
        credentials = server_credentials(self.settings)
        check_exposure(self.settings)
        try:
            if credentials is None:
                port = server.add_insecure_port(where)
            else:
                port = server.add_secure_port(where, credentials)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {where} ({exc}); expected a free port on a local interface") from None
        if port == 0:
            raise ConfigError(f"cannot listen on {where}; expected a free port on a local interface")
        return port

    async def _sync_health(self) -> None:
        """Report SERVING for every health name when the data plane is ready, else NOT_SERVING."""
        statuses = health_pb2.HealthCheckResponse
        status = statuses.SERVING if self.dataplane.ready() else statuses.NOT_SERVING
        for name in HEALTH_NAMES:
            await self._health.set(name, status)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            await self._sync_health()
