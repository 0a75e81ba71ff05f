"""Client mistakes over the wire: each gets its documented status code, a bounded message, and no traceback.

Shapes that overflow or describe nothing, bytes that are no message at all, responses too large to
send, strings of any length echoed in messages, and OIP parameters dropnet does not know. Every
test also asserts that the server logged no traceback and no error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from dropnet.core.errors import InvalidInputError
from dropnet.protos.dropnet.v1 import predictor_pb2 as v1
from dropnet.protos.dropnet.v1 import predictor_pb2_grpc as v1_grpc
from dropnet.protos.inference import grpc_service_pb2 as oip
from dropnet.protos.inference import grpc_service_pb2_grpc as oip_grpc
from dropnet.server.app import INFERENCE_SERVICE, PREDICTOR_SERVICE
from dropnet.server.grpc_errors import MAX_STATUS_MESSAGE_BYTES
from dropnet.server.predictor import Predictor
from dropnet.server.tensors import MAX_ELEMENTS, check_shape
from tests.server.grpc_harness import ServerThread, grpc_settings, models_dir_with
from tests.server.helpers import MODEL, digits_rows

MAX_MESSAGE_BYTES = 64 * 1024
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
ROWS = digits_rows(2, seed=0)


@pytest.fixture(scope="module")
def server(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    settings = grpc_settings(models_dir_with(tiny_package, tmp_path_factory.mktemp("mistakes")),
                             max_message_bytes=MAX_MESSAGE_BYTES)
    with ServerThread(settings) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with server.channel() as opened:
        yield opened


@pytest.fixture(autouse=True)
def nothing_logged_at_error(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail the test if the server logged a traceback or anything at ERROR while it ran."""
    caplog.set_level(logging.INFO)
    yield
    bad = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, bad


def _refusal(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=60)
    return caught.value.code(), caught.value.details()


def _infer(x: np.ndarray | None = None, shape: list[int] | None = None, data: bytes | None = None,
           **fields: Any) -> oip.ModelInferRequest:
    """A raw FP32 ModelInferRequest for ``tiny``: ``x``, or the given ``shape`` and ``data``."""
    x = ROWS if x is None else x
    raw = [x.tobytes() if data is None else data]
    request = oip.ModelInferRequest(**{"model_name": MODEL, "raw_input_contents": raw, **fields})
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape) if shape is None else shape)
    return request


def _predict(x: np.ndarray | None = None, shape: list[int] | None = None, data: bytes | None = None,
             **fields: Any) -> v1.PredictRequest:
    x = ROWS if x is None else x
    tensor = v1.Tensor(shape=list(x.shape) if shape is None else shape, dtype=v1.DATA_TYPE_FLOAT32,
                       data=x.tobytes() if data is None else data)
    return v1.PredictRequest(**{"model": MODEL, "input": tensor, **fields})


def _both(channel: grpc.Channel, shape: list[int], data: bytes) -> list[tuple[grpc.StatusCode, str]]:
    """The refusal of a tensor of ``shape`` and ``data``: by ModelInfer (raw, then typed contents), then by Predict."""
    typed = oip.ModelInferRequest(model_name=MODEL)
    values = np.frombuffer(data, np.float32)
    typed.inputs.add(name="x", datatype="FP32", shape=shape, contents=oip.InferTensorContents(fp32_contents=values))
    infer = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer
    return [
        _refusal(infer, _infer(shape=shape, data=data)),
        _refusal(infer, typed),
        _refusal(v1_grpc.PredictorStub(channel).Predict, _predict(shape=shape, data=data)),
    ]


# --- shapes -------------------------------------------------------------------------------------

SHAPES = {
    "a zero beside huge dimensions": ([0, 2**40, 2**40], b"", "multiply to over"),
    "dimensions whose product overflows int64": ([2**62, 2**62, 1, 1], b"", "multiply to over"),
    "int64-sized dimensions and a zero": ([2**63 - 1, 0, 2**63 - 1], b"", "multiply to over"),
    "one dimension too many": ([1] * 33, b"\0" * 4, "has 33 dimensions; expected at most 32"),
    "no rows": ([0, 1, 8, 8], b"", "empty batch"),
    "rows of the wrong shape": ([0, 7, 7], b"", "expected (batch, 1, 8, 8)"),
}


