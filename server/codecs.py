"""Protobuf ⇄ numpy for both gRPC APIs: ``dropnet.v1.Predictor`` and KServe v2 / OIP.

Requests become :class:`dropnet.server.dataplane.InferRequest`; results and manifests become responses.
Everything a client can get wrong about the encoding itself (unknown datatype, byte length or
element count that does not match the shape, raw and typed contents mixed, unknown parameters)
raises :class:`InvalidInputError` saying what was expected, quoting client strings through
:func:`dropnet.core.errors.quoted`; what the model expects of the values (shape, finiteness, rows,
samples) is checked by the data plane.

OIP parameters: a request may carry ``mc_samples`` and ``seed`` (int64_param or uint64_param),
which select MC mode; which others are accepted, and why, is the table of
:mod:`dropnet.server.oip_parameters`, shared with the REST codec. Anything else is
INVALID_ARGUMENT naming the known parameters.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from dropnet import __version__
from dropnet.core.errors import InvalidInputError, quoted, quoted_list
from dropnet.core.manifest import INPUT_NAME, Manifest
from dropnet.core.outputs import Mode, Task
from dropnet.protos.dropnet.v1 import predictor_pb2 as v1
from dropnet.protos.inference import grpc_service_pb2 as oip
from dropnet.server.dataplane import InferRequest, InferResult, ModelInfo
from dropnet.server.oip_parameters import (
    INPUT_PARAMETERS,
    MC_SAMPLES,
    OUTPUT_PARAMETERS,
    REQUEST_PARAMETERS,
    SEED,
    Parameter,
    check_parameters,
)
from dropnet.server.repository import ModelRef
from dropnet.server.tensors import (
    check_shape,
    decode_raw,
    decode_tensor,
    encode_tensor,
    little_endian,
    little_endian_bytes,
    v1_dtype,
)

SERVER_NAME = "dropnet"
PLATFORM = "onnxruntime_onnx"

DETERMINISTIC, MC = Mode.DETERMINISTIC.value, Mode.MC.value

# --- shared -----------------------------------------------------------------------------------


def tensor_specs(manifest: Manifest, mode: Mode) -> list[tuple[str, np.dtype, list[int]]]:
    """(name, dtype, shape) of every output of ``mode``, from the output table; -1 marks the rows (and the samples)."""
    sizes = manifest.sizes()
    return [(spec.name, np.dtype(spec.dtype), spec.dims(sizes)) for spec in manifest.outputs(mode)]


def all_tensor_specs(manifest: Manifest) -> list[tuple[str, np.dtype, list[int]]]:
    """The outputs of every mode, deterministic ones first, each name once."""
    specs = {spec[0]: spec for mode in Mode for spec in tensor_specs(manifest, mode)}
    return list(specs.values())


def decode_predict_request(request: v1.PredictRequest) -> InferRequest:
    """A PredictRequest as the data plane's InferRequest."""
    if not request.HasField("input"):
        raise InvalidInputError("PredictRequest.input is missing; expected a Tensor of shape [rows, *input shape]")
    seed = request.seed if request.HasField("seed") else None
    wants_mc = request.mc_samples > 0 or seed is not None
    if request.mode == v1.MODE_UNSPECIFIED:
        mode = MC if wants_mc else DETERMINISTIC
    elif request.mode == v1.MODE_DETERMINISTIC:
        if wants_mc:
            raise InvalidInputError(
                "mc_samples and seed apply to mode MODE_MC_DROPOUT only; "
                "expected neither with mode MODE_DETERMINISTIC"
            )
        mode = DETERMINISTIC
    elif request.mode == v1.MODE_MC_DROPOUT:
        mode = MC
    else:
        raise InvalidInputError(f"mode {request.mode} is unknown; expected one of {list(v1.Mode.keys())}")
    return InferRequest(
        model=request.model,
        version=request.version or None,
        x=decode_tensor(request.input, "input"),
        mode=mode,
        mc_samples=request.mc_samples or None,
        seed=seed,
        outputs=tuple(request.outputs) or None,
    )


def encode_predict_response(result: InferResult) -> v1.PredictResponse:
    """The data plane's InferResult as a PredictResponse: each output (a row of the output table) in its field."""
    response = v1.PredictResponse(model=result.model, version=result.version, seed=result.seed)
    for name, array in result.outputs.items():
        getattr(response, name).CopyFrom(encode_tensor(array))
    return response


def _v1_task(task: Task) -> v1.Task:
    """The dropnet.v1 Task value of ``task`` (TASK_ + its name)."""
    return v1.Task.Value(f"TASK_{task.name}")


def encode_model_list(models: Iterable[ModelRef]) -> v1.ListModelsResponse:
    """The data plane's model list as a ListModelsResponse."""
    return v1.ListModelsResponse(models=[
        v1.ModelSummary(name=ref.name, versions=ref.versions, latest=ref.latest or "", ready=ref.ready)
        for ref in models
    ])


