"""A small blocking client for ``dropnet.v1.Predictor``: numpy in, numpy out (no onnxruntime, no torch).

    with DropnetClient("127.0.0.1:50051") as client:
        out = client.predict("digits", x, mc_samples=100, seed=7)
        out["probabilities"], out["mutual_information"], out["seed"]
        out = client.predict("prices", x, mc_samples=100)  # a regression model
        out["mean"], out["std"]  # [rows, targets]; client.get_model("prices").targets names them

    # a server with --tls-cert/--tls-key, --tls-client-ca (mutual TLS) and --token-file
    from dropnet.server.security import read_token
    DropnetClient("models.example.com:443", tls_ca="ca.pem", tls_cert="client.pem", tls_key="client.key",
                  token=read_token("token"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import numpy as np

from dropnet.core.errors import ConfigError
from dropnet.protos.dropnet.v1 import predictor_pb2 as v1
from dropnet.protos.dropnet.v1 import predictor_pb2_grpc as v1_grpc
from dropnet.server.security import AUTHORIZATION, bearer_value, read_ca_bundle, read_key_pair
from dropnet.server.tensors import decode_tensor, encode_tensor
from dropnet.server.validation import check_int, check_seed

RESPONSE_TENSORS = tuple(
    field.name for field in v1.PredictResponse.DESCRIPTOR.fields
    if field.message_type is not None and field.message_type.full_name == v1.Tensor.DESCRIPTOR.full_name
)
"""The PredictResponse fields that hold tensors, read from the proto (its single source of truth)."""
UINT32_MAX = 2**32 - 1
"""Largest value of the wire's ``mc_samples`` field (the server's own limit is far lower)."""
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest message sent or received by default: the server's default ``max_message_bytes``."""


class DropnetClient:
    """A channel to a dropnet server and typed calls on it; close it (or use ``with``) when done."""

    def __init__(
        self,
        target: str,
        timeout_s: float = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        *,
        tls: bool = False,
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        token: str | None = None,
    ) -> None:
        """``max_message_bytes`` bounds requests and responses (gRPC's own default is 4 MiB received).

        TLS is used when ``tls`` is true or any ``tls_*`` file is given: ``tls_ca`` is the PEM bundle of
        the CA that signed the server's certificate (None: the system's trusted roots); ``tls_cert`` and
        ``tls_key`` are this client's certificate and key, for a server that asks for one (mutual TLS).
        ``token`` is sent with every call as ``authorization: Bearer TOKEN``. A file that cannot be read,
        or a key that does not match its certificate, is a ConfigError naming it.
        """
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if tls or tls_ca is not None or tls_cert is not None or tls_key is not None:
            credentials = channel_credentials(tls_ca, tls_cert, tls_key)
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = v1_grpc.PredictorStub(self._channel)
        self._metadata = () if token is None else ((AUTHORIZATION, bearer_value(token)),)
        self.timeout_s = timeout_s

    def __enter__(self) -> "DropnetClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Block until the channel is connected (raises grpc.FutureTimeoutError after ``timeout_s``)."""
        grpc.channel_ready_future(self._channel).result(timeout=timeout_s)

    def predict(
        self, model: str, x: np.ndarray, mc_samples: int | None = None, seed: int | None = None,
        version: str | None = None, outputs: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """Deterministic prediction, or MC dropout when ``mc_samples`` (>= 1) is given; returns arrays by output
        name (the task's: ``probabilities``, ... or ``prediction`` / ``mean``, ``std``) and model, version, seed.

        An ``x`` of a dtype the wire format lacks, ``mc_samples`` < 1 or a seed outside int64 is an InvalidInputError.
        """
        if mc_samples is not None:
            mc_samples = check_int("mc_samples", mc_samples, 1, UINT32_MAX)
        if seed is not None:
            seed = check_seed(seed)
        request = v1.PredictRequest(
            model=model, version=version or "", input=encode_tensor(np.asarray(x)), outputs=list(outputs),
            mode=v1.MODE_DETERMINISTIC if mc_samples is None else v1.MODE_MC_DROPOUT, mc_samples=mc_samples or 0,
        )
        if seed is not None:
            request.seed = seed
        response = self._stub.Predict(request, timeout=self.timeout_s, metadata=self._metadata)
        result: dict[str, Any] = {"model": response.model, "version": response.version}
        if response.HasField("seed"):
            result["seed"] = response.seed
        for name in RESPONSE_TENSORS:
            if response.HasField(name):
                result[name] = decode_tensor(getattr(response, name), name)
        return result

    def get_model(self, name: str, version: str | None = None) -> v1.GetModelResponse:
        """The description of one model version (the latest when ``version`` is None): task, classes or targets, ..."""
        request = v1.GetModelRequest(name=name, version=version or "")
        return self._stub.GetModel(request, timeout=self.timeout_s, metadata=self._metadata)

    def list_models(self) -> list[v1.ModelSummary]:
        """Every model the server knows, with its versions and readiness."""
        response = self._stub.ListModels(v1.ListModelsRequest(), timeout=self.timeout_s, metadata=self._metadata)
        return list(response.models)


def channel_credentials(
    ca: str | Path | None = None, cert: str | Path | None = None, key: str | Path | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials of a channel: trusting the CA bundle ``ca`` (None: the system's roots), and presenting
    the certificate ``cert`` with its key ``key`` when both are given (mutual TLS); ConfigError naming a bad file."""
    if (cert is None) != (key is None):
        raise ConfigError(f"tls_cert {cert} and tls_key {key}: a client certificate needs its key; expected both "
                          f"or neither")
    root = None if ca is None else read_ca_bundle(Path(ca), "tls_ca")
    if cert is None or key is None:
        return grpc.ssl_channel_credentials(root_certificates=root)
    pair = read_key_pair(Path(cert), Path(key), "tls_cert", "tls_key")
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=pair.private_key,
                                        certificate_chain=pair.certificate_chain)
