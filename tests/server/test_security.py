"""TLS, mutual TLS, bearer tokens, the --insecure rule, hidden provenance and quiet NOT_FOUND, on real servers.

Certificates are made at test time (``cryptography``): a CA, a server certificate for
localhost/127.0.0.1 and a client certificate it signed, and a second, unrelated CA with a client
certificate of its own.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from dropnet.cli import main
from dropnet.core.errors import ConfigError
from dropnet.protos.dropnet.v1 import predictor_pb2 as v1
from dropnet.protos.dropnet.v1 import predictor_pb2_grpc as v1_grpc
from dropnet.protos.inference import grpc_service_pb2 as oip
from dropnet.protos.inference import grpc_service_pb2_grpc as oip_grpc
from dropnet.server.client import DropnetClient
from dropnet.server.predictor import Predictor
from dropnet.server.process import ServeProcess
from dropnet.server.security import is_loopback, public_manifest, read_server_tls, read_token
from dropnet.server.settings import ServerSettings
from dropnet.server.tensors import decode_tensor, encode_tensor, little_endian_bytes
from tests.server.grpc_harness import ServerThread, grpc_settings, models_dir_with
from tests.server.helpers import MODEL, assert_outputs_match, digits_rows

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "security.md"
TOKEN = "0123456789abcdef0123456789abcdef"
ROWS = digits_rows(3, seed=11)
CALL_TIMEOUT_S = 30.0
"""Deadline of a call that must fail (it fails at the handshake; the deadline only guards against a hang)."""


# --- certificates made at test time -----------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


Issuer = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


def _certificate(
    key: ec.EllipticCurvePrivateKey, common_name: str, issuer: Issuer | None, usage: str
) -> x509.Certificate:
    """A certificate for ``key``: self-signed when ``issuer`` is None; ``usage`` is "ca", "server" or "client"."""
    now = datetime.now(timezone.utc)
    signing_key, issuer_name = (key, _name(common_name)) if issuer is None else (issuer[0], issuer[1].subject)
    builder = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(issuer_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=usage == "ca", path_length=None), critical=True)
    )
    if usage == "ca":
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
    elif usage == "server":
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
        ), critical=False).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _write(directory: Path, stem: str, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
    (directory / f"{stem}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / f"{stem}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))


def make_pki(directory: Path) -> Path:
    """ca, server, client (signed by ca), other-ca and other-client (signed by other-ca): NAME.pem and NAME.key
    each, and ``token``, in ``directory``; the file names docs/security.md uses."""
    directory.mkdir(parents=True, exist_ok=True)
    for ca_stem, client_stem in (("ca", "client"), ("other-ca", "other-client")):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate(ca_key, f"dropnet test {ca_stem}", None, "ca")
        _write(directory, ca_stem, ca_key, ca)
        client_key = ec.generate_private_key(ec.SECP256R1())
        _write(directory, client_stem, client_key, _certificate(client_key, client_stem, (ca_key, ca), "client"))
        if ca_stem == "ca":
            server_key = ec.generate_private_key(ec.SECP256R1())
            _write(directory, "server", server_key, _certificate(server_key, "localhost", (ca_key, ca), "server"))
    (directory / "token").write_text(TOKEN + "\n")
    return directory


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


PROVENANCE = {
    "config": {"preset": "mnist-mlp", "target": "Table 2, row 3",
               "data": {"name": "/home/alice/data/train.npz", "data_dir": "/home/alice/mnist"}},
    "created": "2026-01-02T03:04:05+00:00",
    "command": ["/home/alice/.venv/bin/dropnet", "train", "--preset", "mnist-mlp", "--out", "/home/alice/runs/r1"],
}
"""A trained run's provenance as a user's machine writes it: absolute paths and the command line."""


@pytest.fixture(scope="module")
def models(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny package as ``tiny/1``, its manifest's ``source_run`` replaced by :data:`PROVENANCE`."""
    models = models_dir_with(tiny_package, tmp_path_factory.mktemp("security"))
    manifest_path = models / MODEL / "1" / "manifest.json"
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "source_run": PROVENANCE}))
    return models


def _serve(models: Path, **settings: Any) -> Iterator[ServerThread]:
    with ServerThread(grpc_settings(models, **settings)) as running:
        yield running