def _tensor_spec(name: str, dtype: np.dtype, shape: list[int]) -> v1.TensorSpec:
    return v1.TensorSpec(name=name, dtype=v1_dtype(dtype), shape=shape)


def encode_model(model: ModelInfo) -> v1.GetModelResponse:
    """A served model version as a GetModelResponse; ``mc.max_samples`` is the limit requests are held to."""
    manifest = model.manifest
    spec = manifest.input
    normalisation = spec.normalisation
    return v1.GetModelResponse(
        name=model.name,
        version=model.version,
        input=_tensor_spec(spec.name, np.dtype(spec.dtype), [-1, *spec.shape]),
        value_range=spec.value_range,
        normalisation=None if normalisation is None else v1.Normalisation(
            mean=normalisation.mean, std=normalisation.std, in_graph=normalisation.in_graph
        ),
        classes=manifest.classes,
        task=_v1_task(manifest.task),
        targets=manifest.targets,
        dropout=v1.Dropout(flavour=manifest.dropout.flavour, retain=manifest.dropout.retain),
        max_norm=[0.0 if c is None else c for c in manifest.max_norm],
        metrics=_numeric_metrics(manifest.metrics),
        onnx=v1.Onnx(opset=manifest.onnx.opset, ir_version=manifest.onnx.ir_version),
        mc=v1.MonteCarlo(max_samples=model.max_mc_samples, rng=manifest.mc.rng),
        deterministic_outputs=[_tensor_spec(*spec) for spec in tensor_specs(manifest, Mode.DETERMINISTIC)],
        mc_outputs=[_tensor_spec(*spec) for spec in tensor_specs(manifest, Mode.MC)],
        manifest_json=json.dumps(manifest.to_dict(), sort_keys=True),
    )


