"""The KServe v2 REST API beside gRPC: tritonclient.http, plain HTTP requests, the README's curl lines, every error
with its HTTP status, answers equal to gRPC's, and TLS + token on the REST port."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import hypothesis
import pytest
from hypothesis import strategies as st
import tritonclient.grpc as tc_grpc
import tritonclient.http as tc_http
from tritonclient.utils import InferenceServerException

from dropnet.core.errors import ConfigError, InvalidInputError, NotFoundError, ResourceExhaustedError, UnavailableError
from dropnet.server.dataplane import CUT_MESSAGE, DataPlane
from dropnet.server.grpc_errors import INTERNAL_MESSAGE, MAX_STATUS_MESSAGE_BYTES
from dropnet.server.predictor import Predictor
from dropnet.server.process import ServeProcess
from dropnet.server.rest import RestServer
from dropnet.server.rest_codecs import HEADER_LENGTH
from dropnet.server.status_codes import HTTP_STATUS, STATUSES
from tests.server.gating import GatedPredictor
from tests.server.grpc_harness import ServerThread, grpc_settings, models_dir_with
from tests.server.helpers import MODEL, assert_outputs_match, digits_rows
from tests.server.test_security import TOKEN, make_pki

REPO = Path(__file__).resolve().parents[2]
ROWS = digits_rows(3, seed=5)
TIMEOUT_S = 60.0
MC_OUTPUTS = ("probabilities", "predicted_class", "std", "predictive_entropy", "mutual_information")
DETERMINISTIC_OUTPUTS = ("probabilities", "predicted_class", "logits")


@pytest.fixture(scope="module")
def server(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    settings = grpc_settings(models_dir_with(tiny_package, tmp_path_factory.mktemp("rest")), http_port=0)
    with ServerThread(settings) as running:
        yield running


def _rest_address(server: ServerThread) -> str:
    return f"127.0.0.1:{server.server.http_port}"


@pytest.fixture(scope="module")
def http_client(server: ServerThread) -> Iterator[tc_http.InferenceServerClient]:
    client = tc_http.InferenceServerClient(_rest_address(server), network_timeout=TIMEOUT_S)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(server: ServerThread) -> Iterator[tc_grpc.InferenceServerClient]:
    client = tc_grpc.InferenceServerClient(server.target)
    yield client
    client.close()


# --- plain HTTP ------------------------------------------------------------------------------------------------


def request(
    url: str, body: bytes | dict[str, Any] | None = None, headers: dict[str, str] | None = None,
    method: str | None = None, context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP request (an error status is returned, not raised)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    sent = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(sent, timeout=TIMEOUT_S, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def call(server: ServerThread, path: str, body: bytes | dict[str, Any] | None = None, **kwargs: Any) -> tuple[int, Any]:
    """Status and JSON body of a request to the REST port of ``server``."""
    status, _, content = request(f"http://{_rest_address(server)}{path}", body, **kwargs)
    return status, json.loads(content)


def infer_body(x: np.ndarray = ROWS, **fields: Any) -> dict[str, Any]:
    """A JSON inference request for ``x`` (flat data), with extra top-level ``fields``."""
    return {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
            **fields}


def outputs_of(response: dict[str, Any]) -> dict[str, np.ndarray]:
    """The JSON outputs of an inference response as arrays of their datatype and shape."""
    dtypes = {"FP32": np.float32, "INT64": np.int64}
    return {
        tensor["name"]: np.array(tensor["data"], dtype=dtypes[tensor["datatype"]]).reshape(tensor["shape"])
        for tensor in response["outputs"]
    }


def http_input(x: np.ndarray, binary: bool = True) -> tc_http.InferInput:
    tensor = tc_http.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def grpc_input(x: np.ndarray) -> tc_grpc.InferInput:
    tensor = tc_grpc.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def result_arrays(result: Any, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {name: result.as_numpy(name) for name in names}


# --- health and metadata ------------------------------------------------------------------------------------


def test_health_and_readiness_with_tritonclient_http(http_client: tc_http.InferenceServerClient) -> None:
    assert http_client.is_server_live() and http_client.is_server_ready()
    assert http_client.is_model_ready(MODEL) and http_client.is_model_ready(MODEL, "1")
    assert not http_client.is_model_ready(MODEL, "2")
    assert not http_client.is_model_ready("no-such-model")


def test_health_routes_answer_json_with_200_or_400(server: ServerThread) -> None:
    assert call(server, "/v2/health/live") == (200, {"live": True})
    assert call(server, "/v2/health/ready") == (200, {"ready": True})
    assert call(server, f"/v2/models/{MODEL}/versions/1/ready") == (200, {"ready": True})
    assert call(server, "/v2/models/no-such-model/ready") == (400, {"ready": False})


def test_server_metadata(http_client: tc_http.InferenceServerClient) -> None:
    from dropnet import __version__

    metadata = http_client.get_server_metadata()
    assert metadata == {"name": "dropnet", "version": __version__, "extensions": ["binary_tensor_data"]}


def test_model_metadata_equals_grpc_with_integer_shapes(
    http_client: tc_http.InferenceServerClient, grpc_client: tc_grpc.InferenceServerClient
) -> None:
    expected = grpc_client.get_model_metadata(MODEL, as_json=True)
    for tensor in (*expected["inputs"], *expected["outputs"]):
        tensor["shape"] = [int(dim) for dim in tensor["shape"]]
    assert http_client.get_model_metadata(MODEL) == expected
    assert http_client.get_model_metadata(MODEL, "1") == expected
    assert expected["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]


# --- inference ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_deterministic_infer_with_tritonclient_http_matches_the_predictor(
    http_client: tc_http.InferenceServerClient, tiny_predictor: Predictor, binary: bool
) -> None:
    outputs = [tc_http.InferRequestedOutput(name, binary_data=binary) for name in DETERMINISTIC_OUTPUTS]
    result = http_client.infer(MODEL, [http_input(ROWS, binary)], outputs=outputs, request_id="r-1")
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (MODEL, "1", "r-1")
    assert "parameters" not in response  # no seed: deterministic
    assert all(("data" in tensor) != binary for tensor in response["outputs"])
    assert_outputs_match(result_arrays(result, DETERMINISTIC_OUTPUTS), tiny_predictor.predict(ROWS).outputs)


def test_mc_infer_with_parameters_equals_grpc_for_the_same_seed(
    http_client: tc_http.InferenceServerClient, grpc_client: tc_grpc.InferenceServerClient,
    tiny_predictor: Predictor,
) -> None:
    parameters = {"mc_samples": 30, "seed": 7}
    rest = http_client.infer(MODEL, [http_input(ROWS)], parameters=parameters)  # all outputs binary
    grpc = grpc_client.infer(MODEL, [grpc_input(ROWS)], parameters=parameters)
    assert rest.get_response()["parameters"] == {"seed": 7}
    assert grpc.get_response().parameters["seed"].int64_param == 7
    assert [tensor["name"] for tensor in rest.get_response()["outputs"]] == list(MC_OUTPUTS)
    rest_arrays, grpc_arrays = result_arrays(rest, MC_OUTPUTS), result_arrays(grpc, MC_OUTPUTS)
    assert_outputs_match(rest_arrays, grpc_arrays)
    expected = tiny_predictor.predict(ROWS, mc_samples=30, seed=7).outputs
    assert_outputs_match(rest_arrays, {name: expected[name] for name in MC_OUTPUTS})


def test_json_requests_equal_grpc_for_requested_outputs_and_seed_refusals(
    server: ServerThread, grpc_client: tc_grpc.InferenceServerClient
) -> None:
    names = ("samples", "mutual_information")
    body = infer_body(parameters={"mc_samples": 4, "seed": 11},
                      outputs=[{"name": name, "parameters": {"binary_data": False}} for name in names])
    status, response = call(server, f"/v2/models/{MODEL}/versions/1/infer", body)
    assert status == 200 and [tensor["name"] for tensor in response["outputs"]] == list(names)
    grpc = grpc_client.infer(MODEL, [grpc_input(ROWS)], parameters={"mc_samples": 4, "seed": 11},
                             outputs=[tc_grpc.InferRequestedOutput(name) for name in names])
    assert_outputs_match_exactly(outputs_of(response), result_arrays(grpc, names))
    assert outputs_of(response)["samples"].shape == (4, len(ROWS), 10)
    status, refused = call(server, f"/v2/models/{MODEL}/infer", infer_body(parameters={"mc_samples": 0}))
    with pytest.raises(InferenceServerException) as caught:
        grpc_client.infer(MODEL, [grpc_input(ROWS)], parameters={"mc_samples": 0})
    assert (status, refused["error"]) == (400, caught.value.message())


def assert_outputs_match_exactly(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(actual) == set(expected)
    for name, value in actual.items():
        assert value.dtype == expected[name].dtype, name
        np.testing.assert_array_equal(value, expected[name], err_msg=name)


def test_nested_data_and_a_flat_list_are_the_same_request(server: ServerThread) -> None:
    flat = infer_body()
    nested = {"inputs": [{**flat["inputs"][0], "data": ROWS.tolist()}]}
    assert call(server, f"/v2/models/{MODEL}/infer", flat) == call(server, f"/v2/models/{MODEL}/infer", nested)


def test_binary_input_with_json_outputs_by_hand(server: ServerThread, tiny_predictor: Predictor) -> None:
    head = json.dumps({"inputs": [{"name": "x", "shape": list(ROWS.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": ROWS.nbytes}}]}).encode()
    status, headers, content = request(f"http://{_rest_address(server)}/v2/models/{MODEL}/infer", head + ROWS.tobytes(),
                                       headers={HEADER_LENGTH: str(len(head))})
    assert status == 200 and HEADER_LENGTH not in headers and headers["Content-Type"].startswith("application/json")
    assert_outputs_match(outputs_of(json.loads(content)), tiny_predictor.predict(ROWS).outputs)


# --- errors --------------------------------------------------------------------------------------------------


def _input(**fields: Any) -> dict[str, Any]:
    return {"inputs": [{**infer_body()["inputs"][0], **fields}]}


BAD_REQUESTS: dict[str, tuple[bytes | dict[str, Any], dict[str, str], str]] = {
    "malformed JSON": (b'{"inputs": [', {}, "is not JSON"),
    "not UTF-8": (b'\xff\xfe', {}, "is not JSON"),
    "deeply nested JSON": (b"[" * 100_000 + b"]" * 100_000, {}, "too deeply"),
    "a JSON array": (b"[1, 2]", {}, "is a JSON array; expected an object"),
    "an unknown key": ({**infer_body(), "input": []}, {}, "unknown key(s) ['input']"),
    "an unknown parameter": (infer_body(parameters={"mc_sample": 5}), {}, "unknown parameter(s) ['mc_sample']"),
    "a parameter of the wrong kind": (infer_body(parameters={"mc_samples": "5"}), {}, "'mc_samples' is a string_param"),
    "a null parameter": (infer_body(parameters={"seed": None}), {}, "'seed' is set but holds no value"),
    "an unknown input parameter": (_input(parameters={"shared_memory_region": "r"}), {}, "'shared_memory_region'"),
    "an unknown output parameter": (infer_body(outputs=[{"name": "std", "parameters": {"classification": 2}}]), {},
                                    "'classification'"),
    "no inputs": ({"inputs": []}, {}, "has 0 inputs"),
    "a wrong input name": (_input(name="y"), {}, "input 'y' is unknown; expected 'x'"),
    "an unknown datatype": (_input(datatype="FP99"), {}, "datatype 'FP99'"),
    "a shape of strings": (_input(shape=["3"]), {}, "expected an array of integers"),
    "a negative dimension": (_input(shape=[-3, 1, 8, 8]), {}, "expected dimensions >= 0"),
    "too few values": (_input(data=[1.0, 2.0]), {}, "has 2 values; expected 192"),
    "ragged nesting": (_input(data=[[1.0]] * 3), {}, "data[0][0] is a JSON number; expected an array of 8 "),
    "nested data for shape []": (_input(shape=[], data=[[]]), {}, "has shape [] (one value) but nested arrays"),
    "strings as values": (_input(data=["1"] * 192), {}, "holds JSON string values; expected numbers"),
    "floats for an integer datatype": (_input(datatype="INT64", data=[1.5] * 192), {}, "expected integers"),
    "an integer out of its datatype's range": (_input(datatype="UINT8", data=[300] * 192), {}, "in 0..255"),
    "no data": ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}, {}, "has no data"),
    "not finite": (_input(data=[float("nan")] * 192), {}, "finite"),
    "the wrong input shape": (_input(shape=[3, 64], data=[1.0] * 192), {}, "shape"),
    "an unknown output": (infer_body(outputs=[{"name": "logit"}]), {}, "'logit'"),
    "an output of the other mode": (infer_body(outputs=[{"name": "std"}]), {}, "'std'"),
    "too many MC samples": (infer_body(parameters={"mc_samples": 10**6}), {}, "mc_samples"),
    "a bad header length": (infer_body(), {HEADER_LENGTH: "x"}, f"header {HEADER_LENGTH} is 'x'"),
    "binary bytes nobody declared": (json.dumps(infer_body()).encode() + b"\0" * 8, {HEADER_LENGTH: "0"}, ""),
}


@pytest.mark.parametrize("body, headers, message", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_requests_are_400_naming_what_was_expected(
    server: ServerThread, body: bytes | dict[str, Any], headers: dict[str, str], message: str
) -> None:
    if headers.get(HEADER_LENGTH) == "0":  # the JSON head's length: the zero stands for it
        headers = {HEADER_LENGTH: str(len(json.dumps(infer_body())))}
    status, response = call(server, f"/v2/models/{MODEL}/infer", body, headers=headers)
    assert status == 400, response
    assert message in response["error"] and len(response["error"]) <= MAX_STATUS_MESSAGE_BYTES


@pytest.mark.parametrize("parameters", [{"mc_sample": 5}, {"mc_samples": "5"}, {"seed": True}])
def test_parameters_are_refused_with_the_grpc_codecs_words(
    server: ServerThread, grpc_client: tc_grpc.InferenceServerClient, parameters: dict[str, Any]
) -> None:
    status, response = call(server, f"/v2/models/{MODEL}/infer", infer_body(parameters=parameters))
    with pytest.raises(InferenceServerException) as caught:
        grpc_client.infer(MODEL, [grpc_input(ROWS)], parameters=parameters)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert (status, response["error"]) == (400, caught.value.message())


@pytest.mark.parametrize("path", ["/v2/models/nope", f"/v2/models/{MODEL}/versions/9", "/v2/models/" + "m" * 8000])
def test_unknown_models_and_versions_are_404_with_a_bounded_message(server: ServerThread, path: str) -> None:
    for route, body in ((path, None), (path + "/infer", infer_body())):
        status, response = call(server, route, body)
        assert status == 404 and ("nope" in response["error"] or "'9'" in response["error"] or "8000" in response["error"])
        assert len(response["error"]) <= 300, route


def test_a_request_line_over_8_kib_is_400_from_the_http_layer_without_a_traceback(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    status, _, content = request(f"http://{_rest_address(server)}/v2/models/{'m' * 9000}")
    assert status == 400 and b"8190 bytes" in content
    assert not [record for record in caplog.records if record.exc_info or record.levelno >= logging.WARNING]


def test_routes_and_methods_the_api_lacks(server: ServerThread) -> None:
    status, response = call(server, "/v2/repository/index")
    assert status == 404 and "expected a KServe v2 path" in response["error"]
    status, response = call(server, f"/v2/models/{MODEL}/infer")
    assert status == 405 and "['POST']" in response["error"]


def test_tritonclient_http_sees_the_status_and_message(http_client: tc_http.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        http_client.infer("nope", [http_input(ROWS)])
    assert caught.value.status() == "404" and "nope" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        http_client.infer(MODEL, [http_input(ROWS)], parameters={"mc_sample": 3})
    assert caught.value.status() == "400" and "mc_sample" in caught.value.message()


ERRORS = [(status.error("raised"), status.http) for status in STATUSES
          if status.error is not None and issubclass(status.error, Exception)]


@pytest.mark.parametrize("error, status", [*ERRORS, (RuntimeError("/secret/path"), 500)],
                         ids=[*(type(error).__name__ for error, _ in ERRORS), "RuntimeError"])
def test_every_error_class_gets_its_http_status_from_the_one_table(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch, error: Exception, status: int
) -> None:
    def describe(name: str, version: str | None) -> None:
        raise error

    monkeypatch.setattr(server.server.dataplane, "describe", describe)
    answered, response = call(server, f"/v2/models/{MODEL}")
    expected = INTERNAL_MESSAGE if status == 500 else "raised"
    assert (answered, response) == (status, {"error": expected})


def test_the_table_maps_the_project_errors_beside_their_grpc_codes() -> None:
    assert HTTP_STATUS == {
        "OK": 200, "INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429,
        "CANCELLED": 499, "INTERNAL": 500, "UNAVAILABLE": 503,
    }
    assert {status.error: status.http for status in STATUSES if status.error is not None} == {
        InvalidInputError: 400, NotFoundError: 404, ResourceExhaustedError: 429, asyncio.CancelledError: 499,
        UnavailableError: 503,
    }


@pytest.fixture(scope="module")
def limited(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server with a 4 KiB body limit and a request cost limit that one MC row at T = 1000 passes."""
    settings = grpc_settings(models_dir_with(tiny_package, tmp_path_factory.mktemp("limited")), http_port=0,
                             max_message_bytes=4096, max_request_cost_bytes=64 * 1024)
    with ServerThread(settings) as running:
        yield running


