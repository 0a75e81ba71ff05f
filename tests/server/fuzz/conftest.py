"""The fuzz suite's server, reference, invariants, profiles and case count.

Each test module gets one real server on 127.0.0.1 port 0 (the tiny package served as ``tiny``
and as ``zz-hidden-model``, with small limits) and the embedded Predictor of the same package as
the reference. :class:`Invariants` sends one case and checks, in this order:

1. the call returns within :data:`DEADLINE_S` and the server thread is still alive;
2. the status code is one the contract allows (never INTERNAL or UNKNOWN), an OK answer equals
   the Predictor's (bit for bit, MC for the same seed), a NOT_FOUND names no model the client did
   not name, and a response too large is refused by dropnet before the work, not by grpc after it;
3. the status message is at most 4 KB;
4. (checked last, after the probe) no WARNING or ERROR record with a traceback was logged;
5. the next valid request (one of four probes, in turn: both APIs, deterministic and MC with a
   seed) is answered exactly as the Predictor answers it.

Each invariant fails with its own exception class (for invariant 2, one per status code got), so
hypothesis reports and shrinks each kind of failure separately. The number of cases checked is
printed at the end of the session ("fuzz cases run: N").
"""

from __future__ import annotations

import logging
import math
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import settings

from dropnet.core.outputs import SAMPLES, Mode, Task, output_names
from dropnet.protos.dropnet.v1 import predictor_pb2 as v1
from dropnet.protos.inference import grpc_service_pb2 as oip
from dropnet.server.codecs import OIP_DTYPES
from dropnet.server.predictor import Prediction, Predictor
from dropnet.server.status_codes import INTERNAL, status_code_name
from dropnet.server.tensors import decode_tensor
from tests.server.fuzz.strategies import (
    COST_ROWS_AT_LIMIT,
    GET_MODEL,
    HIDDEN_MODEL,
    LIST_MODELS,
    LONG_PROFILE,
    MAX_MESSAGE_BYTES,
    MAX_ROWS,
    MAX_STATUS_BYTES,
    MC_LIMIT,
    MODEL,
    MODEL_INFER,
    MODEL_METADATA,
    MODEL_READY,
    OK,
    PREDICT,
    SAMPLE_BYTES_BOUNDS,
    SERVER_LIVE,
    SERVER_METADATA,
    SERVER_READY,
    Answer,
    Contract,
    EmbeddedCall,
    Expectation,
    Rpc,
    RpcCase,
    case,
    expect,
    expect_embedded,
)
from tests.server.grpc_harness import ServerThread, grpc_settings, models_dir_with
from tests.server.helpers import digits_rows

DEADLINE_S = 10.0
"""Longest any call may take before the server counts as hung."""
GRPC_SENT_TOO_LARGE = "Sent message larger than max"
"""grpc's own message when a response passes the limit: the server did the work before refusing."""

settings.register_profile(LONG_PROFILE, deadline=None, derandomize=False, database=None, print_blob=True)

CASES: Counter[str] = Counter()
"""Cases checked, by family of the test (printed at the end of the session)."""
CODES: Counter[str] = Counter()
"""The outcomes those cases got, by status code (printed too: the suite must reach every code)."""


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if CASES:
        families = ", ".join(f"{name} {count}" for name, count in sorted(CASES.items()))
        codes = ", ".join(f"{code} {count}" for code, count in CODES.most_common())
        terminalreporter.write_line(f"fuzz cases run: {sum(CASES.values())} ({families}); outcomes: {codes}")


class InvariantViolation(AssertionError):
    """A fuzz case broke one of the invariants (the subclass says which)."""


class Invariant1(InvariantViolation):
    """The server hung or died."""


class Invariant3(InvariantViolation):
    """A status message over 4 KB."""


class Invariant4(InvariantViolation):
    """A traceback was logged for a client's mistake."""


class Invariant5(InvariantViolation):
    """The next valid request was not answered correctly."""


_INVARIANT2: dict[str, type[InvariantViolation]] = {}


def invariant2(what: str) -> type[InvariantViolation]:
    """The class of an invariant-2 failure of one kind (a status code got, or a wrong answer), so each shrinks alone."""
    if what not in _INVARIANT2:
        _INVARIANT2[what] = type(f"Invariant2_{what}", (InvariantViolation,), {"__doc__": f"Invariant 2: {what}."})
    return _INVARIANT2[what]


