"""What the fuzz suite sends, and what the contract says must come back.

Two halves:

* the oracle — :func:`expect` turns any message (or raw bytes) sent to any RPC of either gRPC API
  into the status codes the contract allows and, where OK is one, the call of the embedded
  Predictor that computes the right answer; :func:`expect_embedded` does the same for a
  ``Predictor.predict`` call. A request with several faults may get the code of any of them (the
  contract orders no checks); where the contract leaves an outcome open (a request cost between
  the bounds of the model's bytes per sample, a response within a few hundred bytes of the limit),
  both outcomes are allowed.
* the strategies — requests built from a valid one with one family of faults, raw and mutated
  message bytes, metadata lookups and embedded calls. The oracle never trusts the family: it
  judges whatever was built.

The contract (issue 10): valid → OK with the Predictor's values; a bad encoding, shape, dtype,
byte length, zero-sized or overflowing shape, NaN/Inf, bad ``mc_samples`` or seed, unknown output
or request parameter, undecodable message → INVALID_ARGUMENT; unknown model or version →
NOT_FOUND; a cost (rows × max(T, 1) × bytes per sample) over ``--max-request-cost-bytes``, a
message over ``--max-message-bytes`` or a response that would be → RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from dropnet.core.outputs import SAMPLES, Mode, Task, default_output_names, output_names, output_spec
from dropnet.core.seeding import INT64_MAX, INT64_MIN
from dropnet.protos.dropnet.v1 import predictor_pb2 as v1
from dropnet.protos.inference import grpc_service_pb2 as oip
from dropnet.server.codecs import OIP_DTYPES
from dropnet.server.tensors import V1_DTYPES
from tests.server.helpers import MODEL

# --- the server under test ----------------------------------------------------------------------

HIDDEN_MODEL = "zz-hidden-model"
"""A second served model (the same package): a NOT_FOUND message must name neither it nor MODEL
unless the client did."""
MAX_ROWS = 64
MC_LIMIT = 1000
"""The server's --max-mc-samples, equal to the tiny package's own mc.max_samples."""
MAX_MESSAGE_BYTES = 256 * 1024
"""Small, so that oversized messages and responses stay cheap: samples of 7 rows at T = 1000 pass it."""
COST_ROWS_AT_LIMIT = 16
"""The cost limit lets this many rows run at the MC limit T (more, or samples of 7+, pass the message limit)."""
SAMPLE_BYTES_BOUNDS = (256, 16 * 1024)
"""Bounds on the tiny model's bytes per row and sample when its manifest records none: its masked
input alone is 64 float32 per row and sample; its whole 64-16-16-10 MC graph is far under 16 KiB."""
MAX_STATUS_BYTES = 4096
DEFAULT_MC_SAMPLES = 100
"""T of an MC request that names none (capped at the model's limit)."""

OK, INVALID, NOT_FOUND, EXHAUSTED = "OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED"
MC_SAMPLES, SEED = "mc_samples", "seed"
STANDARD_PARAMETERS = frozenset({
    "binary_data_output", "priority", "timeout", "sequence_id", "sequence_start", "sequence_end", "headers",
    "triton_enable_empty_final_response",
})
"""KServe/Triton request parameters a server may pass through: never sent as 'unknown', and allowed either way."""
RESPONSE_SLACK_BYTES = 512
"""Protobuf framing of a response beyond its tensors' payload: names, shapes, tags and lengths."""


@dataclass(frozen=True)
class Contract:
    """What the server under test serves and its limits: everything the oracle needs."""

    models: Mapping[str, tuple[str, ...]]
    """Served model name → its loaded versions."""
    input_shape: tuple[int, ...]
    classes: int
    mc_limit: int
    """The largest T a request may ask for (GetModel's mc.max_samples)."""
    sample_bytes: tuple[int, int]
    """Bounds of the model's bytes per row and sample (equal when its manifest records them)."""
    max_cost_bytes: int
    max_rows: int = MAX_ROWS
    max_message_bytes: int = MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class Answer:
    """How the embedded Predictor computes the right answer to a request the server may answer OK."""

    model: str
    """The served model the request named (the answer names it, version "1")."""
    x: np.ndarray
    mc_samples: int | None
    """T in MC mode; None for a deterministic request."""
    seed: int | None
    """The seed asked for; None: the server draws one and reports it."""
    outputs: tuple[str, ...]
    """The output names the response carries, in order."""
    raw: bool = True
    """OIP: outputs as raw_output_contents (else typed contents)."""
    request_id: str = ""


@dataclass(frozen=True)
class Expectation:
    """The status codes the contract allows for one call, why, and how to check an OK answer."""

    codes: frozenset[str]
    reasons: tuple[str, ...]
    answer: Answer | None = None


@dataclass
class _Verdict:
    """Collects a request's faults (each excludes OK) and the outcomes the contract leaves open."""

    faults: list[tuple[str, str]] = field(default_factory=list)
    open: list[tuple[str, str]] = field(default_factory=list)

    def fault(self, code: str, reason: str) -> None:
        self.faults.append((code, reason))

    def allow(self, code: str, reason: str) -> None:
        self.open.append((code, reason))

    def expectation(self, answer: Answer | None = None) -> Expectation:
        codes = {code for code, _ in self.faults + self.open} | (set() if self.faults else {OK})
        reasons = tuple(f"{code}: {why}" for code, why in self.faults) + tuple(
            f"{code} (allowed): {why}" for code, why in self.open
        )
        return Expectation(frozenset(codes), reasons or ("a valid request",), None if self.faults else answer)


def only(code: str, reason: str) -> Expectation:
    return Expectation(frozenset({code}), (f"{code}: {reason}",))


LONG_PROFILE = "long"
"""``pytest tests/server/fuzz --hypothesis-profile=long``: 20 times the examples, random (not derandomized) seeds."""
LONG_SCALE = 20
SCALE_VARIABLE = "DROPNET_FUZZ_SCALE"
"""Environment variable multiplying every fuzz test's examples (overrides the profile's scale)."""


def fuzz_settings(examples: int) -> settings:
    """``examples`` cases (times the scale), no deadline; derandomized (reproducible in CI) but in the long profile."""
    long = settings.get_current_profile_name() == LONG_PROFILE
    scale = int(os.environ.get(SCALE_VARIABLE, LONG_SCALE if long else 1))
    return settings(
        max_examples=examples * scale, deadline=None, derandomize=not long, database=None,
        suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example),
    )


# --- the oracle: RPCs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    """One RPC: its path, message classes and the contract's rule for a decoded request."""

    path: str
    request: type[Message]
    response: type[Message]
    rule: Callable[[Contract, Any], Expectation]