def _numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of the run's final metrics (nested or textual ones stay in manifest_json)."""
    return {
        key: float(value) for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


# --- KServe v2 / Open Inference Protocol ------------------------------------------------------

OIP_DTYPES: dict[str, tuple[np.dtype, str | None]] = {
    "UINT8": (little_endian(np.uint8), "uint_contents"),
    "UINT16": (little_endian(np.uint16), "uint_contents"),
    "UINT32": (little_endian(np.uint32), "uint_contents"),
    "UINT64": (little_endian(np.uint64), "uint64_contents"),
    "INT8": (little_endian(np.int8), "int_contents"),
    "INT16": (little_endian(np.int16), "int_contents"),
    "INT32": (little_endian(np.int32), "int_contents"),
    "INT64": (little_endian(np.int64), "int64_contents"),
    "FP16": (little_endian(np.float16), None),
    "FP32": (little_endian(np.float32), "fp32_contents"),
    "FP64": (little_endian(np.float64), "fp64_contents"),
}
"""OIP datatype → (numpy dtype, InferTensorContents field; None: raw bytes only)."""
_OIP_BY_NUMPY = {dtype: name for name, (dtype, _) in OIP_DTYPES.items()}
_CONTENTS_DTYPES = {
    "int_contents": np.dtype(np.int32), "int64_contents": np.dtype(np.int64),
    "uint_contents": np.dtype(np.uint32), "uint64_contents": np.dtype(np.uint64),
    "fp32_contents": np.dtype(np.float32), "fp64_contents": np.dtype(np.float64),
}
"""Element type of each typed contents field (wider than INT8/16, UINT8/16 tensors)."""
_CONTENTS_FIELDS = tuple(field.name for field in oip.InferTensorContents.DESCRIPTOR.fields)


def oip_datatype(dtype: np.dtype) -> str:
    """The OIP datatype name of a numpy dtype."""
    return _OIP_BY_NUMPY[little_endian(dtype)]


def decode_infer_request(request: oip.ModelInferRequest) -> InferRequest:
    """A ModelInferRequest as the data plane's InferRequest; parameter mc_samples or seed selects MC."""
    _check_parameters("request", request.parameters, REQUEST_PARAMETERS)
    for output in request.outputs:
        _check_parameters(f"requested output {quoted(output.name)}", output.parameters, OUTPUT_PARAMETERS)
    mc_samples = _int_parameter(request.parameters, MC_SAMPLES)
    seed = _int_parameter(request.parameters, SEED)
    return InferRequest(
        model=request.model_name,
        version=request.model_version or None,
        x=_decode_input(request),
        mode=DETERMINISTIC if mc_samples is None and seed is None else MC,
        mc_samples=mc_samples,
        seed=seed,
        outputs=tuple(output.name for output in request.outputs) or None,
        echo_bytes=len(request.id.encode()),
    )


def _check_parameters(where: str, parameters: Mapping[str, Any], known: Mapping[str, Parameter]) -> None:
    """:func:`check_parameters` of a protobuf parameter map (each InferParameter's kind is its set field)."""
    check_parameters(where, {key: value.WhichOneof("parameter_choice") for key, value in parameters.items()}, known)


def _decode_input(request: oip.ModelInferRequest) -> np.ndarray:
    if len(request.inputs) != 1:
        names = quoted_list(tensor.name for tensor in request.inputs)
        raise InvalidInputError(f"request has {len(request.inputs)} inputs {names}; expected exactly one, {INPUT_NAME!r}")
    tensor = request.inputs[0]
    what = f"input {quoted(tensor.name)}"
    if tensor.name != INPUT_NAME:
        raise InvalidInputError(f"{what} is unknown; expected {INPUT_NAME!r}")
    _check_parameters(what, tensor.parameters, INPUT_PARAMETERS)
    if tensor.datatype not in OIP_DTYPES:
        raise InvalidInputError(f"{what} has datatype {quoted(tensor.datatype)}; expected one of {list(OIP_DTYPES)}")
    dtype, field = OIP_DTYPES[tensor.datatype]
    has_contents = tensor.HasField("contents")
    if request.raw_input_contents:
        if has_contents:
            raise InvalidInputError(f"{what} sets contents and raw_input_contents; expected exactly one of them")
        if len(request.raw_input_contents) != 1:
            raise InvalidInputError(
                f"request has {len(request.raw_input_contents)} raw_input_contents; expected one, for {what}"
            )
        return decode_raw(what, request.raw_input_contents[0], dtype, tensor.shape)
    if not has_contents:
        raise InvalidInputError(f"{what} has no data; expected raw_input_contents or contents.{field}")
    if field is None:
        raise InvalidInputError(
            f"{what} has datatype {tensor.datatype}, which has no typed contents; send raw_input_contents"
        )
    return _decode_contents(what, tensor, dtype, field)


def _decode_contents(
    what: str, tensor: oip.ModelInferRequest.InferInputTensor, dtype: np.dtype, field: str
) -> np.ndarray:
    """Typed InferTensorContents as an array, checking the element count and that no other field is set."""
    stray = [name for name in _CONTENTS_FIELDS if name != field and len(getattr(tensor.contents, name))]
    if stray:
        raise InvalidInputError(
            f"{what} of datatype {tensor.datatype} sets contents.{stray[0]}; expected contents.{field}"
        )
    dims = check_shape(what, tensor.shape)
    values = getattr(tensor.contents, field)
    if len(values) != math.prod(dims):
        raise InvalidInputError(
            f"{what} has {len(values)} values in contents.{field}; expected {math.prod(dims)} for shape {list(dims)}"
        )
    array = np.array(values, dtype=_CONTENTS_DTYPES[field])
    if dtype.kind in "iu" and array.size:
        limits = np.iinfo(dtype)
        if array.min() < limits.min or array.max() > limits.max:
            raise InvalidInputError(
                f"{what} holds values in {array.min()}..{array.max()}; expected {tensor.datatype} values "
                f"in {limits.min}..{limits.max}"
            )
    return array.astype(dtype).reshape(dims)


def _int_parameter(parameters: Any, key: str) -> int | None:
    """An integer parameter checked by :func:`_check_parameters`, None when absent."""
    if key not in parameters:
        return None
    parameter = parameters[key]
    return int(getattr(parameter, parameter.WhichOneof("parameter_choice")))


def encode_infer_response(result: InferResult, request: oip.ModelInferRequest) -> oip.ModelInferResponse:
    """The data plane's InferResult as a ModelInferResponse; raw outputs when the request sent raw inputs."""
    raw = bool(request.raw_input_contents)
    response = oip.ModelInferResponse(model_name=result.model, model_version=result.version, id=request.id)
    if result.seed is not None:
        response.parameters[SEED].int64_param = result.seed
    for name, array in result.outputs.items():
        datatype = oip_datatype(array.dtype)
        tensor = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            response.raw_output_contents.append(little_endian_bytes(array))
        else:
            getattr(tensor.contents, OIP_DTYPES[datatype][1]).extend(array.ravel().tolist())
    return response


def encode_server_metadata() -> oip.ServerMetadataResponse:
    """The server's name and version."""
    return oip.ServerMetadataResponse(name=SERVER_NAME, version=__version__)


def encode_model_metadata(model: ModelInfo) -> oip.ModelMetadataResponse:
    """A served model as a ModelMetadataResponse: its loaded versions, its input and the outputs of both modes."""
    spec = model.manifest.input
    tensor = oip.ModelMetadataResponse.TensorMetadata
    return oip.ModelMetadataResponse(
        name=model.name,
        versions=model.versions,
        platform=PLATFORM,
        inputs=[tensor(name=spec.name, datatype=oip_datatype(np.dtype(spec.dtype)), shape=[-1, *spec.shape])],
        outputs=[
            tensor(name=name, datatype=oip_datatype(dtype), shape=shape)
            for name, dtype, shape in all_tensor_specs(model.manifest)
        ],
    )
