"""The two gRPC services: each RPC converts the request, calls the data plane, converts the answer.

Errors become status codes in :mod:`dropnet.server.grpc_errors` (the ``handle_errors`` decorator),
which also refuses a request that could not be decoded: the services are registered through
:func:`dropnet.server.registration.add_service`, whose deserializers hand such a request over as a marker.
"""

from __future__ import annotations

import grpc

from dropnet.protos.dropnet.v1 import predictor_pb2 as v1
from dropnet.protos.dropnet.v1 import predictor_pb2_grpc as v1_grpc
from dropnet.protos.inference import grpc_service_pb2 as oip
from dropnet.protos.inference import grpc_service_pb2_grpc as oip_grpc
from dropnet.server import codecs
from dropnet.server.dataplane import DataPlane
from dropnet.server.grpc_errors import handle_errors

Context = grpc.aio.ServicerContext


class PredictorServicer(v1_grpc.PredictorServicer):
    """``dropnet.v1.Predictor``."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane

    @handle_errors
    async def Predict(self, request: v1.PredictRequest, context: Context) -> v1.PredictResponse:
        result = await self._dataplane.infer_encoded(request.model, lambda: codecs.decode_predict_request(request))
        return codecs.encode_predict_response(result)

    @handle_errors
    async def ListModels(self, request: v1.ListModelsRequest, context: Context) -> v1.ListModelsResponse:
        return codecs.encode_model_list(self._dataplane.list_models())

    @handle_errors
    async def GetModel(self, request: v1.GetModelRequest, context: Context) -> v1.GetModelResponse:
        return codecs.encode_model(self._dataplane.describe(request.name, request.version))


class InferenceServicer(oip_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` (KServe v2 / Open Inference Protocol)."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane

    @handle_errors
    async def ServerLive(self, request: oip.ServerLiveRequest, context: Context) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=self._dataplane.live())

    @handle_errors
    async def ServerReady(self, request: oip.ServerReadyRequest, context: Context) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=self._dataplane.ready())

    @handle_errors
    async def ModelReady(self, request: oip.ModelReadyRequest, context: Context) -> oip.ModelReadyResponse:
        return oip.ModelReadyResponse(ready=self._dataplane.model_ready(request.name, request.version or None))

    @handle_errors
    async def ServerMetadata(
        self, request: oip.ServerMetadataRequest, context: Context
    ) -> oip.ServerMetadataResponse:
        return codecs.encode_server_metadata()

    @handle_errors
    async def ModelMetadata(self, request: oip.ModelMetadataRequest, context: Context) -> oip.ModelMetadataResponse:
        return codecs.encode_model_metadata(self._dataplane.describe(request.name, request.version))

    @handle_errors
    async def ModelInfer(self, request: oip.ModelInferRequest, context: Context) -> oip.ModelInferResponse:
        result = await self._dataplane.infer_encoded(request.model_name, lambda: codecs.decode_infer_request(request))
        return codecs.encode_infer_response(result, request)