def expect(contract: Contract, rpc: Rpc, payload: bytes) -> Expectation:
    """What the server must answer to ``payload`` sent as the whole request message of ``rpc``."""
    if len(payload) > contract.max_message_bytes:
        return only(EXHAUSTED, f"a {len(payload)}-byte message; the server takes at most {contract.max_message_bytes}")
    try:
        request = rpc.request.FromString(payload)
    except DecodeError as exc:
        return only(INVALID, f"undecodable message ({exc})")
    return rpc.rule(contract, request)


def _predict_rule(contract: Contract, request: v1.PredictRequest) -> Expectation:
    verdict = _Verdict()
    x = _v1_input(request, verdict)
    seed = request.seed if request.HasField("seed") else None
    wants_mc = request.mc_samples > 0 or seed is not None
    mode = {v1.MODE_UNSPECIFIED: Mode.MC if wants_mc else Mode.DETERMINISTIC, v1.MODE_DETERMINISTIC: Mode.DETERMINISTIC,
            v1.MODE_MC_DROPOUT: Mode.MC}.get(request.mode)
    if mode is None:
        verdict.fault(INVALID, f"mode {request.mode} is unknown")
    elif mode is Mode.DETERMINISTIC and wants_mc:
        verdict.fault(INVALID, "mc_samples or seed in deterministic mode")
    samples = (request.mc_samples or min(DEFAULT_MC_SAMPLES, contract.mc_limit)) if mode is Mode.MC else None
    return _judge(contract, verdict, request.model, request.version, x, mode, samples, seed,
                  tuple(request.outputs), raw=True, echoed_bytes=0)


def _v1_input(request: v1.PredictRequest, verdict: _Verdict) -> np.ndarray | None:
    if not request.HasField("input"):
        verdict.fault(INVALID, "no input tensor")
        return None
    tensor = request.input
    dtype = V1_DTYPES.get(tensor.dtype)
    if dtype is None:
        verdict.fault(INVALID, f"dtype {tensor.dtype}")
        return None
    return _raw_array(verdict, tensor.data, dtype, tuple(tensor.shape))


def _infer_rule(contract: Contract, request: oip.ModelInferRequest) -> Expectation:
    verdict = _Verdict()
    values: dict[str, int] = {}
    for key, parameter in request.parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        if key in STANDARD_PARAMETERS:
            verdict.allow(INVALID, f"standard parameter {key!r} (pass-through or refused)")
        elif key not in (MC_SAMPLES, SEED):
            verdict.fault(INVALID, f"unknown parameter {_short(key)}")
        elif kind not in ("int64_param", "uint64_param"):
            verdict.fault(INVALID, f"parameter {key!r} holds {kind}, not an integer")
        else:
            values[key] = int(getattr(parameter, kind))
    mode = Mode.MC if MC_SAMPLES in request.parameters or SEED in request.parameters else Mode.DETERMINISTIC
    samples = values.get(MC_SAMPLES, min(DEFAULT_MC_SAMPLES, contract.mc_limit)) if mode is Mode.MC else None
    x = _oip_input(request, verdict)
    outputs = tuple(output.name for output in request.outputs)
    tensor_parameters = [key for tensor in (*request.inputs, *request.outputs) for key in tensor.parameters]
    if tensor_parameters:
        verdict.allow(INVALID, f"parameters on the input or outputs {_short_list(tensor_parameters)}")
    return _judge(contract, verdict, request.model_name, request.model_version, x, mode, samples,
                  values.get(SEED), outputs, raw=bool(request.raw_input_contents),
                  echoed_bytes=len(request.id.encode()), request_id=request.id)


_CONTENTS_FIELDS = tuple(f.name for f in oip.InferTensorContents.DESCRIPTOR.fields)
_FIELD_DTYPES = {
    "int_contents": np.int32, "int64_contents": np.int64, "uint_contents": np.uint32,
    "uint64_contents": np.uint64, "fp32_contents": np.float32, "fp64_contents": np.float64,
}


def _oip_input(request: oip.ModelInferRequest, verdict: _Verdict) -> np.ndarray | None:
    """The input as the contract decodes it, or None with the fault recorded."""
    if len(request.inputs) != 1:
        verdict.fault(INVALID, f"{len(request.inputs)} inputs")
        return None
    tensor = request.inputs[0]
    if tensor.name != "x":
        verdict.fault(INVALID, f"input named {_short(tensor.name)}")
        return None
    if tensor.datatype not in OIP_DTYPES:
        verdict.fault(INVALID, f"datatype {_short(tensor.datatype)}")
        return None
    dtype, contents_field = OIP_DTYPES[tensor.datatype]
    typed = [name for name in _CONTENTS_FIELDS if len(getattr(tensor.contents, name))]
    shape = tuple(tensor.shape)
    if request.raw_input_contents:
        if typed:
            verdict.fault(INVALID, "raw_input_contents and typed contents")
            return None
        if tensor.HasField("contents"):
            verdict.allow(INVALID, "raw_input_contents beside an empty contents message")
        if len(request.raw_input_contents) != 1:
            verdict.fault(INVALID, f"{len(request.raw_input_contents)} raw_input_contents for one input")
            return None
        return _raw_array(verdict, request.raw_input_contents[0], dtype, shape)
    if typed and typed != [contents_field]:
        verdict.fault(INVALID, f"typed contents {typed} for datatype {tensor.datatype}")
        return None
    if not typed:
        verdict.fault(INVALID, "no data: neither raw_input_contents nor typed contents")
        return None
    if not _shape_ok(verdict, shape):
        return None
    values = getattr(tensor.contents, contents_field)
    if len(values) != math.prod(shape):
        verdict.fault(INVALID, f"{len(values)} values for shape {list(shape)}")
        return None
    array = np.array(values, dtype=_FIELD_DTYPES[contents_field])
    if dtype.kind in "iu" and array.size:
        limits = np.iinfo(dtype)
        if array.min() < limits.min or array.max() > limits.max:
            verdict.fault(INVALID, f"values outside {tensor.datatype}")
            return None
    return array.astype(dtype).reshape(shape)


def _shape_ok(verdict: _Verdict, shape: tuple[int, ...]) -> bool:
    """Rank at most 32, no negative dimension, no zero (an empty tensor); the fault recorded otherwise."""
    if len(shape) > 32 or any(d < 0 for d in shape) or 0 in shape:
        verdict.fault(INVALID, f"shape {_short_list(shape)}")
        return False
    return True