def test_a_body_over_max_message_bytes_is_413_before_it_is_read(limited: ServerThread) -> None:
    big = json.dumps(infer_body(digits_rows(40, seed=1))).encode()
    status, response = call(limited, f"/v2/models/{MODEL}/infer", big)
    assert status == 413 and f"{len(big)} bytes" in response["error"] and "--max-message-bytes 4096" in response["error"]
    with socket.create_connection(("127.0.0.1", limited.server.http_port), timeout=TIMEOUT_S) as raw:
        raw.sendall(f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {2**40}\r\n\r\n".encode())
        assert raw.recv(64).startswith(b"HTTP/1.1 413")  # answered with 1 TiB announced and nothing sent
    chunks = (big[i:i + 1000] for i in range(0, len(big), 1000))
    status, _, content = request(f"http://{_rest_address(limited)}/v2/models/{MODEL}/infer", chunks)  # type: ignore[arg-type]
    assert status == 413 and "over 4096 bytes" in json.loads(content)["error"]


def test_a_request_over_the_cost_limit_is_429(limited: ServerThread) -> None:
    status, response = call(limited, f"/v2/models/{MODEL}/infer",
                            infer_body(digits_rows(1, seed=1), parameters={"mc_samples": 1000}))
    assert status == 429 and "the limit is 65536 bytes per request" in response["error"]


def test_refused_rest_requests_are_counted_with_their_code(server: ServerThread) -> None:
    metrics = server.server.dataplane.metrics
    before = _count(metrics, "INVALID_ARGUMENT")
    call(server, f"/v2/models/{MODEL}/infer", b"not json")
    assert _count(metrics, "INVALID_ARGUMENT") == before + 1


def _count(metrics: Any, code: str) -> float:
    """Requests counted with status ``code``, over every model and mode."""
    return sum(
        sample.value for family in metrics.registry.collect() for sample in family.samples
        if sample.name == "dropnet_requests_total" and sample.labels.get("code") == code
    )


# --- the process, the README ---------------------------------------------------------------------------------


def _readme_block() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### KServe v2 REST"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    return block.group(1).strip().splitlines()


def test_the_readme_commands_serve_rest_and_curl_gets_the_predictors_answers(
    tiny_package: Path, tiny_predictor: Predictor, tmp_path: Path
) -> None:
    serve, *lines = _readme_block()
    shutil.copytree(tiny_package, tmp_path / "models" / "digits" / "1")
    flags = shlex.split(serve)[2:]  # after ".venv/bin/dropnet serve"
    for flag in ("--port", "--http-port"):
        flags[flags.index(flag) + 1] = "0"
    with ServeProcess([*flags, "--device", "cpu"], cwd=tmp_path, log_path=tmp_path / "server.log") as process:
        url = process.wait_rest()
        process.wait_serving()
        outputs = []
        for line in lines:
            words = shlex.split(line.replace("localhost:8000", url.removeprefix("http://")))
            if words[0] == "curl":
                outputs.append(json.loads(subprocess.run(words, cwd=tmp_path, capture_output=True, check=True,
                                                         timeout=TIMEOUT_S).stdout))
            else:  # the request file, written by the Python one-liner
                assert words[0] == ".venv/bin/python" and words[-2] == ">"
                written = subprocess.run([sys.executable, *words[1:-2]], capture_output=True, check=True, text=True)
                (tmp_path / words[-1]).write_text(written.stdout)
    assert url.startswith("http://127.0.0.1:")
    ready, metadata, answer = outputs
    assert ready == {"ready": True}
    assert (metadata["name"], metadata["versions"]) == ("digits", ["1"])
    assert (answer["model_name"], answer["model_version"], answer["parameters"]) == ("digits", "1", {"seed": 7})
    expected = tiny_predictor.predict(np.full((1, 1, 8, 8), 8.0, np.float32), mc_samples=100, seed=7).outputs
    assert_outputs_match(outputs_of(answer), {name: expected[name] for name in MC_OUTPUTS})


def test_rest_is_off_unless_asked(server: ServerThread, tiny_package: Path, tmp_path: Path) -> None:
    with ServerThread(grpc_settings(models_dir_with(tiny_package, tmp_path))) as plain:
        assert plain.server.http_port is None
    assert server.server.http_port not in (None, server.port)


def test_a_taken_rest_port_is_a_config_error_and_leaves_nothing_running(tiny_package: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = grpc_settings(models_dir_with(tiny_package, tmp_path), http_port=taken.getsockname()[1])
        thread = ServerThread(settings)
        with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1:\d+ for REST"):
            thread.__enter__()
    assert not thread.server.dataplane.live() and thread.server.port is not None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", thread.server.port), timeout=5).close()


def test_a_public_rest_host_without_protection_needs_insecure(tiny_package: Path, tmp_path: Path) -> None:
    settings = grpc_settings(models_dir_with(tiny_package, tmp_path), host="0.0.0.0", http_port=0)
    rest = RestServer(settings, DataPlane(settings))
    with pytest.raises(ConfigError, match="--insecure"):  # as the gRPC port (tests/server/test_security.py)
        asyncio.run(rest.start())


# --- TLS and the token ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("rest-pki"))


@pytest.fixture(scope="module")
def secure(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[ServerThread]:
    """Mutual TLS (client certificates of ``ca``) and the bearer token, on both ports."""
    settings = grpc_settings(models_dir_with(tiny_package, tmp_path_factory.mktemp("secure")), http_port=0,
                             tls_cert=pki / "server.pem", tls_key=pki / "server.key", tls_client_ca=pki / "ca.pem",
                             token_file=pki / "token")
    with ServerThread(settings) as running:
        yield running


def _context(pki: Path, client: str | None = "client") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki / "ca.pem")
    if client is not None:
        context.load_cert_chain(pki / f"{client}.pem", pki / f"{client}.key")
    return context


def _secure_call(server: ServerThread, pki: Path, path: str, body: dict[str, Any] | None = None,
                 token: str | None = TOKEN) -> tuple[int, dict[str, str], Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    status, response_headers, content = request(f"https://127.0.0.1:{server.server.http_port}{path}", body,
                                                headers=headers, context=_context(pki))
    return status, response_headers, json.loads(content)


def test_tls_rest_with_the_token_answers_as_the_predictor(
    secure: ServerThread, pki: Path, tiny_predictor: Predictor
) -> None:
    status, _, response = _secure_call(secure, pki, f"/v2/models/{MODEL}/infer", infer_body())
    assert status == 200
    assert_outputs_match(outputs_of(response), tiny_predictor.predict(ROWS).outputs)


@pytest.mark.parametrize("path", ["/v2", f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/ready",
                                  f"/v2/models/{MODEL}/infer", "/v2/no/such/route"])
def test_every_route_but_health_needs_the_token(secure: ServerThread, pki: Path, path: str) -> None:
    body = infer_body() if path.endswith("/infer") else None
    for token, word in ((None, "needs a bearer token"), ("wrong", "not valid")):
        status, headers, response = _secure_call(secure, pki, path, body, token=token)
        assert (status, headers.get("WWW-Authenticate")) == (401, "Bearer") and word in response["error"]
        assert "wrong" not in response["error"]  # what the client sent is never quoted
    for health in ("/v2/health/live", "/v2/health/ready"):
        assert _secure_call(secure, pki, health, token=None)[::2] == (200, {health.rpartition("/")[2]: True})


def test_mutual_tls_rest_refuses_clients_without_a_certificate_of_its_ca(secure: ServerThread, pki: Path) -> None:
    url = f"https://127.0.0.1:{secure.server.http_port}/v2/health/live"
    for client in (None, "other-client"):
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(url, timeout=TIMEOUT_S, context=_context(pki, client)).close()
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):  # plain HTTP to the TLS port
        urllib.request.urlopen(url.replace("https", "http"), timeout=TIMEOUT_S).close()


# --- shutdown ------------------------------------------------------------------------------------------------


def test_a_rest_request_still_running_at_the_deadline_ends_503(models_dir: Path, gated: list[GatedPredictor]) -> None:
    settings = grpc_settings(models_dir, http_port=0, batching=False, inference_workers=1)
    with ServerThread(settings) as server:
        (predictor,) = gated
        predictor.entered.clear()
        predictor.gate.clear()
        answers: list[tuple[int, Any]] = []
        try:
            caller = threading.Thread(target=lambda: answers.append(call(server, f"/v2/models/{MODEL}/infer",
                                                                          infer_body())))
            caller.start()
            assert predictor.entered.wait(timeout=60)
            assert not server.run(server.server.stop(grace=0.2))  # returned with the run still held in the gate
            caller.join(timeout=60)
        finally:
            predictor.gate.set()
    assert answers == [(503, {"error": CUT_MESSAGE})]


# --- arbitrary bodies ----------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
MUTATED_REQUESTS = st.fixed_dictionaries({
    "inputs": st.lists(st.fixed_dictionaries({
        "name": st.sampled_from(["x", "y"]),
        "shape": st.lists(st.integers(-2, 4), max_size=5),
        "datatype": st.sampled_from(["FP32", "INT64", "UINT8", "FP16", "BYTES"]),
        "data": JSON_VALUES,
    }), max_size=2),
    "parameters": st.dictionaries(st.sampled_from(["mc_samples", "seed", "binary_data_output", "x"]), JSON_VALUES,
                                  max_size=2),
})


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(body=JSON_VALUES | MUTATED_REQUESTS)
def test_any_json_body_is_answered_with_a_client_code_and_no_traceback(server: ServerThread, body: Any) -> None:
    status, _, content = request(f"http://{_rest_address(server)}/v2/models/{MODEL}/infer",
                                 json.dumps(body).encode())
    assert status in (200, 400), content
    assert ("error" in json.loads(content)) == (status != 200)