class TracebackLog(logging.Handler):
    """Keeps the WARNING and ERROR records of every logger (the server runs in this process)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def tracebacks(self) -> list[str]:
        """'logger: message' of each kept record that carries a traceback."""
        return [
            f"{record.name}: {record.getMessage()[:300]}" for record in self.records
            if record.exc_info or record.exc_text or "Traceback" in record.getMessage()
        ]

    def clear(self) -> None:
        self.records = []


@pytest.fixture(scope="module")
def server_log() -> Iterator[TracebackLog]:
    handler = TracebackLog()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


@pytest.fixture(scope="module")
def contract(tiny_predictor: Predictor) -> Contract:
    """The served models and the limits, the cost limit set from the package's recorded bytes per sample."""
    manifest = tiny_predictor.manifest
    recorded = getattr(manifest.mc, "sample_bytes", None)
    bounds = (recorded, recorded) if recorded else SAMPLE_BYTES_BOUNDS
    return Contract(
        models={MODEL: ("1",), HIDDEN_MODEL: ("1",)}, input_shape=tuple(manifest.input.shape),
        classes=len(manifest.classes), mc_limit=min(MC_LIMIT, tiny_predictor.max_mc_samples), sample_bytes=bounds,
        max_cost_bytes=COST_ROWS_AT_LIMIT * MC_LIMIT * bounds[1],
    )


@pytest.fixture(scope="module")
def fuzz_server(
    tiny_package: Path, contract: Contract, tmp_path_factory: pytest.TempPathFactory, server_log: TracebackLog
) -> Iterator[ServerThread]:
    models = models_dir_with(tiny_package, tmp_path_factory.mktemp("fuzz"))
    shutil.copytree(tiny_package, models / HIDDEN_MODEL / "1")
    server_settings = grpc_settings(
        models, max_rows_per_request=MAX_ROWS, max_mc_samples=MC_LIMIT, max_message_bytes=MAX_MESSAGE_BYTES,
        max_request_cost_bytes=contract.max_cost_bytes,
    )
    with ServerThread(server_settings) as running:
        yield running


@pytest.fixture(scope="module")
def invariants(
    fuzz_server: ServerThread, tiny_predictor: Predictor, contract: Contract, server_log: TracebackLog
) -> Iterator["Invariants"]:
    options = {"grpc.max_send_message_length": -1, "grpc.max_receive_message_length": 64 * 1024 * 1024}
    with fuzz_server.channel(**options) as channel:
        yield Invariants(fuzz_server, channel, tiny_predictor, contract, server_log)


@pytest.fixture(scope="module")
def embedded(tiny_predictor: Predictor, contract: Contract, server_log: TracebackLog) -> "EmbeddedInvariants":
    return EmbeddedInvariants(tiny_predictor, contract, server_log)


def _probes() -> tuple[RpcCase, ...]:
    """Four valid requests, both APIs, deterministic and MC with a seed, raw and typed."""
    x = digits_rows(3, seed=11)
    raw = v1.Tensor(shape=x.shape, dtype=v1.DATA_TYPE_FLOAT32, data=x.tobytes())
    mc_infer = oip.ModelInferRequest(model_name=MODEL, id="probe")
    mc_infer.inputs.add(name="x", datatype="FP32", shape=x.shape).contents.fp32_contents.extend(x.ravel().tolist())
    mc_infer.parameters["mc_samples"].int64_param = 3
    mc_infer.parameters["seed"].int64_param = -7
    det_infer = oip.ModelInferRequest(model_name=MODEL, raw_input_contents=[x.tobytes()])
    det_infer.inputs.add(name="x", datatype="FP32", shape=x.shape)
    return (
        case(PREDICT, v1.PredictRequest(model=MODEL, input=raw), "probe"),
        case(MODEL_INFER, mc_infer, "probe"),
        case(MODEL_INFER, det_infer, "probe"),
        case(PREDICT, v1.PredictRequest(model=MODEL, input=raw, mc_samples=5, seed=12345,
                                        outputs=["probabilities", "std", SAMPLES]), "probe"),
    )