def _raw_array(verdict: _Verdict, data: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray | None:
    if not _shape_ok(verdict, shape):
        return None
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        verdict.fault(INVALID, f"{len(data)} bytes for shape {_short_list(shape)} of {dtype} ({expected} expected)")
        return None
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _judge(
    contract: Contract, verdict: _Verdict, model: str, version: str, x: np.ndarray | None, mode: Mode | None,
    samples: int | None, seed: int | None, outputs: tuple[str, ...], raw: bool, echoed_bytes: int,
    request_id: str = "",
) -> Expectation:
    """The checks both inference APIs share, once their encoding is decoded."""
    if model not in contract.models:
        verdict.fault(NOT_FOUND, f"model {_short(model)}")
    elif version and version not in contract.models[model]:
        verdict.fault(NOT_FOUND, f"version {_short(version)} of {model!r}")
    names: tuple[str, ...] | None = None
    if mode is not None:
        unknown = [name for name in outputs if name not in output_names(Task.CLASSIFICATION, mode)]
        if unknown:
            verdict.fault(INVALID, f"{len(unknown)} unknown output(s) for mode {mode.value}, e.g. {_short(unknown[0])}")
        else:
            names = tuple(dict.fromkeys(outputs)) or default_output_names(Task.CLASSIFICATION, mode)
    if samples is not None and not 1 <= samples <= contract.mc_limit:
        verdict.fault(INVALID, f"mc_samples {samples}")
    if seed is not None and not INT64_MIN <= seed <= INT64_MAX:
        verdict.fault(INVALID, f"seed {seed}")
    rows = None if x is None else _rows(contract, verdict, x)
    if rows is not None and names is not None:
        _costs(contract, verdict, rows, samples, names, raw, echoed_bytes)
    if x is None or mode is None or names is None:
        return verdict.expectation()
    return verdict.expectation(Answer(model, x, samples, seed, names, raw, request_id))


def _rows(contract: Contract, verdict: _Verdict, x: np.ndarray) -> int | None:
    """The rows of ``x`` ([B, *input shape], or one example), or None with the fault recorded."""
    shape = contract.input_shape
    rows = 1 if x.shape == shape else (x.shape[0] if x.ndim and x.shape[1:] == shape else None)
    if rows is None:
        verdict.fault(INVALID, f"x of shape {_short_list(x.shape)}; expected (B, {', '.join(map(str, shape))})")
        return None
    if rows > contract.max_rows:
        verdict.fault(INVALID, f"{rows} rows; at most {contract.max_rows}")
    with np.errstate(over="ignore", invalid="ignore"):
        finite = bool(np.isfinite(x.astype(np.float32)).all())
    if not finite:
        verdict.fault(INVALID, "NaN, Inf or beyond float32")
    return rows


def _costs(
    contract: Contract, verdict: _Verdict, rows: int, samples: int | None, names: Sequence[str], raw: bool,
    echoed_bytes: int,
) -> None:
    """RESOURCE_EXHAUSTED when the request's cost or its response passes a limit (either way near a bound)."""
    row_samples = rows * max(samples or 0, 1)
    low, high = (row_samples * bound for bound in contract.sample_bytes)
    if low > contract.max_cost_bytes:
        verdict.fault(EXHAUSTED, f"cost {row_samples} row-samples × >= {contract.sample_bytes[0]} B")
    elif high > contract.max_cost_bytes:
        verdict.allow(EXHAUSTED, f"cost {row_samples} row-samples × up to {contract.sample_bytes[1]} B")
    mode = Mode.DETERMINISTIC if samples is None else Mode.MC
    sizes = {"B": rows, "C": contract.classes, "T": samples or 0}
    payload = echoed_bytes
    for name in names:
        spec = output_spec(Task.CLASSIFICATION, mode, name)
        elements = math.prod(spec.dims(sizes))
        payload += elements * (np.dtype(spec.dtype).itemsize if raw or spec.dtype != "int64" else 1)
    if payload > contract.max_message_bytes:
        verdict.fault(EXHAUSTED, f"a response of over {payload} bytes")
    elif payload + RESPONSE_SLACK_BYTES > contract.max_message_bytes:
        verdict.allow(EXHAUSTED, f"a response of about {payload} bytes")


def _lookup_rule(contract: Contract, request: v1.GetModelRequest | oip.ModelMetadataRequest) -> Expectation:
    if request.name not in contract.models:
        return only(NOT_FOUND, f"model {_short(request.name)}")
    if request.version and request.version not in contract.models[request.name]:
        return only(NOT_FOUND, f"version {_short(request.version)}")
    return only(OK, "a served model")


def _always_ok(contract: Contract, request: Message) -> Expectation:
    return only(OK, "takes any well-formed request")


def _method(service: Any, name: str) -> str:
    return f"/{service.full_name}/{name}"


_V1 = v1.DESCRIPTOR.services_by_name["Predictor"]
_OIP = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"]
PREDICT = Rpc(_method(_V1, "Predict"), v1.PredictRequest, v1.PredictResponse, _predict_rule)
LIST_MODELS = Rpc(_method(_V1, "ListModels"), v1.ListModelsRequest, v1.ListModelsResponse, _always_ok)
GET_MODEL = Rpc(_method(_V1, "GetModel"), v1.GetModelRequest, v1.GetModelResponse, _lookup_rule)
MODEL_INFER = Rpc(_method(_OIP, "ModelInfer"), oip.ModelInferRequest, oip.ModelInferResponse, _infer_rule)
SERVER_LIVE = Rpc(_method(_OIP, "ServerLive"), oip.ServerLiveRequest, oip.ServerLiveResponse, _always_ok)
SERVER_READY = Rpc(_method(_OIP, "ServerReady"), oip.ServerReadyRequest, oip.ServerReadyResponse, _always_ok)
MODEL_READY = Rpc(_method(_OIP, "ModelReady"), oip.ModelReadyRequest, oip.ModelReadyResponse, _always_ok)
SERVER_METADATA = Rpc(
    _method(_OIP, "ServerMetadata"), oip.ServerMetadataRequest, oip.ServerMetadataResponse, _always_ok
)
MODEL_METADATA = Rpc(
    _method(_OIP, "ModelMetadata"), oip.ModelMetadataRequest, oip.ModelMetadataResponse, _lookup_rule
)
RPCS = (PREDICT, LIST_MODELS, GET_MODEL, MODEL_INFER, SERVER_LIVE, SERVER_READY, MODEL_READY, SERVER_METADATA,
        MODEL_METADATA)


# --- the oracle: the embedded Predictor ----------------------------------------------------------


@dataclass(frozen=True)
class EmbeddedCall:
    """``predictor.predict(x, mc_samples, seed, return_samples)``."""

    x: Any
    mc_samples: Any = None
    seed: Any = None
    return_samples: bool = False

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints examples with it
        printer.text(repr(self))

    def __repr__(self) -> str:
        return (f"EmbeddedCall(x={_describe_value(self.x)}, mc_samples={self.mc_samples!r}, seed={self.seed!r}, "
                f"return_samples={self.return_samples})")


UNRUNNABLE_ROW_SAMPLES = 2**30
"""Rows × T beyond any machine's memory for this model (the fuzzed arrays are broadcast views of 2**36+ rows)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def expect_embedded(contract: Contract, call: EmbeddedCall) -> Expectation:
    """What ``Predictor.predict`` must do with ``call``: return (OK) or raise the error of that code."""
    verdict = _Verdict()
    mc = call.mc_samples is not None
    if not mc and (call.seed is not None or call.return_samples):
        verdict.fault(INVALID, "seed or return_samples without mc_samples")
    if mc and not (_is_int(call.mc_samples) and 1 <= call.mc_samples <= contract.mc_limit):
        verdict.fault(INVALID, f"mc_samples {call.mc_samples!r}")
    if call.seed is not None and not (_is_int(call.seed) and INT64_MIN <= call.seed <= INT64_MAX):
        verdict.fault(INVALID, f"seed {call.seed!r}")
    try:
        x = np.asarray(call.x)
    except (ValueError, TypeError):
        verdict.fault(INVALID, "not a rectangular array")
        return verdict.expectation()
    shape = contract.input_shape
    if x.dtype.kind not in "fiu":
        verdict.fault(INVALID, f"dtype {x.dtype}")
    elif x.shape != shape and (x.ndim == 0 or x.shape[1:] != shape or x.shape[0] == 0):
        verdict.fault(INVALID, f"shape {_short_list(x.shape)}")
    elif x.shape[0] * max(int(call.mc_samples) if mc and _is_int(call.mc_samples) else 1, 1) > UNRUNNABLE_ROW_SAMPLES:
        verdict.fault(INVALID, f"{x.shape[0]} rows: refused with a dropnet error, not a MemoryError")
        verdict.fault(EXHAUSTED, f"{x.shape[0]} rows: refused with a dropnet error, not a MemoryError")
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            if not np.isfinite(x.astype(np.float32)).all():
                verdict.fault(INVALID, "NaN, Inf or beyond float32")
    outputs = (*default_output_names(Task.CLASSIFICATION, Mode.MC if mc else Mode.DETERMINISTIC),
               *((SAMPLES,) if call.return_samples else ()))
    return verdict.expectation(Answer(MODEL, x, call.mc_samples, call.seed, outputs))


# --- describing what was sent --------------------------------------------------------------------


def _short(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}...({len(text)} chars)"


def _short_list(items: Sequence[Any], limit: int = 8) -> str:
    items = list(items)
    return str(items) if len(items) <= limit else f"{items[:limit]}...({len(items)} items)"


def _describe_value(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array(shape={_short_list(value.shape)}, dtype={value.dtype}, head={value.flat[:4].tolist()})"
    if isinstance(value, (bytes, str)):
        return _short(value) if isinstance(value, str) else f"<{len(value)} bytes {value[:16].hex()}>"
    text = repr(value)
    return text if len(text) <= 120 else f"{text[:120]}...({len(text)} chars)"


def describe(message: Message) -> str:
    """A short text form of ``message``: long strings, bytes and lists cut, so a falsifying example stays readable."""
    parts = []
    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            shown = {_short(k): describe(v) if isinstance(v, Message) else v for k, v in list(value.items())[:6]}
            parts.append(f"{descriptor.name}={shown}" + (f"...({len(value)})" if len(value) > 6 else ""))
        elif descriptor.is_repeated:
            shown = [describe(v) if isinstance(v, Message) else _describe_value(v) for v in list(value)[:6]]
            parts.append(f"{descriptor.name}=[{', '.join(shown)}]" + (f"...({len(value)})" if len(value) > 6 else ""))
        elif isinstance(value, Message):
            parts.append(f"{descriptor.name}={{{describe(value)}}}")
        else:
            parts.append(f"{descriptor.name}={_describe_value(value)}")
    return " ".join(parts)


@dataclass(frozen=True)
class RpcCase:
    """One call: ``payload`` sent as the whole request message of ``rpc``."""

    rpc: Rpc
    payload: bytes
    family: str
    """What the generator meant to exercise (the oracle judges the payload itself)."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints examples with it
        printer.text(repr(self))

    def __repr__(self) -> str:
        try:
            shown = describe(self.rpc.request.FromString(self.payload))
        except DecodeError:
            shown = f"undecodable {_describe_value(self.payload)}"
        return f"RpcCase({self.rpc.path}, {self.family}, {len(self.payload)} B: {shown})"


def case(rpc: Rpc, message: Message, family: str) -> RpcCase:
    return RpcCase(rpc, message.SerializeToString(), family)


# --- strategies: values ---------------------------------------------------------------------------

HUGE_DIMS = (2**31, 2**32, 2**40, 2**62, 2**63 - 1)
FLOAT_SPECIALS = (math.nan, math.inf, -math.inf, -0.0, 5e-324, 65504.0, 1e5, 3.4e38, 3.5e38, -1e300)
PATH_NAMES = (
    "../x", "../../etc/passwd", "/etc/passwd", "..", ".", "tiny/../tiny", "tiny/1", "tiny\x00", "\x00", "a\x00b",
    "C:\\Windows\\system32", "~", "%2e%2e%2f", "tiny ", " tiny", "TINY", "tiny\n", "\U0001f4a5", "ｔｉｎｙ",
    "\u202etiny", "1/../1", "1\x00",
)
MISSPELT_PARAMETERS = ("mc_sample", "mcsamples", "MC_SAMPLES", "mc-samples", "num_samples", "samples", "Seed",
                       "seeds", "random_seed", "", "mc_samples ", "seed\x00")
MISSPELT_OUTPUTS = ("probability", "Probabilities", "entropy", "sample", "logit", "std ", "predicted-class", "x", "")


def rows(max_rows: int = 4) -> st.SearchStrategy[int]:
    return st.integers(1, max_rows)


def dims() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, 9), st.sampled_from((63, 64, 65, *HUGE_DIMS)), st.integers(INT64_MIN, -1))


