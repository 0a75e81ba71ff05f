"""Read a model package from disk and verify it against its manifest (no onnxruntime here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dropnet.core.errors import ModelPackageError
from dropnet.core.fileio import read_json
from dropnet.core.manifest import GRAPH_FILES, MANIFEST_FILE, ONNX_FILES, FileDigest, Manifest, data_digest
from dropnet.core.outputs import Mode


@dataclass(frozen=True)
class ModelPackage:
    """A verified package: its manifest and the bytes of both graphs."""

    path: Path
    manifest: Manifest
    graphs: Mapping[Mode, bytes]
    """The serialised graph of each mode."""


def read_package(model_dir: str | Path) -> ModelPackage:
    """Load ``model_dir``, refusing a missing or malformed manifest and missing or altered ONNX files."""
    model_dir = Path(model_dir)
    manifest_path = model_dir / MANIFEST_FILE
    if not model_dir.is_dir():
        raise ModelPackageError(
            f"{model_dir} is not a model package: expected a directory holding "
            f"{MANIFEST_FILE}, {' and '.join(ONNX_FILES)}"
        )
    if not manifest_path.is_file():
        raise ModelPackageError(f"{model_dir} is not a model package: {MANIFEST_FILE} is missing")
    manifest = Manifest.from_dict(read_json(manifest_path, ModelPackageError), str(manifest_path))
    graphs = {
        mode: _read_listed_file(model_dir, file_name, manifest.files[file_name])
        for mode, file_name in GRAPH_FILES.items()
    }
    return ModelPackage(model_dir, manifest, graphs)


def _read_listed_file(model_dir: Path, name: str, expected: FileDigest) -> bytes:
    """The bytes of ``name`` after checking them against the manifest's size and SHA-256."""
    path = model_dir / name
    if not path.is_file():
        raise ModelPackageError(f"{path} is missing; the manifest lists it ({expected.bytes} bytes)")
    data = path.read_bytes()
    actual = data_digest(data)
    if actual.bytes != expected.bytes:
        raise ModelPackageError(
            f"{path} has {actual.bytes} bytes, the manifest expects {expected.bytes} (truncated or replaced?)"
        )
    if actual.sha256 != expected.sha256:
        raise ModelPackageError(
            f"{path} has SHA-256 {actual.sha256}, the manifest expects {expected.sha256} (corrupted or replaced?)"
        )
    return data
