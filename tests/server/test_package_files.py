"""Package files must be regular files inside the package, at load and at hot reload.

A symbolic link (to a file outside the package, or even beside it), a FIFO or a directory in place
of a package file is refused with a ModelPackageError naming it, and so is a manifest ``files``
entry that is a path. The package directory itself may be a symbolic link (a release switch).
"""

from __future__ import annotations

import asyncio
import json
import re
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from dropnet.core.errors import ModelPackageError
from dropnet.core.manifest import DETERMINISTIC_FILE, MANIFEST_FILE, MC_FILE
from dropnet.server.predictor import Predictor
from dropnet.server.repository import ModelRepository, fingerprint
from tests.server.helpers import MODEL, digits_rows, make_settings

PACKAGE_FILES = (MANIFEST_FILE, DETERMINISTIC_FILE, MC_FILE)
X = digits_rows(2, seed=5)


@pytest.fixture
def package(tiny_package: Path, tmp_path: Path) -> Path:
    """A copy of the tiny package that a test may alter."""
    return Path(shutil.copytree(tiny_package, tmp_path / "package"))


def link_to_copy(package: Path, file_name: str, target_dir: Path) -> Path:
    """Move ``file_name`` of ``package`` into ``target_dir`` and leave a symbolic link to it in its place."""
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"real-{file_name}"
    os.replace(package / file_name, target)
    (package / file_name).symlink_to(target)
    return target


@pytest.mark.parametrize("file_name", PACKAGE_FILES)
@pytest.mark.parametrize("where", ["outside", "inside"])
def test_a_symlinked_package_file_is_refused_at_load(package: Path, tmp_path: Path, file_name: str, where: str) -> None:
    target = link_to_copy(package, file_name, tmp_path / "elsewhere" if where == "outside" else package)
    message = rf"{package / file_name} is a symbolic link \(to {target}\); expected a regular file inside the package"
    with pytest.raises(ModelPackageError, match=message):
        Predictor.load(package, device="cpu")


def test_a_dangling_manifest_link_is_refused_by_name(package: Path) -> None:
    (package / MANIFEST_FILE).unlink()
    (package / MANIFEST_FILE).symlink_to(package.parent / "gone.json")
    with pytest.raises(ModelPackageError, match=f"{MANIFEST_FILE} is a symbolic link"):
        Predictor.load(package, device="cpu")


@pytest.mark.parametrize(("make", "kind"), [(os.mkfifo, "a named pipe (FIFO)"), (os.mkdir, "a directory")])
def test_a_package_file_that_is_not_a_regular_file_is_refused(package: Path, make, kind: str) -> None:
    (package / MC_FILE).unlink()
    make(package / MC_FILE)
    with pytest.raises(ModelPackageError, match=re.escape(f"{package / MC_FILE} is {kind}; expected a regular file")):
        Predictor.load(package, device="cpu")


@pytest.mark.parametrize("entry", ["../mc.onnx", "/etc/passwd", "graphs/mc.onnx", "..", "C:\\mc.onnx", "mc.onnx/"])
def test_a_manifest_file_entry_that_is_a_path_is_refused(package: Path, entry: str) -> None:
    manifest = json.loads((package / MANIFEST_FILE).read_text())
    manifest["files"][entry] = manifest["files"][MC_FILE]
    (package / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelPackageError) as caught:
        Predictor.load(package, device="cpu")
    assert str(caught.value) == (
        f"{package / MANIFEST_FILE}: files entry {entry!r} is a path; expected the plain name of a file inside "
        f"the package, one of ['{DETERMINISTIC_FILE}', '{MC_FILE}']"
    )


def test_a_symlinked_package_directory_is_served(tiny_package: Path, tmp_path: Path) -> None:
    release = Path(shutil.copytree(tiny_package, tmp_path / "releases" / "r1"))
    models = tmp_path / "models"
    (models / MODEL).mkdir(parents=True)
    (models / MODEL / "1").symlink_to(release, target_is_directory=True)
    repository = ModelRepository(make_settings(models))
    asyncio.run(repository.start())
    assert repository.model_ready(MODEL, "1")
    expected = Predictor.load(tiny_package, device="cpu").run_deterministic(X)["probabilities"]
    np.testing.assert_array_equal(repository.get(MODEL, "1").predictor.run_deterministic(X)["probabilities"], expected)


def test_a_file_swapped_for_a_link_to_itself_changes_the_fingerprint(package: Path) -> None:
    before = fingerprint(package)
    link_to_copy(package, MC_FILE, package)  # the link leads to the very same inode, mtime and size
    after = fingerprint(package)
    assert after[0] == before[0] and after[2] != before[2]


@pytest.mark.parametrize("file_name", PACKAGE_FILES)
def test_a_file_swapped_for_a_link_is_refused_on_reload_and_the_old_version_keeps_serving(
    models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, file_name: str
) -> None:
    repository = ModelRepository(make_settings(models_dir))
    asyncio.run(repository.start())
    serving = repository.get(MODEL, "1")
    before = serving.predictor.run_deterministic(X)["probabilities"]
    link_to_copy(models_dir / MODEL / "1", file_name, tmp_path / "outside")
    with caplog.at_level(logging.WARNING, logger="dropnet.server.repository"):
        asyncio.run(repository.scan())
    [warning] = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert "rejected model package" in warning and f"{file_name} is a symbolic link" in warning
    assert "version 1 keeps serving" in warning
    assert repository.get(MODEL, "1") is serving
    np.testing.assert_array_equal(repository.get(MODEL, "1").predictor.run_deterministic(X)["probabilities"], before)


def test_a_new_version_with_a_linked_file_is_not_served(
    models_dir: Path, tiny_package: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repository = ModelRepository(make_settings(models_dir))
    asyncio.run(repository.start())
    staged = Path(shutil.copytree(tiny_package, models_dir / MODEL / "2"))
    link_to_copy(staged, DETERMINISTIC_FILE, tmp_path / "outside")
    with caplog.at_level(logging.WARNING, logger="dropnet.server.repository"):
        asyncio.run(repository.scan())
    assert repository.loaded_versions(MODEL) == ("1",) and repository.get(MODEL, None).version == "1"
    assert any("is a symbolic link" in record.getMessage() for record in caplog.records)