def _replaced(shape: list[int], axis: int, size: int) -> list[int]:
    return [size if i == axis else d for i, d in enumerate(shape)]


def shapes() -> st.SearchStrategy[list[int]]:
    """Model-shaped, near it, anything of rank up to 40, and zero dimensions beside huge ones."""
    return st.one_of(
        rows(MAX_ROWS + 2).map(lambda b: [b, 1, 8, 8]),
        st.tuples(st.integers(0, 3), dims()).map(lambda change: _replaced([2, 1, 8, 8], *change)),
        st.lists(dims(), max_size=40),
        st.lists(st.sampled_from((0, 1, 8, *HUGE_DIMS)), min_size=2, max_size=6).map(lambda s: [0, *s]),
        st.just([1, 8, 8]),
    )


@st.composite
def arrays(draw: st.DrawFn, dtype: np.dtype, count: int, clean: bool = False) -> np.ndarray:
    """``count`` values of ``dtype``: digits-like, wide-ranging or random bits, with NaN/Inf/extremes put in."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = "digits" if clean else draw(st.sampled_from(("digits", "wide", "bits")))
    with np.errstate(over="ignore", invalid="ignore"):
        if kind == "bits":
            values = np.frombuffer(rng.bytes(count * dtype.itemsize), dtype=dtype).copy()
        elif dtype.kind == "f":
            scale = 1.0 if kind == "digits" else 10.0 ** rng.integers(-8, 40, count)
            values = (rng.uniform(0.0, 16.0, count) * scale).astype(dtype)
        else:
            limits = np.iinfo(dtype)
            low, high = (0, 16) if kind == "digits" else (limits.min, limits.max)
            values = rng.integers(low, high, count, endpoint=True, dtype=dtype)
        if not clean and count:
            specials = FLOAT_SPECIALS if dtype.kind == "f" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
            for index, special in draw(st.lists(st.tuples(st.integers(0, count - 1), st.sampled_from(specials)),
                                                max_size=3)):
                values[index] = special
    return values


def digits(count: int) -> st.SearchStrategy[np.ndarray]:
    return arrays(np.dtype(np.float32), count, clean=True)


def names() -> st.SearchStrategy[str]:
    """Unknown model names and versions: path-like, unicode, NUL bytes, and 20 KB long."""
    return st.one_of(
        st.sampled_from(PATH_NAMES),
        st.text(max_size=30),
        st.builds(lambda unit, n: unit * n, st.sampled_from(("a", "é", "\U0001f4a5", "../", "\x00")),
                  st.integers(5_000, 20_000)),
    )


def unknown_outputs() -> st.SearchStrategy[list[str]]:
    """Unknown output names: misspelt, random, 20 KB long, or thousands."""
    return st.one_of(
        st.lists(st.one_of(st.sampled_from(MISSPELT_OUTPUTS), st.text(min_size=1, max_size=20)), min_size=1,
                 max_size=5),
        st.integers(10_000, 20_000).map(lambda n: ["o" * n]),
        st.integers(50, 2_500).map(lambda n: [f"output-{i}" for i in range(n)]),
    )


def known_outputs(mode: Mode) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(output_names(Task.CLASSIFICATION, mode)), max_size=4)


def unknown_parameter_keys() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(MISSPELT_PARAMETERS), st.text(max_size=20), st.just("k" * 20_000)).filter(
        lambda key: key not in (MC_SAMPLES, SEED) and key not in STANDARD_PARAMETERS
    )


def mc_samples_values(limit: int) -> st.SearchStrategy[int]:
    """Extreme and ordinary T: 0, negative, 1, the limit, limit + 1, int64/uint64 bounds."""
    return st.one_of(st.sampled_from((0, -1, 1, 2, limit, limit + 1, 2**31, 2**32 - 1, 2**63 - 1, INT64_MIN)),
                     st.integers(1, 20))


def seeds() -> st.SearchStrategy[int]:
    """int64 seeds, their bounds, and just beyond them."""
    return st.one_of(st.integers(INT64_MIN, INT64_MAX),
                     st.sampled_from((0, -1, INT64_MIN, INT64_MAX, INT64_MAX + 1, 2**64 - 1, INT64_MIN - 1)))


# --- strategies: dropnet.v1 Predict --------------------------------------------------------------

V1_VALID_DTYPES = tuple(V1_DTYPES)


@st.composite
def v1_tensors(draw: st.DrawFn, shape: list[int] | None = None, dtype: int | None = None) -> v1.Tensor:
    """A Tensor whose data match its shape and dtype (when they can), or are cut, padded or random."""
    dtype = draw(st.one_of(st.sampled_from(V1_VALID_DTYPES), st.integers(-3, 12))) if dtype is None else dtype
    shape = draw(shapes()) if shape is None else shape
    numpy_dtype = V1_DTYPES.get(dtype, np.dtype(np.float32))
    return v1.Tensor(shape=shape, dtype=dtype, data=draw(tensor_bytes(numpy_dtype, shape)))


@st.composite
def tensor_bytes(draw: st.DrawFn, dtype: np.dtype, shape: Sequence[int]) -> bytes:
    count = math.prod(shape) if all(d >= 0 for d in shape) and len(shape) <= 40 else -1
    fits = 0 <= count * dtype.itemsize <= MAX_MESSAGE_BYTES
    how = draw(st.sampled_from(("exact", "exact", "cut", "padded", "random") if fits else ("random",)))
    if how == "random":
        return draw(st.binary(max_size=64)) if draw(st.booleans()) else bytes(draw(st.integers(0, 4096)))
    data = draw(arrays(dtype, count)).tobytes()
    if how == "cut":
        return data[:draw(st.integers(0, max(len(data) - 1, 0)))]
    return data + bytes(draw(st.integers(1, 16))) if how == "padded" else data


def _digits_tensor(draw: st.DrawFn, n: int) -> v1.Tensor:
    return v1.Tensor(shape=[n, 1, 8, 8], dtype=v1.DATA_TYPE_FLOAT32, data=draw(digits(n * 64)).tobytes())


@st.composite
def predict_requests(draw: st.DrawFn, family: str) -> RpcCase:
    """A valid Predict request (deterministic or MC), then one family of faults applied to it."""
    request = v1.PredictRequest(
        model=draw(st.sampled_from((MODEL, MODEL, MODEL, HIDDEN_MODEL))), version=draw(st.sampled_from(("", "1"))),
        input=_digits_tensor(draw, draw(rows())),
    )
    mc = draw(st.booleans())
    if mc:
        request.mode = draw(st.sampled_from((v1.MODE_UNSPECIFIED, v1.MODE_MC_DROPOUT)))
        request.mc_samples = draw(st.integers(1, 20))
        if draw(st.booleans()):
            request.seed = draw(st.integers(INT64_MIN, INT64_MAX))
    request.outputs.extend(draw(known_outputs(Mode.MC if mc else Mode.DETERMINISTIC)))
    _V1_FAULTS[family](draw, request)
    return case(PREDICT, request, family)


def _v1_tensor(draw: st.DrawFn, request: v1.PredictRequest) -> None:
    """Any shape, dtype and byte length, or no input at all."""
    if draw(st.integers(0, 9)):
        request.input.CopyFrom(draw(v1_tensors()))
    else:
        request.ClearField("input")


def _v1_values(draw: st.DrawFn, request: v1.PredictRequest) -> None:
    """The model's shape in any dtype, with NaN, Inf, extremes or random bits."""
    shape = list(request.input.shape)
    request.input.CopyFrom(draw(v1_tensors(shape=shape, dtype=draw(st.sampled_from(V1_VALID_DTYPES)))))


