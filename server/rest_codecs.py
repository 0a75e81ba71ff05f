"""JSON (and binary tensor data) ⇄ numpy for the KServe v2 / Open Inference Protocol REST API.

Requests become :class:`dropnet.server.dataplane.InferRequest`, exactly as the gRPC codec
(:mod:`dropnet.server.codecs`) makes them: one input ``x`` of an OIP datatype, parameters
``mc_samples`` and ``seed`` selecting MC mode, the parameter table of
:mod:`dropnet.server.oip_parameters`, the requested outputs by name. Tensor data is a JSON array,
flat (row-major) or nested as the shape, or, with Triton's binary tensor data extension, bytes
after the JSON header (``Inference-Header-Content-Length``; the input's parameter
``binary_data_size`` gives its length). Outputs are JSON arrays, or binary after the JSON when
the request asks (request parameter ``binary_data_output``, or ``binary_data`` on a requested
output). Every mistake about the encoding is an :class:`InvalidInputError` saying what was
expected, quoting client strings through :func:`dropnet.core.errors.quoted`; what the model expects
of the values is checked by the data plane.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf import json_format

from dropnet import __version__
from dropnet.core.errors import InvalidInputError, quoted, quoted_list
from dropnet.core.manifest import INPUT_NAME
from dropnet.server.codecs import DETERMINISTIC, MC, OIP_DTYPES, SERVER_NAME, encode_model_metadata, oip_datatype
from dropnet.server.dataplane import InferRequest, InferResult, ModelInfo
from dropnet.server.oip_parameters import (
    BINARY_DATA,
    BINARY_DATA_OUTPUT,
    BINARY_DATA_SIZE,
    INPUT_PARAMETERS,
    MC_SAMPLES,
    OUTPUT_PARAMETERS,
    REQUEST_PARAMETERS,
    SEED,
    Parameter,
    check_parameters,
    json_kind,
)
from dropnet.server.tensors import check_shape, decode_raw, little_endian_bytes

HEADER_LENGTH = "Inference-Header-Content-Length"
"""The binary tensor data extension's HTTP header: the length of the JSON part of the body."""
BINARY_EXTENSION = "binary_tensor_data"
"""The extension's name, as servers list it in their metadata."""
REQUEST_KEYS = ("id", "parameters", "inputs", "outputs")
INPUT_KEYS = ("name", "shape", "datatype", "parameters", "data")
OUTPUT_KEYS = ("name", "parameters")
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
               type(None): "null"}


@dataclass(frozen=True)
class RestInferRequest:
    """A decoded REST inference request: the data plane's request and how to encode its answer."""

    request: InferRequest
    id: str | None
    """The request's ``id``, echoed in the response (None: the request had none)."""
    binary_default: bool = False
    """Request parameter ``binary_data_output``: outputs as binary data unless their own parameter says otherwise."""
    binary_outputs: Mapping[str, bool] = field(default_factory=dict)
    """Parameter ``binary_data`` of the requested outputs that set it."""

    def binary(self, name: str) -> bool:
        """Whether output ``name`` is sent as binary data."""
        return self.binary_outputs.get(name, self.binary_default)