def _mismatch(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> str | None:
    """What differs between two answers (names, shapes, dtypes, bits), None when they are identical."""
    if list(got) != list(expected):
        return f"outputs {list(got)}; expected {list(expected)}"
    for name, value in expected.items():
        mine = got[name]
        if mine.shape != value.shape or mine.dtype != value.dtype:
            return f"{name} is {mine.dtype}{list(mine.shape)}; expected {value.dtype}{list(value.shape)}"
        if mine.tobytes() != value.tobytes():
            where = np.flatnonzero(mine.ravel() != value.ravel())[:3]
            shown = f"{mine.ravel()[where].tolist()} vs {value.ravel()[where].tolist()}"
            return f"{name} differs at {where.tolist()}: {shown}"
    return None


def reference(predictor: Predictor, answer: Answer, seed: int | None) -> dict[str, np.ndarray]:
    """The Predictor's answer to ``answer`` (MC with ``seed``), the outputs in the answer's order."""
    if answer.mc_samples is None:
        prediction = predictor.predict(answer.x)
    else:
        prediction = predictor.predict(answer.x, answer.mc_samples, seed, return_samples=SAMPLES in answer.outputs)
    return {name: prediction.outputs[name] for name in answer.outputs}


def _client_strings(message: Any) -> list[str]:
    """Every string a request carries (names, versions, output names, parameter keys, ...)."""
    found: list[str] = []
    for descriptor, value in message.ListFields():
        items = value.items() if hasattr(value, "items") else (value if descriptor.is_repeated else [value])
        for item in items:
            for part in item if isinstance(item, tuple) else (item,):
                if isinstance(part, str):
                    found.append(part)
                elif hasattr(part, "ListFields"):
                    found.extend(_client_strings(part))
    return found


class Invariants:
    """Sends fuzz cases to a running server and checks the five invariants on each."""

    def __init__(
        self, server: ServerThread, channel: grpc.Channel, predictor: Predictor, contract: Contract, log: TracebackLog
    ) -> None:
        self._server = server
        self._channel = channel
        self._predictor = predictor
        self._contract = contract
        self._log = log
        self._calls: dict[str, Any] = {}
        self._probes = _probes()
        self._next_probe = 0
        for probe in self._probes:
            assert expect(contract, probe.rpc, probe.payload).codes == {OK}, probe

    def check(self, fuzz_case: RpcCase, family: str) -> None:
        """Send ``fuzz_case``, then a probe; raise the :class:`InvariantViolation` of the first invariant broken."""
        CASES[family] += 1
        self._log.clear()
        expectation = expect(self._contract, fuzz_case.rpc, fuzz_case.payload)
        code, details, response = self._call(fuzz_case)
        CODES[code] += 1
        self._check_alive(code, "the case")
        shown = details if len(details) <= 300 else f"{details[:300]}...({len(details)} chars)"
        if code not in expectation.codes:
            raise invariant2(code)(
                f"got {code} ({shown!r}); the contract allows {sorted(expectation.codes)}: {list(expectation.reasons)}"
            )
        if len(details.encode()) > MAX_STATUS_BYTES:
            raise Invariant3(f"{code} with a {len(details.encode())}-byte status message: {shown!r}")
        if code == OK:
            self._check_answer(fuzz_case, expectation, response)
        else:
            self._check_refusal(fuzz_case, code, details)
        self._probe()
        tracebacks = self._log.tracebacks()
        if tracebacks:
            raise Invariant4(f"{code} for {list(expectation.reasons)}, and logged with a traceback: {tracebacks}")

    def _call(self, fuzz_case: RpcCase) -> tuple[str, str, Any]:
        rpc = fuzz_case.rpc
        if rpc.path not in self._calls:
            self._calls[rpc.path] = self._channel.unary_unary(
                rpc.path, request_serializer=None, response_deserializer=rpc.response.FromString
            )
        try:
            return OK, "", self._calls[rpc.path](fuzz_case.payload, timeout=DEADLINE_S)
        except grpc.RpcError as error:
            return error.code().name, error.details() or "", None

    def _check_alive(self, code: str, what: str) -> None:
        if code == grpc.StatusCode.DEADLINE_EXCEEDED.name:
            raise Invariant1(f"no answer to {what} within {DEADLINE_S} s")
        if not self._server.alive:
            raise Invariant1(f"the server thread died after {what}")

    def _probe(self) -> None:
        probe = self._probes[self._next_probe % len(self._probes)]
        self._next_probe += 1
        code, details, response = self._call(probe)
        self._check_alive(code, "the probe")
        if code != OK:
            raise Invariant5(f"the next valid request ({probe}) got {code}: {details[:300]!r}")
        try:
            self._check_answer(probe, expect(self._contract, probe.rpc, probe.payload), response)
        except InvariantViolation as wrong:
            raise Invariant5(f"the next valid request was answered wrongly: {wrong}") from None

    def _check_refusal(self, fuzz_case: RpcCase, code: str, details: str) -> None:
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED.name and GRPC_SENT_TOO_LARGE in details:
            raise invariant2("response_refused_after_the_work")(
                f"the response was refused by grpc after the work ({details!r}); expected dropnet to refuse it first"
            )
        if code == grpc.StatusCode.NOT_FOUND.name:
            named = _client_strings(fuzz_case.rpc.request.FromString(fuzz_case.payload))
            listed = [m for m in self._contract.models if m in details and not any(m in text for text in named)]
            if listed:
                raise invariant2("NOT_FOUND_lists_models")(
                    f"NOT_FOUND names models {listed} the client did not: {details[:500]!r}"
                )

    def _check_answer(self, fuzz_case: RpcCase, expectation: Expectation, response: Any) -> None:
        request = fuzz_case.rpc.request.FromString(fuzz_case.payload)
        wrong = invariant2("wrong_answer")
        if fuzz_case.rpc in (PREDICT, MODEL_INFER):
            answer = expectation.answer
            assert answer is not None
            got, identity, seed = (_v1_answer if fuzz_case.rpc is PREDICT else _oip_answer)(response, answer)
            if identity != (answer.model, "1", answer.request_id):
                raise wrong(f"answered as {identity}; expected {(answer.model, '1', answer.request_id)}")
            if (seed is None) != (answer.mc_samples is None) or (answer.seed is not None and seed != answer.seed):
                raise wrong(f"seed {seed}; expected {answer.seed if answer.mc_samples else None} for this request")
            problem = _mismatch(got, reference(self._predictor, answer, seed))
            if problem:
                raise wrong(f"{problem} (the embedded Predictor's answer differs)")
            return
        problem = self._metadata_problem(fuzz_case.rpc, request, response)
        if problem:
            raise wrong(problem)

    def _metadata_problem(self, rpc: Rpc, request: Any, response: Any) -> str | None:
        models = self._contract.models
        if rpc is GET_MODEL and (response.name, response.version, response.mc.max_samples) != (
            request.name, request.version or "1", self._contract.mc_limit
        ):
            return f"GetModel answered {response.name!r} {response.version!r} max_samples {response.mc.max_samples}"
        if rpc is MODEL_METADATA and (response.name, list(response.versions)) != (request.name, ["1"]):
            return f"ModelMetadata answered {response.name!r} {list(response.versions)}"
        if rpc is MODEL_READY:
            ready = request.name in models and (not request.version or request.version in models[request.name])
            return None if response.ready == ready else f"ModelReady said {response.ready}; expected {ready}"
        if rpc is LIST_MODELS and sorted(m.name for m in response.models) != sorted(models):
            return f"ListModels listed {[m.name for m in response.models]}"
        if rpc in (SERVER_LIVE, SERVER_READY) and not (response.live if rpc is SERVER_LIVE else response.ready):
            return f"{rpc.path} said no"
        if rpc is SERVER_METADATA and response.name != "dropnet":
            return f"ServerMetadata named {response.name!r}"
        return None


Received = tuple[dict[str, np.ndarray], tuple[str, str, str], "int | None"]
"""The outputs of a response, who answered (model, version, request id) and the seed it reports."""


def _v1_answer(response: v1.PredictResponse, answer: Answer) -> Received:
    """A PredictResponse's outputs (in the answer's order, then any extra), who answered, and its seed."""
    mode = Mode.DETERMINISTIC if answer.mc_samples is None else Mode.MC
    present = [name for name in output_names(Task.CLASSIFICATION, mode) if response.HasField(name)]
    extra = [f.name for f, _ in response.ListFields() if f.name not in (*present, "model", "version", "seed")]
    order = [name for name in answer.outputs if name in present] + [n for n in present if n not in answer.outputs]
    got = {name: decode_tensor(getattr(response, name), name) for name in order + extra}
    return got, (response.model, response.version, ""), response.seed if response.HasField("seed") else None


def _oip_answer(response: oip.ModelInferResponse, answer: Answer) -> Received:
    """A ModelInferResponse's outputs in its order (raw or typed, as the answer expects), who answered, its seed."""
    got: dict[str, np.ndarray] = {}
    raw = list(response.raw_output_contents)
    for index, tensor in enumerate(response.outputs):
        dtype, contents = OIP_DTYPES.get(tensor.datatype, (np.dtype(np.uint8), None))
        if answer.raw:
            data = raw[index] if index < len(raw) else b""
            count = len(data) // dtype.itemsize
            value = np.frombuffer(data, dtype)[: count]
        else:
            value = np.array(getattr(tensor.contents, contents) if contents else [], dtype=dtype)
        shape = tuple(tensor.shape)
        got[tensor.name] = value.reshape(shape) if math.prod(shape) == value.size else value
    seed = response.parameters["seed"].int64_param if "seed" in response.parameters else None
    return got, (response.model_name, response.model_version, response.id), seed


class EmbeddedInvariants:
    """Calls ``Predictor.predict`` with fuzz cases and checks the invariants that apply in-process."""

    def __init__(self, predictor: Predictor, contract: Contract, log: TracebackLog) -> None:
        self._predictor = predictor
        self._contract = contract
        self._log = log
        self._probe_x = digits_rows(3, seed=12)
        self._probe_answers = self._probe_predictions()

    def check(self, call: EmbeddedCall) -> None:
        CASES["embedded"] += 1
        self._log.clear()
        expectation = expect_embedded(self._contract, call)
        prediction: Prediction | None = None
        message = ""
        try:
            prediction = self._predictor.predict(call.x, call.mc_samples, call.seed, call.return_samples)
            code = OK
        except Exception as error:  # the contract's question: which dropnet error, if any
            code, message = status_code_name(error), str(error)
            if code == INTERNAL:
                code = f"{INTERNAL}_{type(error).__name__}"
        CODES[code] += 1
        if code not in expectation.codes:
            raise invariant2(f"embedded_{code}")(
                f"got {code} ({message[:300]!r}); the contract allows {sorted(expectation.codes)}: "
                f"{list(expectation.reasons)}"
            )
        if len(message.encode()) > MAX_STATUS_BYTES:
            raise Invariant3(f"a {len(message.encode())}-byte error message: {message[:300]!r}")
        if prediction is not None:
            self._check_prediction(call, expectation, prediction)
        if self._probe_predictions() != self._probe_answers:
            raise Invariant5("the next valid call was answered differently than before this case")
        tracebacks = self._log.tracebacks()
        if tracebacks:
            raise Invariant4(f"{code}, and logged with a traceback: {tracebacks}")

    def _probe_predictions(self) -> list[bytes]:
        deterministic = self._predictor.predict(self._probe_x)
        mc = self._predictor.predict(self._probe_x, 4, seed=99, return_samples=True)
        return [array.tobytes() for p in (deterministic, mc) for array in p.outputs.values()]

    def _check_prediction(self, call: EmbeddedCall, expectation: Expectation, prediction: Prediction) -> None:
        """The outputs asked for, of the right shapes, self-consistent, and the same when asked again."""
        answer = expectation.answer
        assert answer is not None
        wrong = invariant2("embedded_wrong_answer")
        x = np.asarray(call.x)
        rows = 1 if x.shape == self._contract.input_shape else x.shape[0]
        outputs = prediction.outputs
        if tuple(outputs) != answer.outputs:
            raise wrong(f"outputs {list(outputs)}; expected {list(answer.outputs)}")
        probabilities = outputs["probabilities"]
        if probabilities.shape != (rows, self._contract.classes) or probabilities.dtype != np.float32:
            raise wrong(f"probabilities {probabilities.dtype}{list(probabilities.shape)} for {rows} rows")
        if not np.array_equal(outputs["predicted_class"], probabilities.argmax(axis=1)):
            raise wrong("predicted_class is not the argmax of probabilities")
        with np.errstate(over="ignore", invalid="ignore"):
            moderate = bool(np.all(np.abs(x.astype(np.float64)) <= 1e4))
        if moderate and not (
            np.all(probabilities >= 0) and np.allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-5)
        ):
            raise wrong(f"probabilities of moderate inputs do not sum to 1: {probabilities.sum(axis=1).tolist()}")
        if call.mc_samples is not None:
            self._check_mc(call, prediction, rows, moderate)
        again = self._predictor.predict(call.x, call.mc_samples, prediction.seed if call.mc_samples else None,
                                        call.return_samples)
        problem = _mismatch(dict(again.outputs), dict(outputs))
        if problem:
            raise wrong(f"asked again (seed {prediction.seed}): {problem}")

    def _check_mc(self, call: EmbeddedCall, prediction: Prediction, rows: int, moderate: bool) -> None:
        wrong = invariant2("embedded_wrong_answer")
        outputs = prediction.outputs
        if call.seed is not None and prediction.seed != int(call.seed):
            raise wrong(f"seed {prediction.seed}; expected {call.seed}")
        entropy, information = outputs["predictive_entropy"], outputs["mutual_information"]
        if not moderate:
            return
        most = math.log(self._contract.classes) + 1e-5
        if not (np.all(outputs["std"] >= 0) and np.all((entropy >= 0) & (entropy <= most))
                and np.all((information >= -1e-5) & (information <= entropy + 1e-5))):
            raise wrong("std, predictive_entropy or mutual_information out of their ranges")
        if call.return_samples:
            samples = outputs[SAMPLES]
            if samples.shape != (int(call.mc_samples), rows, self._contract.classes):
                raise wrong(f"samples of shape {list(samples.shape)}")
            if not np.allclose(samples.mean(axis=0), outputs["probabilities"], rtol=1e-5, atol=1e-6):
                raise wrong("probabilities are not the mean of the samples")