@pytest.mark.parametrize("case", SHAPES)
def test_bad_shapes_are_invalid_on_both_apis(channel: grpc.Channel, case: str) -> None:
    shape, data, expected = SHAPES[case]
    for code, details in _both(channel, shape, data):
        assert code == INVALID and expected in details, details


def test_the_element_bound_counts_the_non_zero_dimensions() -> None:
    assert MAX_ELEMENTS >= 2**31  # a protobuf message holds at most 2 GiB: no tensor on the wire has more elements
    assert check_shape("x", [0, MAX_ELEMENTS, 1]) == (0, MAX_ELEMENTS, 1)
    assert np.empty(check_shape("x", [0, MAX_ELEMENTS]), np.float64).size == 0  # numpy builds what passes
    with pytest.raises(InvalidInputError, match=r"x has shape \[0, 2, 1073741825\], whose non-zero dimensions"):
        check_shape("x", [0, 2, MAX_ELEMENTS // 2 + 1])


# --- bytes that are no message ------------------------------------------------------------------

GARBAGE = [b"\xff", b"\x08", b"\x00", b"\x0a\x05abc", b"\x12\xff\xff\xff\xff\x0f", bytes(range(256)) * 4]
"""Byte strings no protobuf message decodes from: a bad tag, a cut varint, field number 0, a cut
length-delimited field, a length beyond the data, and a run of every byte value."""


def _methods() -> list[tuple[str, Any]]:
    """Every RPC of both inference services, with its request message class."""
    services = [v1.DESCRIPTOR.services_by_name["Predictor"], oip.DESCRIPTOR.services_by_name["GRPCInferenceService"]]
    return [
        (f"/{service.full_name}/{method.name}", message_factory.GetMessageClass(method.input_type))
        for service in services for method in service.methods
    ]


def test_every_method_of_both_services_is_covered() -> None:
    assert {path.split("/")[1] for path, _ in _methods()} == {PREDICTOR_SERVICE, INFERENCE_SERVICE}
    assert len(_methods()) == 3 + 6


@pytest.mark.parametrize(("path", "request_class"), _methods(), ids=[path for path, _ in _methods()])
def test_undecodable_messages_are_invalid_on_every_rpc(channel: grpc.Channel, path: str, request_class: Any) -> None:
    call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    for payload in GARBAGE:
        with pytest.raises(Exception):  # the premise: the bytes really are undecodable
            request_class.FromString(payload)
        code, details = _refusal(call, payload)
        assert code == INVALID and f"the request to {path} is not a valid protobuf message" in details, details


def test_after_garbage_health_reflection_and_inference_still_work(
    channel: grpc.Channel, tiny_predictor: Predictor
) -> None:
    garbage = channel.unary_unary(f"/{INFERENCE_SERVICE}/ModelInfer", request_serializer=None)
    for payload in GARBAGE:
        assert _refusal(garbage, payload)[0] == INVALID
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=60)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    (listed,) = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=60
    )
    assert {PREDICTOR_SERVICE, INFERENCE_SERVICE} <= {s.name for s in listed.list_services_response.service}
    answer = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(_infer(), timeout=60)
    probabilities = np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(2, 10)
    np.testing.assert_allclose(probabilities, tiny_predictor.predict(ROWS).probabilities, rtol=1e-6)


# --- responses too large to send ----------------------------------------------------------------


def _batches_run(server: ServerThread) -> float:
    registry = server.server.dataplane.metrics.registry
    return registry.get_sample_value("dropnet_batch_rows_count", {"model": MODEL, "mode": "mc"}) or 0.0


