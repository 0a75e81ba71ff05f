"""Every manifest key a consumer reads is checked at load: by the Predictor and by the server's repository."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from dropnet.core.errors import ModelPackageError
from dropnet.core.manifest import FORMAT_V1, MANIFEST_FILE
from dropnet.server.predictor import Predictor
from dropnet.server.repository import ModelRepository
from tests.server.helpers import MODEL, digits_rows, make_settings

CONSUMED_KEYS = [
    ("format",), ("name",), ("version",), ("created",), ("dropnet_version",), ("versions",), ("source_run",),
    ("input",), ("input", "name"), ("input", "shape"), ("input", "dtype"), ("input", "value_range"),
    ("input", "normalisation", "mean"), ("input", "normalisation", "std"), ("input", "normalisation", "in_graph"),
    ("classes",), ("architecture",),
    ("dropout",), ("dropout", "flavour"), ("dropout", "retain"), ("dropout", "sites"),
    ("dropout", "sites", 0, "path"), ("dropout", "sites", 0, "kind"), ("dropout", "sites", 0, "retain"),
    ("dropout", "sites", 0, "granularity"),
    ("max_norm",), ("onnx",), ("onnx", "opset"), ("onnx", "ir_version"),
    ("files",), ("files", "deterministic.onnx"), ("files", "deterministic.onnx", "sha256"),
    ("files", "deterministic.onnx", "bytes"), ("files", "mc.onnx"), ("files", "mc.onnx", "sha256"),
    ("files", "mc.onnx", "bytes"),
    ("mc",), ("mc", "max_samples"), ("mc", "rng"), ("metrics",),
]
"""Every key path the Predictor, the repository, the codecs, ``dropnet predict`` and the exporter read."""


def _key_path(path: tuple) -> str:
    return "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in path).lstrip(".")


def _without(package: Path, destination: Path, path: tuple) -> Path:
    """A copy of ``package`` whose manifest lacks the key at ``path``."""
    copy = Path(shutil.copytree(package, destination))
    raw = json.loads((copy / MANIFEST_FILE).read_text())
    parent = raw
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    (copy / MANIFEST_FILE).write_text(json.dumps(raw))
    return copy


@pytest.mark.parametrize("path", CONSUMED_KEYS, ids=_key_path)
def test_a_manifest_missing_a_consumed_key_is_refused_at_load_naming_it(
    tiny_package: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, path: tuple
) -> None:
    message = f"{MANIFEST_FILE}: {_key_path(path)} is missing; expected "
    package = _without(tiny_package, tmp_path / "models" / MODEL / "1", path)
    with pytest.raises(ModelPackageError) as refused:
        Predictor.load(package)
    assert message in str(refused.value)
    repository = ModelRepository(make_settings(tmp_path / "models"))
    with caplog.at_level(logging.WARNING, logger="dropnet.server.repository"):
        asyncio.run(repository.scan())
    assert not repository.has_model(MODEL)
    assert any(message in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("path", [("task",), ("input", "normalisation")], ids=_key_path)
def test_optional_keys_may_be_missing(tiny_package: Path, tmp_path: Path, path: tuple) -> None:
    predictor = Predictor.load(_without(tiny_package, tmp_path / "pkg", path))
    assert predictor.predict(digits_rows(2, seed=0)).probabilities.shape == (2, 10)


def test_a_format_1_package_still_loads_and_predicts_the_same(
    tiny_package: Path, tmp_path: Path, tiny_predictor: Predictor
) -> None:
    package = Path(shutil.copytree(tiny_package, tmp_path / "v1"))
    raw = json.loads((package / MANIFEST_FILE).read_text())
    raw["format"] = FORMAT_V1
    del raw["task"], raw["dropout"]["sites"]
    (package / MANIFEST_FILE).write_text(json.dumps(raw))
    old = Predictor.load(package)
    assert old.manifest.format == FORMAT_V1 and old.manifest.to_dict() == raw
    assert [site.path for site in old.manifest.dropout.sites] == [None, None, None]
    x = digits_rows(3, seed=1)
    mc, expected = old.predict(x, mc_samples=5, seed=2), tiny_predictor.predict(x, mc_samples=5, seed=2)
    np.testing.assert_array_equal(mc.probabilities, expected.probabilities)
    np.testing.assert_array_equal(old.predict(x).predicted_class, tiny_predictor.predict(x).predicted_class)
