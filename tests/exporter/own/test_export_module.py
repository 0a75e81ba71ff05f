"""dropnet.export_module: the package it writes (manifest, graphs, serving) and what it refuses."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import dropnet
from dropnet import Predictor
from dropnet.core.errors import InvalidInputError, ModelPackageError
from dropnet.core.manifest import Manifest
from dropnet.exporter.own.inputs import WIDEST_FLOAT_RANGE
from tests.exporter.own import bad_models as bad

VOCABULARY = 20


def classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3)).eval()


def regressor() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 2)).eval()


class Tokens(nn.Module):
    """Token ids [B, 5] to 2 classes through an embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCABULARY, 4)
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(4, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embedding(tokens).mean(dim=1)))


ROWS = torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
TOKENS = torch.randint(0, VOCABULARY, (4, 5), generator=torch.Generator().manual_seed(3))


def _manifest(package: Path) -> dict:
    return json.loads((package / "manifest.json").read_text())


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A classification, a regression and a token-id package, exported once for the module."""
    root = tmp_path_factory.mktemp("own-packages")
    return {
        "classifier": dropnet.export_module(classifier(), ROWS, root / "classifier", name="clf", max_samples=50),
        "regressor": dropnet.export_module(
            regressor(), ROWS, root / "regressor", name="reg", version="7", task="regression", targets=["a", "b"]
        ),
        "tokens": dropnet.export_module(Tokens().eval(), TOKENS, root / "tokens", name="tok", classes=["no", "yes"]),
    }


def test_classification_manifest(packages: dict[str, Path]) -> None:
    package = packages["classifier"]
    raw = _manifest(package)
    manifest = Manifest.from_dict(raw, "test")
    assert (raw["format"], raw["name"], raw["version"]) == ("dropnet-model/2", "clf", "1")
    assert raw["task"] == "classification"
    assert raw["classes"] == ["0", "1", "2"] and "targets" not in raw
    assert raw["input"] == {"name": "x", "shape": [6], "dtype": "float32", "value_range": list(WIDEST_FLOAT_RANGE)}
    assert raw["dropout"]["sites"] == [{"path": "2", "kind": "inverted", "retain": 0.7, "granularity": "element"}]
    assert manifest.mc.max_samples == 50
    made = raw["source_run"]
    assert made["exporter"] == "export_module"
    assert made["module"] == "torch.nn.modules.container.Sequential"
    assert made["gates"]["deterministic_max_abs_error"] <= 1e-5 and made["gates"]["samples_max_abs_error"] <= 1e-5
    assert raw["architecture"]["parameters"] == sum(p.numel() for p in classifier().parameters())
    assert raw["versions"]["torch"] == torch.__version__
    for file_name, digest in raw["files"].items():
        data = (package / file_name).read_bytes()
        assert digest == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        props = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
        assert (props["name"], props["task"], json.loads(props["classes"])) == ("clf", "classification", raw["classes"])
    assert sorted(p.name for p in package.parent.iterdir()) == ["classifier", "regressor", "tokens"]  # no staging


def test_classification_package_serves_like_the_module(packages: dict[str, Path]) -> None:
    predictor = Predictor.load(packages["classifier"], device="cpu")
    x = ROWS.numpy()
    with torch.no_grad():
        expected = torch.softmax(classifier()(ROWS), dim=1).numpy()
    np.testing.assert_allclose(predictor.predict(x).probabilities, expected, atol=1e-6)
    mc = predictor.predict(x, mc_samples=20, seed=5)
    assert mc.std.shape == (4, 3) and mc.predictive_entropy.shape == (4,)
    np.testing.assert_array_equal(mc.probabilities, predictor.predict(x, mc_samples=20, seed=5).probabilities)


def test_regression_package(packages: dict[str, Path]) -> None:
    raw = _manifest(packages["regressor"])
    assert (raw["task"], raw["targets"], raw["version"]) == ("regression", ["a", "b"], "7")
    assert "classes" not in raw
    predictor = Predictor.load(packages["regressor"], device="cpu")
    with torch.no_grad():
        expected = regressor()(ROWS).numpy()
    np.testing.assert_allclose(predictor.predict(ROWS.numpy()).prediction, expected, atol=1e-5)
    mc = predictor.predict(ROWS.numpy(), mc_samples=30, seed=1)
    assert mc.mean.shape == mc.std.shape == (4, 2) and np.all(mc.std > 0)


def test_token_ids_take_their_range_from_the_embedding(packages: dict[str, Path]) -> None:
    raw = _manifest(packages["tokens"])
    assert raw["input"] == {"name": "x", "shape": [5], "dtype": "int64", "value_range": [0, VOCABULARY - 1]}
    assert raw["classes"] == ["no", "yes"]
    predictor = Predictor.load(packages["tokens"], device="cpu")
    assert predictor.predict(TOKENS.numpy(), mc_samples=5, seed=0).probabilities.shape == (4, 2)
    with pytest.raises(InvalidInputError, match=rf"expected integers in 0\.\.{VOCABULARY - 1}"):
        predictor.predict(np.full((1, 5), VOCABULARY, np.int64))


def test_existing_package_is_replaced_only_with_force(packages: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelPackageError, match="already holds a model package; pass --force"):
        dropnet.export_module(classifier(), ROWS, packages["classifier"], name="again")
    assert _manifest(packages["classifier"])["name"] == "clf"


REFUSED = {
    "no dropout site": (
        bad.no_dropout, {}, r"Sequential has no active dropout site, so MC dropout has nothing to sample"
    ),
    "not exportable": (
        bad.DataDependentBranch, {},
        r"^torch\.onnx cannot export DataDependentBranch \(in body\.2 \(DataDependentGate\)\)",
    ),
    "class count": (classifier, {"classes": ["a", "b"]}, r"^2 classes given but the model's output has 3 \(C\)"),
    "target count": (
        regressor, {"task": "regression", "targets": ["a"]}, r"^1 targets given but the model's output has 2 \(D\)"
    ),
    "targets for classification": (
        classifier, {"targets": ["a", "b", "c"]}, r"^targets are given for a classification model; expected classes"
    ),
    "duplicate classes": (classifier, {"classes": ["a", "a", "b"]}, r"are not distinct non-empty strings"),
    "unknown task": (classifier, {"task": "ranking"}, r"^task 'ranking' is unknown; expected one of"),
    "max samples": (classifier, {"max_samples": 0}, r"^max_samples must be a positive integer, got 0"),
    "bad range": (classifier, {"value_range": (1, 0)}, r"^value range \[1, 0\] is invalid; expected finite numbers"),
    "outside range": (
        classifier, {"value_range": (0, 1)}, r"^example input holds values in .* expected them within .* \[0\.0, 1\.0\]"
    ),
    "empty name": (classifier, {"name": " "}, r"^package name must be a non-empty string"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_with_one_line_and_nothing_written(case: str, tmp_path: Path) -> None:
    build, options, message = REFUSED[case]
    with pytest.raises(ModelPackageError, match=message) as refused:
        dropnet.export_module(build().eval(), ROWS, tmp_path / "pkg", **{"name": "m", **options})
    assert "\n" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def test_token_ids_without_an_embedding_need_a_range(tmp_path: Path) -> None:
    module = nn.Sequential(nn.Linear(5, 2), nn.Dropout(0.5))
    with pytest.raises(ModelPackageError, match=r"^an int64 input needs its value range"):
        dropnet.export_module(module, TOKENS, tmp_path / "pkg", name="m")
    with pytest.raises(ModelPackageError, match=r"^example input holds values in .* within the input's value range"):
        dropnet.export_module(Tokens().eval(), TOKENS, tmp_path / "pkg", name="m", value_range=(0, 3))
    assert list(tmp_path.iterdir()) == []


def test_example_input_of_another_dtype_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelPackageError, match=r"^input dtype float64 is not supported; expected one of"):
        dropnet.export_module(classifier(), ROWS.double(), tmp_path / "pkg", name="m")
