"""The model repository: layouts, versions, verification and hot reload of real packages."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from dropnet.core.errors import ConfigError, NotFoundError
from dropnet.core.manifest import DETERMINISTIC_FILE, MANIFEST_FILE, MC_FILE, data_digest
from dropnet.server.predictor import Predictor
from dropnet.server.repository import MAX_CONCURRENT_LOADS, ModelRef, ModelRepository, version_key
from tests.server.helpers import MODEL, digits_rows, make_settings

X = digits_rows(2, seed=7)


def start(repository: ModelRepository) -> None:
    asyncio.run(repository.start())


def rescan(repository: ModelRepository) -> None:
    asyncio.run(repository.scan())


def probabilities(repository: ModelRepository, version: str | None = None) -> np.ndarray:
    return repository.get(MODEL, version).predictor.run_deterministic(X)["probabilities"]


def test_version_key_sorts_numeric_versions_numerically() -> None:
    assert sorted(["10", "2", "beta", "1"], key=version_key) == ["beta", "1", "2", "10"]


def test_versioned_layout_serves_latest_and_each_version(models_dir: Path, tiny_package_v2: Path) -> None:
    shutil.copytree(tiny_package_v2, models_dir / MODEL / "2")
    repository = ModelRepository(make_settings(models_dir))
    start(repository)
    assert repository.ready()
    assert repository.list_models() == [ModelRef(MODEL, ("1", "2"), "2", True)]
    assert repository.get(MODEL, None).version == "2"
    assert repository.get(MODEL, "").version == "2"
    assert repository.get(MODEL, "1").version == "1"
    assert repository.get(MODEL, "1").predictor.provider == "CPUExecutionProvider"
    assert not np.allclose(probabilities(repository, "1"), probabilities(repository, "2"))
    assert repository.loaded_count() == 2


def test_unversioned_layout_takes_version_from_manifest(tmp_path: Path, tiny_package: Path) -> None:
    shutil.copytree(tiny_package, tmp_path / "models" / "digits")
    repository = ModelRepository(make_settings(tmp_path / "models"))
    start(repository)
    assert repository.list_models() == [ModelRef("digits", ("1",), "1", True)]
    assert repository.model_ready("digits", "1") and repository.model_ready("digits", None)
    assert not repository.model_ready("digits", "2")


def test_unknown_model_or_version_is_not_found(models_dir: Path) -> None:
    repository = ModelRepository(make_settings(models_dir))
    start(repository)
    with pytest.raises(NotFoundError, match=r"model 'nope' is not loaded; expected the name of a served model"):
        repository.get("nope", None)
    with pytest.raises(NotFoundError, match=r"no loaded version '7'; loaded versions: \['1'\]"):
        repository.get(MODEL, "7")


def test_missing_models_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        start(ModelRepository(make_settings(tmp_path / "absent")))


def test_new_version_is_served_after_rescan_and_removed_one_unloaded(models_dir: Path, tiny_package_v2: Path) -> None:
    unloaded: list[tuple[str, str]] = []
    repository = ModelRepository(make_settings(models_dir), on_unload=lambda *ref: unloaded.append(ref))
    start(repository)
    assert repository.get(MODEL, None).version == "1"
    shutil.copytree(tiny_package_v2, models_dir / MODEL / "2")
    rescan(repository)
    assert repository.get(MODEL, None).version == "2"
    assert repository.loaded_versions(MODEL) == ("1", "2") and unloaded == []
    shutil.rmtree(models_dir / MODEL / "2")
    rescan(repository)
    assert repository.get(MODEL, None).version == "1"
    with pytest.raises(NotFoundError):
        repository.get(MODEL, "2")
    assert repository.loaded_count() == 1
    assert repository.loaded_versions(MODEL) == ("1",) and repository.loaded_versions("nope") == ()
    assert unloaded == [(MODEL, "2")]


def test_changed_package_replaces_the_old_one(models_dir: Path, tiny_package_v2: Path) -> None:
    repository = ModelRepository(make_settings(models_dir))
    start(repository)
    before = probabilities(repository)
    replace_package(models_dir / MODEL / "1", tiny_package_v2)
    rescan(repository)
    after = probabilities(repository, "1")
    assert repository.get(MODEL, "1").predictor.manifest.version == "2"  # the new files, served as dir version 1
    assert not np.allclose(before, after)


def replace_package(target: Path, source: Path) -> None:
    for file_name in (DETERMINISTIC_FILE, MC_FILE, MANIFEST_FILE):
        shutil.copyfile(source / file_name, target / file_name)


def corrupt_mc(package: Path) -> None:
    data = bytearray((package / MC_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (package / MC_FILE).write_bytes(bytes(data))


def truncate_deterministic(package: Path) -> None:
    data = (package / DETERMINISTIC_FILE).read_bytes()
    (package / DETERMINISTIC_FILE).write_bytes(data[: len(data) // 2])


def nan_deterministic_graph(package: Path) -> None:
    """A deterministic.onnx that loads, matches the manifest (listed SHA-256 too) and answers NaN."""
    from onnx import TensorProto, helper, numpy_helper

    manifest = json.loads((package / MANIFEST_FILE).read_text())
    nan_weights = numpy_helper.from_array(np.full((64, 10), np.nan, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "nan", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 10]) for name in ("logits", "probabilities")],
        [nan_weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", manifest["onnx"]["opset"])])
    model.ir_version = manifest["onnx"]["ir_version"]
    data = model.SerializeToString()
    (package / DETERMINISTIC_FILE).write_bytes(data)
    manifest["files"][DETERMINISTIC_FILE] = asdict(data_digest(data))
    (package / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [(corrupt_mc, "SHA-256"), (truncate_deterministic, "bytes"), (nan_deterministic_graph, "test inference")],
)
def test_broken_package_is_rejected_and_the_old_one_keeps_serving(
    models_dir: Path, tiny_package_v2: Path, caplog: pytest.LogCaptureFixture, breakage, reason: str
) -> None:
    repository = ModelRepository(make_settings(models_dir))
    start(repository)
    serving = repository.get(MODEL, "1")
    before = probabilities(repository)
    replace_package(models_dir / MODEL / "1", tiny_package_v2)
    breakage(models_dir / MODEL / "1")
    with caplog.at_level(logging.WARNING, logger="dropnet.server.repository"):
        rescan(repository)
        rescan(repository)  # unchanged files are not retried
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "rejected model package" in warnings[0].getMessage() and reason in warnings[0].getMessage()
    assert "version 1 keeps serving" in warnings[0].getMessage()
    assert repository.get(MODEL, "1") is serving
    np.testing.assert_array_equal(probabilities(repository), before)
    replace_package(models_dir / MODEL / "1", tiny_package_v2)  # fixed: retried because its files changed
    rescan(repository)
    assert repository.get(MODEL, "1").predictor.manifest.version == "2"


def test_model_with_only_broken_packages_is_listed_but_not_ready(models_dir: Path, tiny_package: Path) -> None:
    broken = models_dir / "broken" / "3"
    shutil.copytree(tiny_package, broken)
    corrupt_mc(broken)
    repository = ModelRepository(make_settings(models_dir))
    start(repository)
    assert repository.list_models() == [ModelRef("broken", ("3",), None, False), ModelRef(MODEL, ("1",), "1", True)]
    assert not repository.ready()
    assert not repository.model_ready("broken", None)


def test_hidden_directories_are_skipped(models_dir: Path, tiny_package: Path) -> None:
    shutil.copytree(tiny_package, models_dir / ".staging")
    shutil.copytree(tiny_package, models_dir / MODEL / ".2")
    repository = ModelRepository(make_settings(models_dir))
    start(repository)
    assert repository.list_models() == [ModelRef(MODEL, ("1",), "1", True)]


def test_package_written_during_loading_is_retried_on_next_scan(
    models_dir: Path, tiny_package_v2: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged = models_dir / MODEL / "2"
    shutil.copytree(tiny_package_v2, staged)
    real_load = Predictor.load
    writes = iter([lambda: (staged / MC_FILE).write_bytes((tiny_package_v2 / MC_FILE).read_bytes())])

    def load_while_a_writer_rewrites(path: Path, *args: object) -> Predictor:
        predictor = real_load(path, *args)
        if Path(path) == staged:
            next(writes, lambda: None)()  # a writer replaces mc.onnx once, mid-load
        return predictor

    monkeypatch.setattr(Predictor, "load", staticmethod(load_while_a_writer_rewrites))
    repository = ModelRepository(make_settings(models_dir))
    start(repository)
    assert not repository.model_ready(MODEL, "2")  # its files changed under the loader: not trusted yet
    rescan(repository)
    assert repository.model_ready(MODEL, "2")


def test_a_scan_loads_a_few_packages_at_a_time_with_shared_out_threads(
    models_dir: Path, tiny_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for version in range(2, 6):
        shutil.copytree(tiny_package, models_dir / MODEL / str(version))
    real_load = Predictor.load
    loading = threading.Condition()
    active, most, threads = [0], [0], []

    def load(path: Path, device: str, intra_op_threads: int | None, *args: object) -> Predictor:
        with loading:
            active[0] += 1
            most[0] = max(most[0], active[0])
            loading.notify_all()
            # hold the slot until one load more than allowed has joined (it never should) or 0.5 s pass
            loading.wait_for(lambda: active[0] > MAX_CONCURRENT_LOADS, timeout=0.5)
        try:
            threads.append(intra_op_threads)
            return real_load(path, device, intra_op_threads, *args)
        finally:
            with loading:
                active[0] -= 1

    monkeypatch.setattr(Predictor, "load", staticmethod(load))
    settings = make_settings(models_dir, inference_workers=2)
    repository = ModelRepository(settings)
    start(repository)
    assert repository.loaded_versions(MODEL) == ("1", "2", "3", "4", "5")
    assert most[0] <= MAX_CONCURRENT_LOADS == 2
    assert threads == [settings.session_threads] * 5