def _v1_mc(draw: st.DrawFn, request: v1.PredictRequest) -> None:
    """Any mode (unknown ones too), extreme mc_samples (a uint32 here) and int64 seeds, in any combination."""
    request.mode = draw(st.one_of(st.sampled_from((0, 1, 2)), st.integers(-2, 9)))
    request.mc_samples = draw(st.one_of(st.sampled_from((0, 1, MC_LIMIT - 1, MC_LIMIT, MC_LIMIT + 1, 2**31,
                                                         2**32 - 1)), st.integers(0, 2**32 - 1)))
    seed = draw(st.one_of(st.none(), seeds().filter(lambda seed: INT64_MIN <= seed <= INT64_MAX)))
    if seed is None:
        request.ClearField("seed")
    else:
        request.seed = seed


def _v1_outputs(draw: st.DrawFn, request: v1.PredictRequest) -> None:
    request.outputs[:] = draw(unknown_outputs()) + list(request.outputs)


def _v1_names(draw: st.DrawFn, request: v1.PredictRequest) -> None:
    if draw(st.booleans()):
        request.model = draw(names())
    else:
        request.version = draw(names())


def _v1_oversized(draw: st.DrawFn, request: v1.PredictRequest) -> None:
    """Push the message past the server's limit: with rows, data, a model name or output names."""
    extra = draw(st.integers(1, 64 * 1024))
    how = draw(st.sampled_from(("rows", "data", "model", "outputs")))
    if how == "rows":
        request.input.CopyFrom(_digits_tensor(draw, (MAX_MESSAGE_BYTES + extra) // 256 + 1))
    elif how == "data":
        request.input.data = bytes(MAX_MESSAGE_BYTES + extra)
    elif how == "model":
        request.model = "m" * (MAX_MESSAGE_BYTES + extra)
    else:
        request.outputs[:] = [f"output-{i:06d}" for i in range((MAX_MESSAGE_BYTES + extra) // 15)]


def _v1_costly(draw: st.DrawFn, request: v1.PredictRequest) -> None:
    """Many rows × many samples, with or without ``samples``: near and past the cost and response limits."""
    request.input.CopyFrom(_digits_tensor(draw, draw(st.integers(1, MAX_ROWS))))
    request.mode = v1.MODE_MC_DROPOUT
    request.mc_samples = draw(st.sampled_from((MC_LIMIT, MC_LIMIT, MC_LIMIT // 2, 200, 64)))
    request.seed = draw(st.integers(0, 2**20))
    request.outputs[:] = ["probabilities", SAMPLES] if draw(st.booleans()) else []


_V1_FAULTS: dict[str, Callable[[st.DrawFn, v1.PredictRequest], None]] = {
    "valid": lambda draw, request: None, "tensor": _v1_tensor, "values": _v1_values, "mc": _v1_mc,
    "outputs": _v1_outputs, "names": _v1_names, "oversized": _v1_oversized, "costly": _v1_costly,
}
V1_FAMILIES = tuple(_V1_FAULTS)


# --- strategies: OIP ModelInfer ------------------------------------------------------------------

TYPED_DATATYPES = tuple(name for name, (_, contents) in OIP_DTYPES.items() if contents is not None)
OTHER_DATATYPES = ("BOOL", "BYTES", "BF16", "fp32", "", "FP8", "FLOAT32")


@st.composite
def infer_requests(draw: st.DrawFn, family: str) -> RpcCase:
    """A valid ModelInfer request (raw or typed contents), then one family of faults applied to it."""
    n = draw(rows())
    request = oip.ModelInferRequest(
        model_name=draw(st.sampled_from((MODEL, MODEL, MODEL, HIDDEN_MODEL))),
        model_version=draw(st.sampled_from(("", "1"))), id=draw(st.sampled_from(("", "req-1", "ü\x00"))),
    )
    datatype = draw(st.sampled_from(("FP32", "FP32", "FP64", "FP16", "INT32", "INT64", "UINT8", "UINT16", "INT8")))
    _put_input(draw, request, datatype, [n, 1, 8, 8], raw=draw(st.booleans()) or datatype == "FP16", clean=True)
    mc = draw(st.booleans())
    if mc:
        if draw(st.integers(0, 3)):
            request.parameters[MC_SAMPLES].int64_param = draw(st.integers(1, 20))
        if draw(st.booleans()):
            request.parameters[SEED].int64_param = draw(st.integers(INT64_MIN, INT64_MAX))
        if not request.parameters:
            request.parameters[SEED].uint64_param = draw(st.integers(0, INT64_MAX))
    for name in draw(known_outputs(Mode.MC if mc else Mode.DETERMINISTIC)):
        request.outputs.add(name=name)
    _OIP_FAULTS[family](draw, request)
    return case(MODEL_INFER, request, family)


def _put_input(draw: st.DrawFn, request: oip.ModelInferRequest, datatype: str, shape: list[int], raw: bool,
               clean: bool = False) -> None:
    """Replace the inputs by ``x`` of ``datatype`` and ``shape`` with matching data, raw or typed."""
    dtype, contents = OIP_DTYPES.get(datatype, (np.dtype(np.float32), "fp32_contents"))
    del request.inputs[:]
    del request.raw_input_contents[:]
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
    count = math.prod(shape) if all(0 <= d <= MAX_MESSAGE_BYTES for d in shape) and len(shape) <= 40 else -1
    if raw or contents is None or not 0 <= count <= MAX_MESSAGE_BYTES // 8:
        data = draw(tensor_bytes(dtype, shape)) if not clean else draw(arrays(dtype, count, clean=True)).tobytes()
        request.raw_input_contents.append(data)
    else:
        values = draw(arrays(dtype, count, clean=clean))
        getattr(tensor.contents, contents).extend(values.astype(_FIELD_DTYPES[contents]).tolist())


def _oip_tensor(draw: st.DrawFn, request: oip.ModelInferRequest) -> None:
    """Any datatype (unknown ones too), shape and byte length, raw or typed."""
    datatype = draw(st.one_of(st.sampled_from(tuple(OIP_DTYPES)), st.sampled_from(OTHER_DATATYPES)))
    _put_input(draw, request, datatype, draw(shapes()), raw=draw(st.booleans()))


def _oip_values(draw: st.DrawFn, request: oip.ModelInferRequest) -> None:
    """The model's shape in any datatype, with NaN, Inf, extremes or random bits, raw or typed."""
    shape = list(request.inputs[0].shape)
    _put_input(draw, request, draw(st.sampled_from(tuple(OIP_DTYPES))), shape, raw=draw(st.booleans()))


def _oip_contents(draw: st.DrawFn, request: oip.ModelInferRequest) -> None:
    """Typed contents in the wrong field, with the wrong count, beside raw bytes, or none at all."""
    tensor = request.inputs[0]
    how = draw(st.sampled_from(("wrong field", "count", "mixed", "two raw", "no data", "out of range")))
    count = math.prod(tensor.shape)
    field_name = draw(st.sampled_from(_CONTENTS_FIELDS))
    values = {"bool_contents": [True], "bytes_contents": [b"\x00\x01"]}.get(field_name, [1])
    if how == "wrong field":
        getattr(tensor.contents, field_name).extend(values * draw(st.sampled_from((1, count))))
    elif how == "count":
        del request.raw_input_contents[:]
        tensor.datatype = "FP32"
        tensor.contents.Clear()
        tensor.contents.fp32_contents.extend([1.0] * draw(st.sampled_from((0, 1, count - 1, count + 1, 2 * count))))
    elif how == "mixed":
        if not request.raw_input_contents:
            request.raw_input_contents.append(bytes(count * OIP_DTYPES[tensor.datatype][0].itemsize))
        getattr(tensor.contents, field_name).extend(values)
    elif how == "two raw":
        tensor.ClearField("contents")
        request.raw_input_contents[:] = [bytes(count * 4)] * draw(st.integers(2, 3))
        tensor.datatype = "FP32"
    elif how == "no data":
        tensor.ClearField("contents")
        del request.raw_input_contents[:]
    else:
        del request.raw_input_contents[:]
        tensor.ClearField("contents")
        tensor.datatype = draw(st.sampled_from(("UINT8", "INT8", "UINT16", "INT16")))
        field_name = OIP_DTYPES[tensor.datatype][1]
        beyond = (256, 70_000, 2**32 - 1) if field_name == "uint_contents" else (256, 70_000, -129, -40_000, 2**31 - 1)
        getattr(tensor.contents, field_name).extend([draw(st.sampled_from(beyond))] * count)


def _oip_inputs(draw: st.DrawFn, request: oip.ModelInferRequest) -> None:
    """No input, two inputs, or one with another name."""
    how = draw(st.sampled_from(("none", "two", "renamed")))
    if how == "none":
        del request.inputs[:]
    elif how == "two":
        request.inputs.add().CopyFrom(request.inputs[0])
        request.inputs[1].name = draw(st.sampled_from(("x", "y")))
        if request.raw_input_contents:
            request.raw_input_contents.append(request.raw_input_contents[0])
    else:
        request.inputs[0].name = draw(st.one_of(st.sampled_from(("input", "X", "x ", "", "x\x00")), names()))


def _oip_parameters(draw: st.DrawFn, request: oip.ModelInferRequest) -> None:
    """Unknown and misspelt parameters, standard ones, parameters on the input and outputs, and known
    ones of the wrong type or with no value."""
    for key in draw(st.lists(unknown_parameter_keys(), max_size=3)):
        request.parameters[key].int64_param = 50
    for key in draw(st.lists(st.sampled_from(sorted(STANDARD_PARAMETERS)), max_size=2)):
        _set_parameter(draw, request.parameters[key])
    for key in draw(st.lists(st.sampled_from(("binary_data_size", "binary_data", MC_SAMPLES, "shape")), max_size=2)):
        target = request.inputs[0] if draw(st.booleans()) or not request.outputs else request.outputs[0]
        _set_parameter(draw, target.parameters[key])
    if draw(st.booleans()):
        key = draw(st.sampled_from((MC_SAMPLES, SEED)))
        parameter = request.parameters[key]
        kind = draw(st.sampled_from(("bool_param", "string_param", "double_param", "empty")))
        if kind == "empty":
            parameter.Clear()
        else:
            setattr(parameter, kind, {"bool_param": True, "string_param": "50", "double_param": 50.0}[kind])


def _set_parameter(draw: st.DrawFn, parameter: oip.InferParameter) -> None:
    kind = draw(st.sampled_from(("bool_param", "int64_param", "uint64_param", "string_param", "double_param")))
    value = {"bool_param": True, "string_param": "1", "double_param": 1.5}.get(kind, draw(st.integers(0, 2**31)))
    setattr(parameter, kind, value)


def _oip_mc(draw: st.DrawFn, request: oip.ModelInferRequest) -> None:
    """Extreme mc_samples and seeds, as int64_param or uint64_param."""
    for key, values in ((MC_SAMPLES, mc_samples_values(MC_LIMIT)), (SEED, seeds())):
        value = draw(st.one_of(st.none(), values))
        if value is None:
            continue
        if value < 0 or (value <= INT64_MAX and draw(st.booleans())):
            request.parameters[key].int64_param = max(value, INT64_MIN)
        else:
            request.parameters[key].uint64_param = min(value, 2**64 - 1)


def _oip_outputs(draw: st.DrawFn, request: oip.ModelInferRequest) -> None:
    for name in draw(unknown_outputs()):
        request.outputs.add(name=name)


def _oip_names(draw: st.DrawFn, request: oip.ModelInferRequest) -> None:
    if draw(st.booleans()):
        request.model_name = draw(names())
    else:
        request.model_version = draw(names())


def _oip_oversized(draw: st.DrawFn, request: oip.ModelInferRequest) -> None:
    """Push the message past the server's limit: with rows, raw bytes, a model name, output names or the id."""
    extra = draw(st.integers(1, 64 * 1024))
    how = draw(st.sampled_from(("rows", "raw", "model", "outputs", "id")))
    if how == "rows":
        n = (MAX_MESSAGE_BYTES + extra) // 256 + 1
        _put_input(draw, request, "FP32", [n, 1, 8, 8], raw=True, clean=True)
    elif how == "raw":
        request.raw_input_contents.append(bytes(MAX_MESSAGE_BYTES + extra))
    elif how == "model":
        request.model_name = "m" * (MAX_MESSAGE_BYTES + extra)
    elif how == "outputs":
        for i in range((MAX_MESSAGE_BYTES + extra) // 15):
            request.outputs.add(name=f"output-{i:06d}")
    else:
        request.id = "i" * (MAX_MESSAGE_BYTES + extra)


def _oip_costly(draw: st.DrawFn, request: oip.ModelInferRequest) -> None:
    """Many rows × many samples, raw or typed, with or without ``samples``: near and past both limits."""
    n = draw(st.integers(1, MAX_ROWS))
    _put_input(draw, request, "FP32", [n, 1, 8, 8], raw=draw(st.booleans()), clean=True)
    request.parameters.clear()
    samples = draw(st.sampled_from((MC_LIMIT, MC_LIMIT, MC_LIMIT // 2, 200, 64)))
    request.parameters[MC_SAMPLES].int64_param = samples
    request.parameters[SEED].int64_param = draw(st.integers(0, 2**20))
    del request.outputs[:]
    if draw(st.booleans()):
        request.outputs.add(name=SAMPLES)


_OIP_FAULTS: dict[str, Callable[[st.DrawFn, oip.ModelInferRequest], None]] = {
    "valid": lambda draw, request: None, "tensor": _oip_tensor, "values": _oip_values, "contents": _oip_contents,
    "inputs": _oip_inputs, "parameters": _oip_parameters, "mc": _oip_mc, "outputs": _oip_outputs,
    "names": _oip_names, "oversized": _oip_oversized, "costly": _oip_costly,
}
OIP_FAMILIES = tuple(_OIP_FAULTS)


# --- strategies: metadata RPCs and raw bytes ----------------------------------------------------


def model_names() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from((MODEL, HIDDEN_MODEL, "")), names())


def versions() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(("", "1", "2", "01", "latest")), names())


def metadata_requests() -> st.SearchStrategy[RpcCase]:
    """Every metadata and health RPC; the ones that name a model get fuzzed names and versions."""
    named = st.sampled_from((GET_MODEL, MODEL_METADATA, MODEL_READY))
    return st.one_of(
        st.builds(lambda rpc, name, version: case(rpc, rpc.request(name=name, version=version), "lookup"),
                  named, model_names(), versions()),
        st.sampled_from((LIST_MODELS, SERVER_LIVE, SERVER_READY, SERVER_METADATA)).map(
            lambda rpc: case(rpc, rpc.request(), "health")),
    )


def _valid_message(rpc: Rpc) -> st.SearchStrategy[bytes]:
    if rpc is PREDICT:
        return predict_requests("valid").map(lambda c: c.payload)
    if rpc is MODEL_INFER:
        return infer_requests("valid").map(lambda c: c.payload)
    if rpc in (GET_MODEL, MODEL_METADATA, MODEL_READY):
        return st.builds(lambda name, version: rpc.request(name=name, version=version).SerializeToString(),
                         model_names(), versions())
    return st.just(rpc.request().SerializeToString())


@st.composite
def raw_messages(draw: st.DrawFn, rpc: Rpc) -> RpcCase:
    """Random bytes, or a valid request's bytes cut, flipped or padded, sent as ``rpc``'s request."""
    how = draw(st.sampled_from(("random", "random", "cut", "flipped", "inserted")))
    if how == "random":
        return RpcCase(rpc, draw(st.binary(max_size=300)), "random bytes")
    data = bytearray(draw(_valid_message(rpc)))
    spot = draw(st.integers(0, len(data)))
    if how == "cut":
        del data[spot:]
    elif how == "flipped" and data:
        data[min(spot, len(data) - 1)] = draw(st.integers(0, 255))
    else:
        data[spot:spot] = draw(st.binary(min_size=1, max_size=16))
    return RpcCase(rpc, bytes(data), f"{how} valid message")


# --- strategies: the embedded Predictor ---------------------------------------------------------

NUMPY_DTYPES = (np.float32, np.float64, np.float16, np.longdouble, np.int8, np.int16, np.int32, np.int64, np.uint8,
                np.uint16, np.uint32, np.uint64)


EMBEDDED_FAMILIES = ("valid", "values", "shape", "empty", "huge", "kind", "python")


@st.composite
def embedded_inputs(draw: st.DrawFn, how: str) -> Any:
    """Arrays of every numeric dtype and shape (empty, huge broadcast views, NaN/Inf) and non-arrays."""
    dtype = np.dtype(draw(st.sampled_from(NUMPY_DTYPES)))
    n = draw(rows())
    if how == "valid":
        one_example = n == 1 and draw(st.booleans())
        return draw(arrays(dtype, n * 64, clean=True)).reshape((1, 8, 8) if one_example else (n, 1, 8, 8))
    if how == "values":
        return draw(arrays(dtype, n * 64)).reshape(n, 1, 8, 8)
    if how == "shape":
        shape = draw(st.lists(st.integers(0, 9), max_size=6))
        return draw(arrays(dtype, math.prod(shape))).reshape(shape)
    if how == "empty":
        return np.empty(draw(st.sampled_from(((0, 1, 8, 8), (2, 0, 8, 8), (0,), (0, 64), (1, 8, 0)))), dtype)
    if how == "huge":
        return np.broadcast_to(np.ones((), dtype), (draw(st.sampled_from((2**36, 2**40, 2**44))), 1, 8, 8))
    if how == "kind":
        return draw(st.sampled_from((
            np.ones((1, 1, 8, 8), bool), np.ones((1, 1, 8, 8), complex), np.full((1, 1, 8, 8), "1"),
            np.array([[[[None] * 8] * 8]], dtype=object), np.ones((1, 1, 8, 8), "datetime64[s]"),
        )))
    return draw(st.sampled_from((
        [[[[1.0] * 8] * 8]], [[[1.0] * 8] * 8], [[[[1.0] * 8] * 8], [[[1.0] * 7] * 8]], "x", None, 3.0,
        [[[[2**70] * 8] * 8]], [[[["1"] * 8] * 8]], b"\x00" * 256, {"x": 1},
    )))


@st.composite
def embedded_calls(draw: st.DrawFn, family: str) -> EmbeddedCall:
    """Deterministic or MC calls with inputs of ``family``, with extreme or mistyped mc_samples and seeds."""
    x = draw(embedded_inputs(family))
    mistyped = st.one_of(st.sampled_from((1.0, math.nan, True, "5", np.float32(3.0), np.uint64(2**64 - 1))),
                         st.sampled_from((np.int64, np.uint64, np.int8)).map(lambda t: t(5)))
    if draw(st.booleans()):
        seed = draw(st.one_of(st.none(), st.none(), st.none(), seeds()))
        return EmbeddedCall(x, None, seed, draw(st.sampled_from((False, False, False, True))))
    samples = draw(st.one_of(st.integers(1, 20), mc_samples_values(MC_LIMIT), mistyped))
    seed = draw(st.one_of(st.none(), st.integers(INT64_MIN, INT64_MAX), seeds(), mistyped))
    return EmbeddedCall(x, samples, seed, draw(st.booleans()))