@pytest.fixture(scope="module")
def tls_server(models: Path, pki: Path) -> Iterator[ServerThread]:
    yield from _serve(models, tls_cert=pki / "server.pem", tls_key=pki / "server.key")


@pytest.fixture(scope="module")
def mtls_server(models: Path, pki: Path) -> Iterator[ServerThread]:
    """TLS, client certificates signed by ``ca`` required, and the bearer token."""
    yield from _serve(models, tls_cert=pki / "server.pem", tls_key=pki / "server.key", tls_client_ca=pki / "ca.pem",
                      token_file=pki / "token")


@pytest.fixture(scope="module")
def token_server(models: Path, pki: Path) -> Iterator[ServerThread]:
    yield from _serve(models, token_file=pki / "token")


@pytest.fixture(scope="module")
def plain_server(models: Path) -> Iterator[ServerThread]:
    yield from _serve(models)


def _tls_channel(server: ServerThread, pki: Path, ca: str = "ca", client: str | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki / f"{ca}.pem").read_bytes(),
        private_key=None if client is None else (pki / f"{client}.key").read_bytes(),
        certificate_chain=None if client is None else (pki / f"{client}.pem").read_bytes(),
    )
    return grpc.secure_channel(server.target, credentials)


def _predict(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> v1.PredictResponse:
    request = v1.PredictRequest(model=MODEL, input=encode_tensor(ROWS))
    return v1_grpc.PredictorStub(channel).Predict(request, timeout=CALL_TIMEOUT_S, metadata=metadata)


def _model_infer(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> oip.ModelInferResponse:
    request = oip.ModelInferRequest(model_name=MODEL, raw_input_contents=[little_endian_bytes(ROWS)])
    request.inputs.add(name="x", datatype="FP32", shape=ROWS.shape)
    return oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=CALL_TIMEOUT_S, metadata=metadata)


def _status(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details() or ""


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


# --- TLS and mutual TLS --------------------------------------------------------------------------------------


def test_a_tls_server_refuses_a_plain_client(tls_server: ServerThread) -> None:
    with tls_server.channel() as channel:
        code, _ = _status(lambda: _predict(channel))
    assert code == grpc.StatusCode.UNAVAILABLE


def test_a_tls_server_is_refused_by_a_client_trusting_another_ca(tls_server: ServerThread, pki: Path) -> None:
    with _tls_channel(tls_server, pki, ca="other-ca") as channel:
        code, _ = _status(lambda: _predict(channel))
    assert code == grpc.StatusCode.UNAVAILABLE


def test_a_tls_server_answers_a_client_trusting_its_ca_as_the_predictor_does(
    tls_server: ServerThread, pki: Path, tiny_predictor: Predictor
) -> None:
    with DropnetClient(tls_server.target, tls_ca=pki / "ca.pem") as client:
        deterministic = client.predict(MODEL, ROWS)
        mc = client.predict(MODEL, ROWS, mc_samples=20, seed=5)
    expected = tiny_predictor.predict(ROWS)
    assert_outputs_match({k: deterministic[k] for k in expected.outputs}, dict(expected.outputs))
    expected_mc = tiny_predictor.predict(ROWS, mc_samples=20, seed=5)
    assert_outputs_match({k: mc[k] for k in expected_mc.outputs}, dict(expected_mc.outputs))


@pytest.mark.parametrize("client", [None, "other-client"], ids=["no certificate", "certificate of another CA"])
def test_a_mutual_tls_server_refuses_clients_without_a_certificate_of_its_ca(
    mtls_server: ServerThread, pki: Path, client: str | None
) -> None:
    with _tls_channel(mtls_server, pki, client=client) as channel:
        code, _ = _status(lambda: _predict(channel, _bearer(TOKEN)))
    assert code == grpc.StatusCode.UNAVAILABLE


def test_a_mutual_tls_server_answers_a_client_with_a_certificate_of_its_ca(
    mtls_server: ServerThread, pki: Path, tiny_predictor: Predictor
) -> None:
    with _tls_channel(mtls_server, pki, client="client") as channel:
        response = _predict(channel, _bearer(TOKEN))
    assert response.model == MODEL
    np.testing.assert_allclose(decode_tensor(response.probabilities, "probabilities"),
                               tiny_predictor.predict(ROWS).probabilities, rtol=1e-6)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"tls_cert": "absent.pem"}, r"--tls-cert .*absent\.pem: cannot be read \(No such file or directory\); "
                                     r"expected a PEM certificate chain"),
        ({"tls_cert": "server.key"}, r"--tls-cert .*server\.key holds no '-----BEGIN CERTIFICATE-----' block"),
        ({"tls_key": "server.pem"}, r"--tls-key .*server\.pem holds no 'PRIVATE KEY-----' block; expected a PEM "
                                    r"private key"),
        ({"tls_key": "client.key"}, r"--tls-key .*client\.key does not match --tls-cert .*server\.pem; expected the "
                                    r"private key of that certificate"),
        ({"tls_key": "encrypted.key"}, r"--tls-key .*encrypted\.key: the private key is encrypted"),
        ({"tls_cert": "broken.pem"}, r"--tls-cert .*broken\.pem: a certificate in it cannot be parsed"),
        ({"tls_client_ca": "server.key"}, r"--tls-client-ca .*server\.key holds no '-----BEGIN CERTIFICATE-----'"),
    ],
)
def test_bad_tls_files_are_config_errors_naming_the_file(
    pki: Path, tmp_path: Path, files: dict[str, str], message: str
) -> None:
    key = serialization.load_pem_private_key((pki / "server.key").read_bytes(), None)
    (tmp_path / "encrypted.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    ))
    (tmp_path / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    for name in ("server.pem", "server.key", "client.key"):
        shutil.copy(pki / name, tmp_path / name)
    chosen = {"tls_cert": "server.pem", "tls_key": "server.key", **files}
    settings = grpc_settings(tmp_path, **{field: tmp_path / name for field, name in chosen.items()})
    with pytest.raises(ConfigError, match=message):
        read_server_tls(settings)


def test_a_mismatched_key_stops_the_server_before_it_binds(models: Path, pki: Path) -> None:
    settings = grpc_settings(models, tls_cert=pki / "server.pem", tls_key=pki / "client.key")
    with pytest.raises(ConfigError, match="does not match"), ServerThread(settings):
        pass


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tls_cert": "c.pem"}, "--tls-cert is given without --tls-key; expected both"),
        ({"tls_key": "c.key"}, "--tls-key is given without --tls-cert; expected both"),
        ({"tls_client_ca": "ca.pem"}, "--tls-client-ca is given without --tls-cert and --tls-key"),
    ],
)
def test_tls_flags_that_need_each_other_are_refused_alone(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerSettings(models_dir=Path("m"), **fields)


# --- bearer token ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", [_predict, _model_infer], ids=["dropnet.v1 Predict", "OIP ModelInfer"])
@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "this server needs a bearer token"),
        (_bearer("not-the-token"), "the bearer token is not valid"),
        ((("authorization", TOKEN),), "the bearer token is not valid"),  # no "Bearer" scheme
    ],
    ids=["no token", "wrong token", "no scheme"],
)
def test_calls_without_the_token_are_unauthenticated(
    token_server: ServerThread, call: Any, metadata: tuple[tuple[str, str], ...], message: str
) -> None:
    with token_server.channel() as channel:
        code, details = _status(lambda: call(channel, metadata))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert details.startswith(message) and "not-the-token" not in details and TOKEN not in details


