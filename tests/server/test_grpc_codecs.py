"""Protobuf ⇄ numpy codecs of both APIs, without a server: encodings, and what each bad encoding says."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import tritonclient.grpc as tritonclient_grpc

from dropnet.core.errors import InvalidInputError
from dropnet.protos.dropnet.v1 import predictor_pb2 as v1
from dropnet.protos.inference import grpc_service_pb2 as oip
from dropnet.server import codecs, tensors
from dropnet.server.dataplane import InferResult, ModelInfo
from dropnet.server.predictor import Predictor
from dropnet.server.request import check_request
from dropnet.server.response_size import estimate_response_bytes, output_bytes


X = np.arange(2 * 1 * 8 * 8, dtype=np.float32).reshape(2, 1, 8, 8) / 8


def _oip_request(**tensor: object) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 1, 8, 8], **tensor)
    return request


def test_raw_oip_input_round_trips_every_numeric_datatype() -> None:
    for datatype, (dtype, _) in codecs.OIP_DTYPES.items():
        x = np.arange(6).astype(dtype).reshape(2, 3)
        request = oip.ModelInferRequest(model_name="tiny", raw_input_contents=[x.tobytes()])
        request.inputs.add(name="x", datatype=datatype, shape=[2, 3])
        decoded = codecs.decode_infer_request(request)
        assert decoded.x.dtype == dtype and np.array_equal(decoded.x, x), datatype
        assert (decoded.mode, decoded.mc_samples, decoded.seed, decoded.outputs) == ("deterministic", None, None, None)


def test_typed_oip_contents_decode_to_the_given_shape() -> None:
    request = _oip_request(contents=oip.InferTensorContents(fp32_contents=X.ravel()))
    assert np.array_equal(codecs.decode_infer_request(request).x, X)
    ints = oip.ModelInferRequest(model_name="tiny")
    ints.inputs.add(name="x", datatype="UINT8", shape=[1, 2], contents=oip.InferTensorContents(uint_contents=[0, 255]))
    decoded = codecs.decode_infer_request(ints).x
    assert decoded.dtype == np.uint8 and decoded.tolist() == [[0, 255]]


def test_oip_parameters_select_mc_and_outputs_are_passed_on() -> None:
    request = _oip_request(contents=oip.InferTensorContents(fp32_contents=X.ravel()))
    request.parameters["mc_samples"].int64_param = 20
    request.parameters["seed"].int64_param = -7
    request.outputs.add(name="std")
    request.outputs.add(name="samples")
    decoded = codecs.decode_infer_request(request)
    assert (decoded.mode, decoded.mc_samples, decoded.seed, decoded.outputs) == ("mc", 20, -7, ("std", "samples"))
    seed_only = _oip_request(contents=oip.InferTensorContents(fp32_contents=X.ravel()))
    seed_only.parameters["seed"].uint64_param = 3
    assert (codecs.decode_infer_request(seed_only).mode, codecs.decode_infer_request(seed_only).seed) == ("mc", 3)


def _bad_oip_request(case: str) -> oip.ModelInferRequest:
    """A request for 2×1×8×8 FP32 rows, spoiled as ``case`` says."""
    request = _oip_request()
    tensor, raw, fp32 = request.inputs[0], request.raw_input_contents, request.inputs[0].contents.fp32_contents
    if case == "short raw":
        raw.append(X.tobytes()[:-4])
    elif case == "long raw":
        raw.append(X.tobytes() + b"\0" * 4)
    elif case == "two raw":
        raw.extend([X.tobytes(), b""])
    elif case == "few values":
        fp32.append(1.0)
    elif case == "other field":
        tensor.contents.fp64_contents.extend(X.ravel())
    elif case == "raw and typed":
        raw.append(X.tobytes())
        fp32.extend(X.ravel())
    elif case == "bytes":
        tensor.datatype = "BYTES"
    elif case == "typed fp16":
        tensor.datatype = "FP16"
        fp32.append(0.0)
    elif case == "input name":
        tensor.name = "image"
    elif case == "two inputs":
        request.inputs.add(name="x2")
    elif case == "negative dim":
        tensor.shape[0] = -2
        raw.append(b"")
    elif case == "string parameter":
        request.parameters["mc_samples"].string_param = "20"
    elif case == "empty parameter":
        request.parameters["seed"].SetInParent()
    elif case == "rank 33":
        tensor.shape[:] = [1] * 33
        raw.append(b"\0" * 4)
    elif case == "zero beside huge dims":
        tensor.shape[:] = [0, 2**40, 2**40]
        raw.append(b"")
    elif case == "misspelt parameter":
        request.parameters["mc_sample"].int64_param = 50
    elif case == "shared memory input":
        tensor.parameters["shared_memory_region"].string_param = "region"
    elif case == "classification output":
        request.outputs.add(name="probabilities").parameters["classification"].int64_param = 3
    elif case == "hint of the wrong type":
        request.outputs.add(name="probabilities").parameters["binary_data"].string_param = "yes"
    return request


BAD_OIP = {
    "short raw": "has 508 bytes of data; expected 512",
    "long raw": "has 516 bytes of data; expected 512",
    "two raw": "request has 2 raw_input_contents; expected one",
    "few values": "has 1 values in contents.fp32_contents; expected 128",
    "other field": "sets contents.fp64_contents; expected contents.fp32_contents",
    "raw and typed": "sets contents and raw_input_contents; expected exactly one of them",
    "no data": "has no data; expected raw_input_contents or contents.fp32_contents",
    "bytes": "has datatype 'BYTES'; expected one of",
    "typed fp16": "which has no typed contents; send raw_input_contents",
    "input name": "input 'image' is unknown; expected 'x'",
    "two inputs": "request has 2 inputs ['x', 'x2']; expected exactly one",
    "negative dim": "expected dimensions >= 0",
    "string parameter": "'mc_samples' is a string_param; expected int64_param",
    "empty parameter": "parameter 'seed' is set but holds no value; expected int64_param",
    "rank 33": "input 'x' has 33 dimensions; expected at most 32",
    "zero beside huge dims": "has shape [0, 1099511627776, 1099511627776], whose non-zero dimensions multiply to over",
    "misspelt parameter": "request has unknown parameter(s) ['mc_sample']; expected some of ['mc_samples', 'seed']",
    "shared memory input": "input 'x' has unknown parameter(s) ['shared_memory_region']; expected none, or "
                           "['binary_data_size'] (ignored)",
    "classification output": "requested output 'probabilities' has unknown parameter(s) ['classification']",
    "hint of the wrong type": "requested output 'probabilities' parameter 'binary_data' is a string_param; "
                              "expected bool_param",
}


@pytest.mark.parametrize("case", BAD_OIP)
def test_bad_oip_encodings_say_what_was_expected(case: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        codecs.decode_infer_request(_bad_oip_request(case))
    assert BAD_OIP[case] in str(caught.value)


@pytest.mark.parametrize(
    ("datatype", "contents", "expected"),
    [
        ("UINT8", {"uint_contents": [0, 256]}, "values in 0..256; expected UINT8 values in 0..255"),
        ("INT8", {"int_contents": [-129, 3]}, "values in -129..3; expected INT8 values in -128..127"),
        ("INT16", {"int_contents": [40000]}, "expected INT16 values in -32768..32767"),
    ],
)
def test_typed_values_outside_the_datatype_range_are_refused(datatype: str, contents: dict, expected: str) -> None:
    request = oip.ModelInferRequest(model_name="tiny")
    shape = [len(next(iter(contents.values())))]
    request.inputs.add(name="x", datatype=datatype, shape=shape, contents=oip.InferTensorContents(**contents))
    with pytest.raises(InvalidInputError, match=expected):
        codecs.decode_infer_request(request)


RESULT = InferResult(
    model="tiny", version="3", seed=11,
    outputs={"probabilities": np.full((2, 10), 0.1, np.float32), "predicted_class": np.array([4, 9], np.int64)},
)


def test_raw_requests_get_raw_outputs_that_tritonclient_reads() -> None:
    request = oip.ModelInferRequest(id="req-1", raw_input_contents=[b"x"])
    response = codecs.encode_infer_response(RESULT, request)
    parsed = tritonclient_grpc.InferResult(
        tritonclient_grpc.service_pb2.ModelInferResponse.FromString(response.SerializeToString())
    )
    for name, array in RESULT.outputs.items():
        got = parsed.as_numpy(name)
        assert got.dtype == array.dtype and np.array_equal(got, array), name
    as_dict = parsed.get_response(as_json=True)
    assert (as_dict["id"], as_dict["model_version"]) == ("req-1", "3")
    assert as_dict["parameters"]["seed"]["int64_param"] == "11"
    assert [(o["name"], o["datatype"], o["shape"]) for o in as_dict["outputs"]] == [
        ("probabilities", "FP32", ["2", "10"]), ("predicted_class", "INT64", ["2"]),
    ]


def test_typed_requests_get_typed_outputs() -> None:
    response = codecs.encode_infer_response(RESULT, oip.ModelInferRequest())
    assert not response.raw_output_contents
    probabilities, predicted = response.outputs
    values = np.array(probabilities.contents.fp32_contents, np.float32)
    assert np.array_equal(values, RESULT.outputs["probabilities"].ravel())
    assert list(predicted.contents.int64_contents) == [4, 9] and list(predicted.shape) == [2]


def test_v1_tensors_round_trip_little_endian() -> None:
    for enum, dtype in tensors.V1_DTYPES.items():
        x = np.arange(6).astype(dtype).reshape(3, 2)
        tensor = tensors.encode_tensor(x)
        assert (tensor.dtype, list(tensor.shape)) == (enum, [3, 2])
        assert tensor.data == x.astype(dtype.newbyteorder("<")).tobytes()
        assert np.array_equal(tensors.decode_tensor(tensor, "t"), x)
    big_endian = np.arange(3, dtype=">f4")
    assert tensors.encode_tensor(big_endian).data == np.arange(3, dtype="<f4").tobytes()


def _predict_request(**fields: object) -> v1.PredictRequest:
    tensor = v1.Tensor(shape=X.shape, dtype=v1.DATA_TYPE_FLOAT32, data=X.tobytes())
    return v1.PredictRequest(model="tiny", input=tensor, **fields)


@pytest.mark.parametrize(
    ("fields", "mode", "mc_samples", "seed"),
    [
        ({}, "deterministic", None, None),
        ({"mc_samples": 5}, "mc", 5, None),
        ({"seed": 0}, "mc", None, 0),
        ({"mode": v1.MODE_MC_DROPOUT}, "mc", None, None),
        ({"mode": v1.MODE_MC_DROPOUT, "mc_samples": 7, "seed": -3}, "mc", 7, -3),
        ({"mode": v1.MODE_DETERMINISTIC}, "deterministic", None, None),
    ],
)
def test_v1_mode_follows_the_enum_and_the_mc_fields(fields: dict, mode: str, mc_samples, seed) -> None:
    decoded = codecs.decode_predict_request(_predict_request(**fields))
    assert (decoded.mode, decoded.mc_samples, decoded.seed) == (mode, mc_samples, seed)
    assert np.array_equal(decoded.x, X) and decoded.version is None and decoded.outputs is None


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (_predict_request(mode=v1.MODE_DETERMINISTIC, seed=1), "apply to mode MODE_MC_DROPOUT only"),
        (_predict_request(mode=v1.MODE_DETERMINISTIC, mc_samples=2), "apply to mode MODE_MC_DROPOUT only"),
        (_predict_request(mode=9), "mode 9 is unknown"),
        (v1.PredictRequest(model="tiny"), "input is missing"),
        (v1.PredictRequest(model="tiny", input=v1.Tensor(shape=[1], data=b"1")), "DATA_TYPE_UNSPECIFIED; expected one"),
        (v1.PredictRequest(model="tiny", input=v1.Tensor(shape=[2, 3], dtype=v1.DATA_TYPE_INT64, data=b"\0" * 40)),
         r"has 40 bytes of data; expected 48 \(6 elements of shape \[2, 3\] × 8 bytes\)"),
    ],
)
def test_bad_v1_requests_say_what_was_expected(request_: v1.PredictRequest, expected: str) -> None:
    with pytest.raises(InvalidInputError, match=expected):
        codecs.decode_predict_request(request_)


def test_v1_response_carries_outputs_and_seed() -> None:
    response = codecs.encode_predict_response(RESULT)
    assert (response.model, response.version, response.seed) == ("tiny", "3", 11)
    assert np.array_equal(tensors.decode_tensor(response.predicted_class, "p"), [4, 9])
    assert not response.HasField("std")
    deterministic = codecs.encode_predict_response(InferResult("tiny", "3", {}, None))
    assert not deterministic.HasField("seed")


def test_get_model_keeps_numeric_metrics_and_marks_unconstrained_layers(tiny_predictor: Predictor) -> None:
    manifest = replace(
        tiny_predictor.manifest,
        metrics={"test_error": 0.25, "epochs": 3, "curve": [1.0, 0.5], "early_stopped": True},
        max_norm=(3.5, None, 2.0),
    )
    model = codecs.encode_model(ModelInfo("served-name", "7", ("3", "7"), manifest, 1000))
    assert (model.name, model.version) == ("served-name", "7")
    assert dict(model.metrics) == {"test_error": 0.25, "epochs": 3.0}
    assert list(model.max_norm) == [3.5, 0.0, 2.0]
    assert json.loads(model.manifest_json) == manifest.to_dict()


def test_v1_tensors_of_rank_over_32_are_refused() -> None:
    tensor = v1.Tensor(shape=[1] * 33, dtype=v1.DATA_TYPE_FLOAT32, data=b"\0" * 4)
    with pytest.raises(InvalidInputError, match="input has 33 dimensions; expected at most 32"):
        codecs.decode_predict_request(v1.PredictRequest(model="tiny", input=tensor))


def test_model_descriptions_report_loaded_versions_and_the_effective_sample_limit(tiny_predictor: Predictor) -> None:
    model = ModelInfo("served-name", "7", ("3", "7"), tiny_predictor.manifest, 50)
    assert tiny_predictor.manifest.mc.max_samples == 1000
    assert codecs.encode_model(model).mc.max_samples == 50
    metadata = codecs.encode_model_metadata(model)
    assert (metadata.name, list(metadata.versions)) == ("served-name", ["3", "7"])


@pytest.mark.parametrize(
    ("mode", "samples", "outputs"),
    [("deterministic", None, None), ("mc", 7, None), ("mc", 30, ("samples", "predicted_class")), ("mc", 1, ("std",))],
)
def test_the_response_size_estimate_bounds_every_encoding_closely(
    tiny_predictor: Predictor, mode: str, samples: int | None, outputs: tuple[str, ...] | None
) -> None:
    checked = check_request(tiny_predictor, X, mode, samples, 3 if mode == "mc" else None, outputs)
    result = InferResult("served-name", "12", tiny_predictor.run(checked), checked.seed)
    request_id = "request-7"
    sizes = [codecs.encode_predict_response(result).ByteSize()] + [
        codecs.encode_infer_response(result, oip.ModelInferRequest(id=request_id, raw_input_contents=raw)).ByteSize()
        for raw in ([], [b"x"])  # typed contents, raw contents
    ]
    echoed = len("served-name") + len("12") + len(request_id)
    estimate = estimate_response_bytes(output_bytes(tiny_predictor.manifest, checked), echoed)
    assert max(sizes) <= estimate <= max(sizes) * 1.05 + 1024, (sizes, estimate)