def test_a_response_over_the_message_limit_is_refused_before_any_work(server: ServerThread, channel: grpc.Channel) -> None:
    samples = 300  # samples output: 300 × 8 rows × 10 classes × 4 bytes = 96,000 bytes > 64 KiB
    rows = digits_rows(8, seed=1)
    oip_request = _infer(rows, outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(name="samples")])
    oip_request.parameters["mc_samples"].int64_param = samples
    v1_request = _predict(rows, mc_samples=samples, outputs=["samples"])
    before = _batches_run(server)
    refusals = [
        _refusal(oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer, oip_request),
        _refusal(v1_grpc.PredictorStub(channel).Predict, v1_request),
    ]
    assert _batches_run(server) == before  # refused before the batcher ran anything
    for code, details in refusals:
        assert code == EXHAUSTED, details
        assert f"over the server's limit of {MAX_MESSAGE_BYTES} bytes" in details
        assert "96000 of them for output 'samples' of shape [300, 8, 10]" in details
        assert "send fewer rows, leave out the 'samples' output, or ask for fewer mc_samples" in details
    oip_request.ClearField("outputs")  # the same request without samples fits
    assert len(oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(oip_request, timeout=60).outputs) == 5


def test_an_echoed_request_id_counts_in_the_response_size(channel: grpc.Channel) -> None:
    # The id nearly fills a message; the request (id + 512 bytes of input) fits, but the response (id +
    # about 1,000 bytes of outputs, samples 10 × 2 × 10 floats among them) would not.
    request = _infer(id="i" * (MAX_MESSAGE_BYTES - 700), outputs=[
        oip.ModelInferRequest.InferRequestedOutputTensor(name=name)
        for name in ("probabilities", "std", "predictive_entropy", "mutual_information", "samples")
    ])
    request.parameters["mc_samples"].int64_param = 10
    assert request.ByteSize() < MAX_MESSAGE_BYTES
    code, details = _refusal(oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer, request)
    assert code == EXHAUSTED and f"over the server's limit of {MAX_MESSAGE_BYTES} bytes" in details, details


# --- strings of any length ----------------------------------------------------------------------

LONG = "m" * 20_000
WIDE = "é%" * 5_000
"""Two characters that percent-encoding triples or more in the grpc-message trailer."""


def _bounded(details: str) -> bool:
    wire = sum(1 if " " <= c <= "~" and c != "%" else 3 * len(c.encode()) for c in details)
    return wire <= MAX_STATUS_MESSAGE_BYTES


@pytest.mark.parametrize("name", [LONG, WIDE], ids=["20 KB", "percent-encoded"])
def test_long_model_names_and_versions_are_not_found_with_a_short_message(channel: grpc.Channel, name: str) -> None:
    oip_stub, v1_stub = oip_grpc.GRPCInferenceServiceStub(channel), v1_grpc.PredictorStub(channel)
    refusals = [
        _refusal(oip_stub.ModelInfer, _infer(model_name=name)),
        _refusal(oip_stub.ModelInfer, _infer(model_version=name)),
        _refusal(oip_stub.ModelMetadata, oip.ModelMetadataRequest(name=name)),
        _refusal(v1_stub.Predict, _predict(model=name)),
        _refusal(v1_stub.Predict, _predict(version=name)),
        _refusal(v1_stub.GetModel, v1.GetModelRequest(name=name)),
    ]
    for code, details in refusals:
        assert code == NOT_FOUND and _bounded(details), (code, len(details))
    assert not oip_stub.ModelReady(oip.ModelReadyRequest(name=name), timeout=60).ready


def test_thousands_of_unknown_names_are_invalid_with_a_short_message(channel: grpc.Channel) -> None:
    names = [f"output-{i:04d}-{'x' * 8}" for i in range(2_000)]  # 2,000 names in well under 64 KiB
    outputs = [oip.ModelInferRequest.InferRequestedOutputTensor(name=name) for name in names]
    parameters = _infer()
    for name in names:
        parameters.parameters[name].bool_param = True
    oip_stub, v1_stub = oip_grpc.GRPCInferenceServiceStub(channel), v1_grpc.PredictorStub(channel)
    refusals = [
        _refusal(oip_stub.ModelInfer, _infer(outputs=outputs)),
        _refusal(v1_stub.Predict, _predict(outputs=names)),
        _refusal(oip_stub.ModelInfer, parameters),
    ]
    for code, details in refusals:
        assert code == INVALID and _bounded(details), (code, len(details))
    assert "unknown parameter(s) ['output-0000-" in refusals[2][1] and "... 1995 more]" in refusals[2][1]