def test_an_unauthenticated_call_is_refused_before_its_request_is_decoded(token_server: ServerThread) -> None:
    with token_server.channel() as channel:
        garbage = channel.unary_unary("/dropnet.v1.Predictor/Predict")
        code, details = _status(lambda: garbage(b"\xff\xfe not a protobuf message", timeout=CALL_TIMEOUT_S))
    assert code == grpc.StatusCode.UNAUTHENTICATED and details.startswith("this server needs a bearer token")


def test_reflection_needs_the_token_and_health_does_not(token_server: ServerThread) -> None:
    with token_server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        code, _ = _status(lambda: list(reflect(iter([request]), timeout=CALL_TIMEOUT_S)))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        listed = list(reflect(iter([request]), timeout=CALL_TIMEOUT_S, metadata=_bearer(TOKEN)))
    assert listed[0].list_services_response.service


def test_calls_with_the_token_are_answered_as_the_predictor_does(
    token_server: ServerThread, tiny_predictor: Predictor
) -> None:
    with token_server.channel() as channel:
        v1_answer = _predict(channel, _bearer(TOKEN))
        oip_answer = _model_infer(channel, (("authorization", f"bearer {TOKEN}"),))  # the scheme is case-insensitive
    expected = tiny_predictor.predict(ROWS).probabilities
    np.testing.assert_allclose(decode_tensor(v1_answer.probabilities, "probabilities"), expected, rtol=1e-6)
    index = [output.name for output in oip_answer.outputs].index("probabilities")
    np.testing.assert_allclose(np.frombuffer(oip_answer.raw_output_contents[index], np.float32).reshape(3, 10),
                               expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("content", "token"),
    [(b"abc", "abc"), (b"abc\n", "abc"), (b"abc\r\n", "abc")],
)
def test_a_token_file_loses_one_trailing_newline(tmp_path: Path, content: bytes, token: str) -> None:
    (tmp_path / "token").write_bytes(content)
    assert read_token(tmp_path / "token") == token


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty; expected a file holding the bearer token"),
        (b"\n", "is empty; expected a file holding the bearer token"),
        (b"two words\n", "holds a space, a control character or more than one line"),
        (b"one\ntwo\n", "holds a space, a control character or more than one line"),
        ("t\u00f6ken".encode(), "the token is not ASCII"),
    ],
)
def test_unusable_token_files_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "token").write_bytes(content)
    with pytest.raises(ConfigError, match=f"--token-file {tmp_path / 'token'}.*{message}"):
        read_token(tmp_path / "token")
    with pytest.raises(ConfigError, match=r"--token-file .*absent: cannot be read"):
        read_token(tmp_path / "absent")