def decode_infer_request(body: bytes, header_length: str | None, model: str, version: str | None) -> RestInferRequest:
    """The request a POST to ``/v2/models/MODEL[/versions/VERSION]/infer`` carries.

    ``header_length`` is the ``Inference-Header-Content-Length`` header (None: the body is all JSON).
    """
    head, binary = _split_body(body, header_length)
    payload = _parse_json(head)
    if not isinstance(payload, dict):
        raise InvalidInputError(
            f"the request body is a JSON {_json_type(payload)}; expected an object with 'inputs' (and optionally "
            f"{[key for key in REQUEST_KEYS if key != 'inputs']})"
        )
    _check_keys("the request", payload, REQUEST_KEYS)
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInputError(f"the request's id is a JSON {_json_type(request_id)}; expected a string")
    parameters = _parameters("request", payload, REQUEST_PARAMETERS)
    binary_outputs = _requested_outputs(payload.get("outputs"))
    mc_samples, seed = parameters.get(MC_SAMPLES), parameters.get(SEED)
    return RestInferRequest(
        InferRequest(
            model=model,
            version=version or None,
            x=_decode_input(payload.get("inputs"), binary),
            mode=DETERMINISTIC if mc_samples is None and seed is None else MC,
            mc_samples=mc_samples,
            seed=seed,
            outputs=tuple(binary_outputs) or None,
            echo_bytes=0 if request_id is None else len(request_id.encode()),
        ),
        request_id,
        bool(parameters.get(BINARY_DATA_OUTPUT, False)),
        {name: flag for name, flag in binary_outputs.items() if flag is not None},
    )


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON part of the body and the binary data after it."""
    if header_length is None:
        return body, b""
    length = header_length.strip()
    if not length.isdigit() or int(length) > len(body):
        raise InvalidInputError(
            f"header {HEADER_LENGTH} is {quoted(header_length)}; expected the length in bytes of the JSON "
            f"part of the body, an integer from 0 to the body's {len(body)} bytes"
        )
    return body[: int(length)], body[int(length):]


def _parse_json(text: bytes) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidInputError("the request body nests JSON arrays or objects too deeply; expected a JSON object "
                                "whose tensor data nests at most as deep as its shape") from None
    except ValueError as exc:  # UnicodeDecodeError too
        raise InvalidInputError(f"the request body is not JSON ({exc}); expected a JSON object") from None


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _check_keys(where: str, obj: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(key for key in obj if key not in allowed)
    if unknown:
        raise InvalidInputError(f"{where} has unknown key(s) {quoted_list(unknown)}; expected some of {list(allowed)}")


def _parameters(where: str, obj: Mapping[str, Any], known: Mapping[str, Parameter]) -> dict[str, Any]:
    """The ``parameters`` object of ``obj`` (empty when absent), checked against the shared table."""
    parameters = obj.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInputError(f"{where} parameters are a JSON {_json_type(parameters)}; expected an object")
    check_parameters(where, {key: json_kind(value) for key, value in parameters.items()}, known)
    return parameters


def _requested_outputs(outputs: Any) -> dict[str, bool | None]:
    """Requested output name → its ``binary_data`` parameter (None: not set), in request order."""
    if outputs is None:
        return {}
    if not isinstance(outputs, list):
        raise InvalidInputError(f"the request's outputs are a JSON {_json_type(outputs)}; expected an array of "
                                f"objects with a 'name'")
    requested: dict[str, bool | None] = {}
    for index, output in enumerate(outputs):
        where = f"requested output {index}"
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise InvalidInputError(f"{where} is not an object with a string 'name'; expected {{\"name\": \"OUTPUT\"}}")
        where = f"requested output {quoted(output['name'])}"
        _check_keys(where, output, OUTPUT_KEYS)
        requested[output["name"]] = _parameters(where, output, OUTPUT_PARAMETERS).get(BINARY_DATA)
    return requested


def _decode_input(inputs: Any, binary: bytes) -> np.ndarray:
    if not isinstance(inputs, list):
        raise InvalidInputError(f"the request's inputs are a JSON {_json_type(inputs)}; expected an array holding "
                                f"one input, {INPUT_NAME!r}")
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        names = quoted_list(str(tensor.get("name")) if isinstance(tensor, dict) else "?" for tensor in inputs)
        raise InvalidInputError(f"request has {len(inputs)} inputs {names}; expected exactly one object, {INPUT_NAME!r}")
    tensor = inputs[0]
    name = tensor.get("name")
    what = f"input {quoted(str(name))}"
    if name != INPUT_NAME:
        raise InvalidInputError(f"{what} is unknown; expected {INPUT_NAME!r}")
    _check_keys(what, tensor, INPUT_KEYS)
    parameters = _parameters(what, tensor, INPUT_PARAMETERS)
    datatype = tensor.get("datatype")
    if datatype not in OIP_DTYPES:
        raise InvalidInputError(f"{what} has datatype {quoted(str(datatype))}; expected one of {list(OIP_DTYPES)}")
    dtype = OIP_DTYPES[datatype][0]
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):
        raise InvalidInputError(f"{what} has shape {quoted(json.dumps(shape))}; expected an array of integers")
    dims = check_shape(what, shape)
    if BINARY_DATA_SIZE in parameters:
        if "data" in tensor:
            raise InvalidInputError(f"{what} has data and parameter {BINARY_DATA_SIZE!r}; expected one of them")
        size = parameters[BINARY_DATA_SIZE]
        if size != len(binary):
            raise InvalidInputError(
                f"{what} has parameter {BINARY_DATA_SIZE!r} {size}, but {len(binary)} bytes follow the JSON header; "
                f"expected them to be equal (header {HEADER_LENGTH} gives where the binary data starts)"
            )
        return decode_raw(what, binary, dtype, dims)
    if binary:
        raise InvalidInputError(f"{len(binary)} bytes follow the JSON header, but {what} has no parameter "
                                f"{BINARY_DATA_SIZE!r}; expected binary data for inputs that declare its size only")
    if "data" not in tensor:
        raise InvalidInputError(f"{what} has no data; expected 'data' (a JSON array) or parameter {BINARY_DATA_SIZE!r}")
    return _array(what, datatype, dtype, _flat_values(what, tensor["data"], dims), dims)


def _flat_values(what: str, data: Any, dims: tuple[int, ...]) -> list[Any]:
    """The elements of ``data``: a flat array of prod(dims) elements, or arrays nested exactly as ``dims``."""
    if not isinstance(data, list):
        raise InvalidInputError(f"{what} data is a JSON {_json_type(data)}; expected an array")
    count = math.prod(dims)
    if not any(isinstance(item, list) for item in data):
        if len(data) != count:
            raise InvalidInputError(f"{what} has {len(data)} values; expected {count} for shape {list(dims)}")
        return data
    if not dims:
        raise InvalidInputError(f"{what} has shape [] (one value) but nested arrays as data; expected a flat array "
                                "of that one value")
    values: list[Any] = []
    _nested_values(what, data, dims, (), values)
    return values


def _nested_values(what: str, data: Any, dims: tuple[int, ...], at: tuple[int, ...], values: list[Any]) -> None:
    """Append the elements of ``data`` nested as ``dims`` (``at``: its index in the outer arrays)."""
    where = "data" + "".join(f"[{i}]" for i in at)
    if not isinstance(data, list) or len(data) != dims[0]:
        found = f"an array of {len(data)}" if isinstance(data, list) else f"a JSON {_json_type(data)}"
        raise InvalidInputError(f"{what} {where} is {found}; expected an array of {dims[0]} (shape {list(dims)} "
                                f"from there), or a flat array of all values")
    if len(dims) == 1:
        values.extend(data)
        return
    for index, item in enumerate(data):
        _nested_values(what, item, dims[1:], (*at, index), values)


def _array(what: str, datatype: str, dtype: np.dtype, values: list[Any], dims: tuple[int, ...]) -> np.ndarray:
    """``values`` (JSON numbers) as an array of ``dtype`` and ``dims``: integers for integer types, in their range."""
    allowed = {int} if dtype.kind in "iu" else {int, float}
    wrong = set(map(type, values)) - allowed
    if wrong:
        kind = "integers" if dtype.kind in "iu" else "numbers"
        found = " and ".join(sorted(_JSON_TYPES.get(t, t.__name__) for t in wrong))
        raise InvalidInputError(f"{what} data holds JSON {found} values; expected {kind} for datatype {datatype}")
    if dtype.kind in "iu" and values:
        limits = np.iinfo(dtype)
        low, high = min(values), max(values)
        if low < limits.min or high > limits.max:
            raise InvalidInputError(f"{what} holds values in {low}..{high}; expected {datatype} values in "
                                    f"{limits.min}..{limits.max}")
        return np.array(values, dtype=dtype).reshape(dims)
    try:
        with np.errstate(over="ignore"):  # too large for the type: infinite, which the data plane refuses by name
            return np.array(values, dtype=np.float64).astype(dtype).reshape(dims)
    except OverflowError:
        raise InvalidInputError(f"{what} holds an integer too large for a number; expected {datatype} values") from None


def encode_infer_response(result: InferResult, decoded: RestInferRequest) -> tuple[bytes, int | None]:
    """The response body to ``decoded`` and, when binary outputs follow the JSON, the JSON part's length."""
    response: dict[str, Any] = {"model_name": result.model, "model_version": result.version}
    if decoded.id is not None:
        response["id"] = decoded.id
    if result.seed is not None:
        response["parameters"] = {SEED: result.seed}
    outputs, chunks = [], []
    for name, array in result.outputs.items():
        tensor: dict[str, Any] = {"name": name, "datatype": oip_datatype(array.dtype), "shape": list(array.shape)}
        if decoded.binary(name):
            chunks.append(little_endian_bytes(array))
            tensor["parameters"] = {BINARY_DATA_SIZE: len(chunks[-1])}
        else:
            tensor["data"] = array.ravel().tolist()
        outputs.append(tensor)
    response["outputs"] = outputs
    head = json.dumps(response, separators=(",", ":"), allow_nan=False).encode()
    if not chunks:
        return head, None
    return b"".join((head, *chunks)), len(head)


def server_metadata() -> dict[str, Any]:
    """The server's name, version and extensions."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": [BINARY_EXTENSION]}


def model_metadata(model: ModelInfo) -> dict[str, Any]:
    """A served model's metadata: the gRPC ModelMetadataResponse as JSON, with integer shapes."""
    metadata = json_format.MessageToDict(encode_model_metadata(model), preserving_proto_field_name=True)
    for tensor in (*metadata.get("inputs", ()), *metadata.get("outputs", ())):
        tensor["shape"] = [int(dim) for dim in tensor.get("shape", ())]
    return metadata
