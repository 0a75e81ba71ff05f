"""Every zoo model, exported with ``export_module``, served by one ``dropnet serve`` and asked over both gRPC APIs.

Each answer is checked against the Predictor on the same package (and the deterministic one also
against the torch module in eval mode): KServe v2 / OIP through tritonclient in both modes, and
dropnet.v1 through DropnetClient for a classification and the regression model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as triton
from tritonclient.utils import np_to_triton_dtype

from dropnet import export_module
from dropnet.core.outputs import Mode, Task, default_output_names
from dropnet.protos.dropnet.v1 import predictor_pb2 as v1
from dropnet.server.client import DropnetClient
from dropnet.server.predictor import Predictor
from dropnet.server.process import ServeProcess
from tests.exporter.own.zoo import ZOO

NAMES = sorted(ZOO)
MC_SAMPLES, SEED = 16, 1234
TORCH_TOLERANCE = 1e-5
"""Largest difference between a served deterministic answer and the torch module's output."""
SERVED_TOLERANCE = 1e-6
"""Largest difference between the served answer and the Predictor's on the same graph (thread counts may
reorder float sums)."""


class Zoo:
    """The exported zoo: per model, its eval-mode module, its example rows and its loaded package."""

    def __init__(self, models: Path) -> None:
        self.models = models
        self.modules: dict[str, torch.nn.Module] = {}
        self.inputs: dict[str, np.ndarray] = {}
        self.predictors: dict[str, Predictor] = {}
        for name in NAMES:
            module, x = ZOO[name].build()
            package = export_module(module, x, models / name / "1", name=name, task=ZOO[name].task)
            self.modules[name], self.inputs[name] = module, x.numpy()
            self.predictors[name] = Predictor.load(package, device="cpu", intra_op_threads=1, spin_wait=False)

    def torch_output(self, name: str) -> np.ndarray:
        """The eval-mode module's output for the example rows (logits or the regression targets)."""
        with torch.no_grad():
            return self.modules[name](torch.from_numpy(self.inputs[name])).numpy()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo") / "models")


@pytest.fixture(scope="module")
def target(zoo: Zoo) -> Iterator[str]:
    """host:port of one ``dropnet serve`` serving every zoo package."""
    flags = ["--models", str(zoo.models), "--host", "127.0.0.1", "--port", "0", "--device", "cpu",
             "--intra-op-threads", "1", "--reload-interval", "0"]
    with ServeProcess(flags) as server:
        yield server.wait_serving()
        assert server.stop() == 0


@pytest.fixture(scope="module")
def oip_client(target: str) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(target) as client:
        yield client


def _infer(client: triton.InferenceServerClient, name: str, x: np.ndarray, **parameters: int) -> dict[str, np.ndarray]:
    """Every output of one OIP request for the rows ``x`` (in their own dtype: FP32, or INT64 token ids)."""
    tensor = triton.InferInput("x", list(x.shape), np_to_triton_dtype(x.dtype))
    tensor.set_data_from_numpy(x)
    result = client.infer(name, [tensor], parameters=parameters or None)
    return {output.name: result.as_numpy(output.name) for output in result.get_response().outputs}


def _assert_same(served: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(served) == list(expected)
    for name, value in expected.items():
        assert served[name].dtype == value.dtype, name
        np.testing.assert_allclose(served[name], value, rtol=SERVED_TOLERANCE, atol=SERVED_TOLERANCE, err_msg=name)


def test_the_transformer_takes_int64_token_ids(zoo: Zoo) -> None:
    assert zoo.inputs["transformer"].dtype == np.int64
    assert zoo.predictors["transformer"].manifest.input.dtype == "int64"


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_answer_is_the_predictors_and_the_torch_modules(
    zoo: Zoo, oip_client: triton.InferenceServerClient, name: str
) -> None:
    x = zoo.inputs[name]
    served = _infer(oip_client, name, x)
    expected = zoo.predictors[name].predict(x).outputs
    _assert_same(served, dict(expected))
    task = Task(ZOO[name].task)
    assert tuple(served) == default_output_names(task, Mode.DETERMINISTIC)
    reference = zoo.torch_output(name)
    if task is Task.REGRESSION:
        np.testing.assert_allclose(served["prediction"], reference, rtol=0, atol=TORCH_TOLERANCE)
    else:
        np.testing.assert_allclose(served["logits"], reference, rtol=0, atol=TORCH_TOLERANCE)
        probabilities = torch.softmax(torch.from_numpy(reference), dim=1).numpy()
        np.testing.assert_allclose(served["probabilities"], probabilities, rtol=0, atol=TORCH_TOLERANCE)
        np.testing.assert_array_equal(served["predicted_class"], reference.argmax(axis=1))


@pytest.mark.parametrize("name", NAMES)
def test_mc_answer_is_the_predictors_for_the_seed_and_repeats_exactly(
    zoo: Zoo, oip_client: triton.InferenceServerClient, name: str
) -> None:
    x = zoo.inputs[name]
    served = _infer(oip_client, name, x, mc_samples=MC_SAMPLES, seed=SEED)
    expected = zoo.predictors[name].predict(x, mc_samples=MC_SAMPLES, seed=SEED).outputs
    _assert_same(served, dict(expected))
    assert tuple(served) == default_output_names(ZOO[name].task, Mode.MC)
    assert (served["std"] > 0).all()
    again = _infer(oip_client, name, x, mc_samples=MC_SAMPLES, seed=SEED)
    for output, value in served.items():
        np.testing.assert_array_equal(again[output], value, err_msg=output)
    other = _infer(oip_client, name, x, mc_samples=MC_SAMPLES, seed=SEED + 1)
    assert not np.array_equal(other["std"], served["std"])


@pytest.mark.parametrize(
    ("name", "task"), [("cnn", v1.TASK_CLASSIFICATION), ("diabetes", v1.TASK_REGRESSION)], ids=["cnn", "diabetes"]
)
def test_dropnet_v1_answers_classification_and_regression_as_the_predictor(
    zoo: Zoo, target: str, name: str, task: int
) -> None:
    x, predictor = zoo.inputs[name], zoo.predictors[name]
    with DropnetClient(target) as client:
        described = client.get_model(name)
        deterministic = client.predict(name, x)
        mc = client.predict(name, x, mc_samples=MC_SAMPLES, seed=SEED)
    assert (described.task, list(described.classes), list(described.targets)) == (
        task, list(predictor.manifest.classes), list(predictor.manifest.targets)
    )
    assert mc.pop("seed") == SEED
    for answer, expected in ((deterministic, predictor.predict(x)),
                             (mc, predictor.predict(x, mc_samples=MC_SAMPLES, seed=SEED))):
        assert (answer.pop("model"), answer.pop("version")) == (name, "1")
        _assert_same({output: answer[output] for output in expected.outputs}, dict(expected.outputs))
        assert sorted(answer) == sorted(expected.outputs)