# --- the --insecure rule -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True), ("LOCALHOST", True),
     ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.1", False),
     ("example.com", False)],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_public_address_without_tls_or_token_needs_insecure(models: Path) -> None:
    with pytest.raises(ConfigError) as caught, ServerThread(grpc_settings(models, host="0.0.0.0")):
        pass
    message = str(caught.value)
    assert message.startswith("--host 0.0.0.0 is not a loopback address")
    assert all(flag in message for flag in ("--tls-cert", "--tls-key", "--token-file", "--insecure"))


def test_serve_on_a_public_address_without_protection_exits_2(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--models", str(models), "--host", "0.0.0.0", "--port", "0", "--device", "cpu",
                 "--reload-interval", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dropnet serve: error: --host 0.0.0.0 is not a loopback address") and "Traceback" not in err


@pytest.mark.parametrize(
    ("settings", "warning"),
    [
        ({"insecure": True}, "without TLS and without a token (--insecure)"),
        ({"token_file": "token"}, "with a token but without TLS"),
    ],
)
def test_a_public_address_served_unencrypted_is_a_warning(
    models: Path, pki: Path, caplog: pytest.LogCaptureFixture, settings: dict[str, Any], warning: str
) -> None:
    settings = {key: pki / value if key == "token_file" else value for key, value in settings.items()}
    with caplog.at_level(logging.WARNING, logger="dropnet.server.security"), \
            ServerThread(grpc_settings(models, host="0.0.0.0", **settings)):
        pass
    assert any(warning in record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)


def test_a_public_address_with_tls_starts_without_a_warning(
    models: Path, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dropnet.server.security"), ServerThread(
        grpc_settings(models, host="0.0.0.0", tls_cert=pki / "server.pem", tls_key=pki / "server.key")
    ):
        pass
    assert not [record for record in caplog.records if record.name == "dropnet.server.security"]


# --- what clients are told ---------------------------------------------------------------------------------


def _absolute_paths(value: Any) -> list[str]:
    """Every string inside the JSON ``value`` that looks like an absolute path."""
    if isinstance(value, dict):
        return [path for item in value.values() for path in _absolute_paths(item)]
    if isinstance(value, list):
        return [path for item in value for path in _absolute_paths(item)]
    return [value] if isinstance(value, str) and (value.startswith("/") or value[1:3] == ":\\") else []


def _get_model(server: ServerThread) -> v1.GetModelResponse:
    with server.channel() as channel:
        return v1_grpc.PredictorStub(channel).GetModel(v1.GetModelRequest(name=MODEL), timeout=30)


def test_get_model_and_metadata_hide_provenance_by_default(plain_server: ServerThread) -> None:
    response = _get_model(plain_server)
    shown = json.loads(response.manifest_json)
    assert shown["source_run"] == {"created": PROVENANCE["created"],
                                   "config": {"preset": "mnist-mlp", "target": "Table 2, row 3"}}
    assert _absolute_paths(shown) == []
    with plain_server.channel() as channel:
        metadata = oip_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(oip.ModelMetadataRequest(name=MODEL))
    hidden = _absolute_paths(PROVENANCE)
    assert len(hidden) == 4 and not any(path in str(metadata) or path in str(response) for path in hidden)


def test_get_model_shows_provenance_with_expose_provenance(models: Path) -> None:
    with ServerThread(grpc_settings(models, expose_provenance=True)) as server:
        shown = json.loads(_get_model(server).manifest_json)
    assert shown["source_run"] == PROVENANCE


def test_public_provenance_of_an_own_model_keeps_the_exporter_and_its_gates(tiny_predictor: Predictor) -> None:
    gates = {"deterministic_max_abs_error": 1e-7, "samples_max_abs_error": 2e-7, "tolerance": {"atol": 1e-5}}
    own = {"exporter": "export_module", "module": "mypkg.nets.Net", "factory": "mypkg.nets:build",
           "weights": {"file": "best.safetensors", "sha256": "0" * 64}, "gates": gates}
    manifest = replace(tiny_predictor.manifest, source_run=own)
    assert public_manifest(manifest).to_dict()["source_run"] == {"exporter": "export_module", "gates": gates}
    assert public_manifest(manifest).to_dict()["classes"] == manifest.to_dict()["classes"]


def test_not_found_names_no_other_model(plain_server: ServerThread) -> None:
    with plain_server.channel() as channel:
        v1_stub, oip_stub = v1_grpc.PredictorStub(channel), oip_grpc.GRPCInferenceServiceStub(channel)
        calls = [
            lambda: v1_stub.GetModel(v1.GetModelRequest(name="nope"), timeout=30),
            lambda: v1_stub.Predict(v1.PredictRequest(model="nope", input=encode_tensor(ROWS)), timeout=30),
            lambda: oip_stub.ModelMetadata(oip.ModelMetadataRequest(name="nope"), timeout=30),
        ]
        for call in calls:
            code, details = _status(call)
            assert code == grpc.StatusCode.NOT_FOUND and "'nope' is not loaded" in details and MODEL not in details
        code, details = _status(lambda: v1_stub.GetModel(v1.GetModelRequest(name=MODEL, version="7"), timeout=30))
    assert code == grpc.StatusCode.NOT_FOUND
    assert details == "model 'tiny' has no loaded version '7'; loaded versions: ['1']"


def test_a_huge_unknown_model_name_is_not_found_with_a_short_message(plain_server: ServerThread) -> None:
    name = "m" * 20_000
    with plain_server.channel() as channel:
        code, details = _status(
            lambda: v1_grpc.PredictorStub(channel).GetModel(v1.GetModelRequest(name=name), timeout=30)
        )
    assert code == grpc.StatusCode.NOT_FOUND and len(details) < 300 and "20000 characters" in details


# --- the client side: dropnet predict --server, the example and docs/security.md ----------------------------


def _secure_flags(pki: Path) -> list[str]:
    return ["--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "client.pem"), "--tls-key",
            str(pki / "client.key"), "--token-file", str(pki / "token")]


def test_predict_asks_a_tls_token_server_and_prints_what_the_predictor_computes(
    mtls_server: ServerThread, pki: Path, tiny_predictor: Predictor, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    np.save(tmp_path / "x.npy", ROWS)
    argv = ["predict", "--server", mtls_server.target, "--model", MODEL, "--input", str(tmp_path / "x.npy"),
            "--mc-samples", "20", "--seed", "3", "--json", *_secure_flags(pki)]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    expected = tiny_predictor.predict(ROWS, mc_samples=20, seed=3)
    assert (result["model"], result["version"], result["seed"]) == (MODEL, "1", 3)
    assert result["provider"] == f"server {mtls_server.target}"
    assert [row["label"] for row in result["rows"]] == expected.labels
    np.testing.assert_allclose([row["std"] for row in result["rows"]], expected.std, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("--token-file", r"UNAUTHENTICATED: this server needs a bearer token"),
        ("--tls-ca", r"server 127\.0\.0\.1:\d+ answered UNAVAILABLE"),
    ],
)
def test_predict_against_a_secured_server_without_a_flag_is_one_error_line(
    mtls_server: ServerThread, pki: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], drop: str, message: str
) -> None:
    np.save(tmp_path / "x.npy", ROWS)
    flags = _secure_flags(pki)
    index = flags.index(drop)
    del flags[index:index + 2]
    if drop == "--tls-ca":
        flags += ["--tls-ca", str(pki / "other-ca.pem")]
    argv = ["predict", "--server", mtls_server.target, "--model", MODEL, "--input", str(tmp_path / "x.npy"), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dropnet predict: error: server ") and "Traceback" not in err
    assert re.search(message, err)


def _docs_block(heading: str) -> str:
    """The first ```bash block under the docs/security.md heading ``heading``."""
    text = DOCS.read_text()
    section = text[text.index(f"## {heading}"):]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def _docs_command(program: str) -> list[str]:
    """The arguments of the docs/security.md command line that starts with ``program``."""
    for heading in ("Serve", "Ask"):
        for line in _docs_block(heading).replace("\\\n", " ").splitlines():
            if line.startswith(program):
                return shlex.split(line)[len(shlex.split(program)):]
    raise AssertionError(f"docs/security.md has no {program!r} command")


@pytest.mark.slow
def test_the_example_client_asks_the_server_the_docs_start(
    tiny_package: Path, pki: Path, tmp_path: Path, tiny_predictor: Predictor
) -> None:
    shutil.copytree(tiny_package, tmp_path / "models" / "digits" / "1")
    shutil.copytree(pki, tmp_path / "pki")
    np.save(tmp_path / "rows.npy", ROWS)
    flags = _docs_command("dropnet serve")
    with ServeProcess([*flags, "--port", "0", "--device", "cpu"], cwd=tmp_path) as server:
        port = server.wait_serving().rsplit(":", 1)[1]
        example = _docs_command("python examples/tls_token_client.py")
        example[example.index("--server") + 1] = f"localhost:{port}"
        done = subprocess.run([sys.executable, str(REPO / "examples" / "tls_token_client.py"), *example],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert server.stop() == 0
    assert done.returncode == 0, done.stderr
    expected = tiny_predictor.predict(ROWS, mc_samples=100, seed=0)
    deterministic = tiny_predictor.predict(ROWS)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("model digits version 1 over TLS")
    for line, c, k, p, std, mi in zip(lines[2:], deterministic.predicted_class, expected.predicted_class,
                                      expected.probabilities.max(axis=1), expected.std, expected.mutual_information,
                                      strict=True):
        fields = line.split()
        assert (int(fields[1]), int(fields[3])) == (c, k)
        assert float(fields[4]) == pytest.approx(p, abs=1e-4) and float(fields[5]) == pytest.approx(std[k], abs=1e-4)
        assert float(fields[6]) == pytest.approx(mi, abs=1e-4)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_the_docs_openssl_commands_make_files_the_server_and_the_client_accept(
    models: Path, tmp_path: Path, tiny_predictor: Predictor
) -> None:
    subprocess.run(["bash", "-euc", _docs_block("Certificates")], cwd=tmp_path, check=True, capture_output=True)
    pki = tmp_path / "pki"
    settings = grpc_settings(models, tls_cert=pki / "server.pem", tls_key=pki / "server.key",
                             tls_client_ca=pki / "ca.pem", token_file=pki / "token")
    with ServerThread(settings) as server, DropnetClient(
        f"localhost:{server.port}", tls_ca=pki / "ca.pem", tls_cert=pki / "client.pem", tls_key=pki / "client.key",
        token=read_token(pki / "token"),
    ) as client:
        answer = client.predict(MODEL, ROWS)
    np.testing.assert_allclose(answer["probabilities"], tiny_predictor.predict(ROWS).probabilities, rtol=1e-6)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give MODEL_DIR (a model package) or --server HOST:PORT with --model NAME"),
        (["pkg", "--server", "127.0.0.1:1"], "MODEL_DIR pkg and --server 127.0.0.1:1 both given; expected one of them"),
        (["--server", "127.0.0.1:1"], "--server needs --model NAME (the served model to ask)"),
        (["pkg", "--token-file", "t"],
         "--token-file cannot be used without --server; expected them only with --server"),
        (["--server", "127.0.0.1:1", "--model", "m", "--threads", "2"],
         "--threads cannot be used with --server; expected them only with MODEL_DIR"),
    ],
)
def test_predict_refuses_flags_of_the_other_mode(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", "--input", "x.npy", *argv]) == 2
    assert capsys.readouterr().err == f"dropnet predict: error: {message}\n"
