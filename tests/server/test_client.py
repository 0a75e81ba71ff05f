"""DropnetClient: a light import, argument checks, and message limits on its channel."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from dropnet.core.errors import InvalidInputError
from dropnet.server.client import DropnetClient
from dropnet.server.predictor import Predictor
from tests.server.grpc_harness import ServerThread, grpc_settings, models_dir_with
from tests.server.helpers import MODEL, digits_rows

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(grpc_settings(models_dir_with(tiny_package, tmp_path_factory.mktemp("client")))) as running:
        yield running


def test_importing_the_client_loads_neither_onnxruntime_nor_torch() -> None:
    code = "import sys, server.client; print(sorted(m for m in ('onnxruntime', 'torch') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_predict_matches_the_embedded_predictor(server: ServerThread, tiny_predictor: Predictor) -> None:
    x = digits_rows(3, seed=21)
    with DropnetClient(server.target) as client:
        deterministic = client.predict(MODEL, x)
        mc = client.predict(MODEL, x, mc_samples=12, seed=4)
    np.testing.assert_allclose(deterministic["probabilities"], tiny_predictor.predict(x).probabilities, rtol=1e-6)
    assert "seed" not in deterministic and mc["seed"] == 4
    expected = tiny_predictor.predict(x, mc_samples=12, seed=4)
    np.testing.assert_allclose(mc["std"], expected.std, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mc_samples", [0, -3, True, 2.5])
def test_mc_samples_below_one_is_refused_not_run_deterministically(server: ServerThread, mc_samples: object) -> None:
    with DropnetClient(server.target) as client, pytest.raises(InvalidInputError, match="mc_samples must be an integer in 1"):
        client.predict(MODEL, digits_rows(1, seed=0), mc_samples=mc_samples)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.int16, np.uint16, np.uint32, np.complex64, object])
def test_unsupported_dtypes_name_the_supported_ones(server: ServerThread, dtype: type) -> None:
    x = np.zeros((1, 1, 8, 8), dtype=dtype)
    with DropnetClient(server.target) as client, pytest.raises(InvalidInputError) as caught:
        client.predict(MODEL, x)
    message = str(caught.value)
    assert f"dtype {np.dtype(dtype)} has no dropnet.v1 DataType" in message
    assert "['float32', 'float64', 'float16', 'uint8', 'int32', 'int64']" in message


def test_message_limit_applies_to_both_directions(server: ServerThread) -> None:
    with DropnetClient(server.target, max_message_bytes=1024) as small, pytest.raises(grpc.RpcError) as caught:
        small.predict(MODEL, digits_rows(8, seed=0))  # 2 KiB of input
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    rows = 128  # samples [1000, 128, 10] float32: 5 MB, over gRPC's own 4 MiB receive default
    with DropnetClient(server.target) as client:
        out = client.predict(MODEL, digits_rows(rows, seed=1), mc_samples=1000, seed=0, outputs=("samples",))
    assert out["samples"].shape == (1000, rows, 10)