@pytest.mark.parametrize("field", ["name", "datatype"])
def test_long_input_names_and_datatypes_are_quoted_short(channel: grpc.Channel, field: str) -> None:
    request = _infer()
    setattr(request.inputs[0], field, LONG)
    code, details = _refusal(oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer, request)
    assert code == INVALID and f"'{'m' * 64}'... (20000 characters)" in details and len(details) < 500, details


# --- OIP parameters -----------------------------------------------------------------------------


def _triton_input(x: np.ndarray) -> "tc.InferInput":
    tensor = tc.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


@pytest.fixture(scope="module")
def triton(server: ServerThread) -> Iterator["tc.InferenceServerClient"]:
    client = tc.InferenceServerClient(server.target)
    yield client
    client.close()


def test_a_misspelt_parameter_is_invalid_naming_the_known_ones(triton: "tc.InferenceServerClient") -> None:
    with pytest.raises(tc.InferenceServerException) as caught:
        triton.infer(MODEL, [_triton_input(ROWS)], parameters={"mc_sample": 50})
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "request has unknown parameter(s) ['mc_sample']; expected some of ['mc_samples', 'seed']" in str(caught.value)


def test_tritonclient_pass_through_parameters_are_accepted_and_ignored(
    triton: "tc.InferenceServerClient", tiny_predictor: Predictor
) -> None:
    plain = triton.infer(MODEL, [_triton_input(ROWS)])
    hinted = triton.infer(MODEL, [_triton_input(ROWS)], priority=1, timeout=1_000_000)
    mc = triton.infer(MODEL, [_triton_input(ROWS)], priority=2, parameters={"mc_samples": 20, "seed": 5})
    expected = tiny_predictor.predict(ROWS)
    for result in (plain, hinted):
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected.probabilities, rtol=1e-6)
    np.testing.assert_allclose(
        mc.as_numpy("probabilities"), tiny_predictor.predict(ROWS, mc_samples=20, seed=5).probabilities, rtol=1e-6
    )


def test_kserve_binary_data_hints_are_accepted(channel: grpc.Channel, tiny_predictor: Predictor) -> None:
    request = _infer(outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(name="probabilities")])
    request.inputs[0].parameters["binary_data_size"].int64_param = ROWS.nbytes
    request.outputs[0].parameters["binary_data"].bool_param = True
    request.parameters["binary_data_output"].bool_param = True
    answer = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    probabilities = np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(2, 10)
    np.testing.assert_allclose(probabilities, tiny_predictor.predict(ROWS).probabilities, rtol=1e-6)


def test_features_dropnet_lacks_are_refused_not_skipped(triton: "tc.InferenceServerClient") -> None:
    attempts = {
        "sequence_id": lambda: triton.infer(MODEL, [_triton_input(ROWS)], sequence_id=7, sequence_start=True),
        "classification": lambda: triton.infer(
            MODEL, [_triton_input(ROWS)], outputs=[tc.InferRequestedOutput("probabilities", class_count=3)]
        ),
    }
    for name, attempt in attempts.items():
        with pytest.raises(tc.InferenceServerException) as caught:
            attempt()
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT" and f"'{name}'" in str(caught.value), name


@pytest.mark.parametrize(
    ("key", "kind", "value", "expected"),
    [
        ("mc_samples", "string_param", "50", "request parameter 'mc_samples' is a string_param; expected int64_param"),
        ("seed", "double_param", 1.5, "request parameter 'seed' is a double_param; expected int64_param"),
        ("priority", "string_param", "high", "request parameter 'priority' is a string_param; expected int64_param"),
        ("binary_data_output", "int64_param", 1, "'binary_data_output' is a int64_param; expected bool_param"),
    ],
)
def test_known_parameters_of_the_wrong_type_are_invalid(
    channel: grpc.Channel, key: str, kind: str, value: Any, expected: str
) -> None:
    request = _infer()
    setattr(request.parameters[key], kind, value)
    code, details = _refusal(oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer, request)
    assert code == INVALID and expected in details, details
