"""Read a model package from disk and verify it against its manifest (no onnxruntime here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dropnet.core.errors import ModelPackageError
from dropnet.core.fileio import read_json
from dropnet.core.manifest import DETERMINISTIC_FILE, MANIFEST_FILE, MC_FILE, check_manifest, data_digest


@dataclass(frozen=True)
class ModelPackage:
    """A verified package: its parsed manifest and the bytes of both graphs."""

    path: Path
    manifest: dict[str, Any]
    deterministic: bytes
    mc: bytes


def read_package(model_dir: str | Path) -> ModelPackage:
    """Load ``model_dir``, refusing a missing or malformed manifest and missing or altered ONNX files."""
    model_dir = Path(model_dir)
    manifest_path = model_dir / MANIFEST_FILE
    if not model_dir.is_dir():
        raise ModelPackageError(
            f"{model_dir} is not a model package: expected a directory holding "
            f"{MANIFEST_FILE}, {DETERMINISTIC_FILE} and {MC_FILE}"
        )
    if not manifest_path.is_file():
        raise ModelPackageError(f"{model_dir} is not a model package: {MANIFEST_FILE} is missing")
    raw = read_json(manifest_path, ModelPackageError)
    manifest = check_manifest(raw, str(manifest_path))
    files = manifest["files"]
    return ModelPackage(
        model_dir,
        manifest,
        _read_listed_file(model_dir, DETERMINISTIC_FILE, files[DETERMINISTIC_FILE]),
        _read_listed_file(model_dir, MC_FILE, files[MC_FILE]),
    )


def _read_listed_file(model_dir: Path, name: str, expected: dict[str, Any]) -> bytes:
    """The bytes of ``name`` after checking them against the manifest's size and SHA-256."""
    path = model_dir / name
    if not path.is_file():
        raise ModelPackageError(f"{path} is missing; the manifest lists it ({expected['bytes']} bytes)")
    data = path.read_bytes()
    actual = data_digest(data)
    if actual["bytes"] != expected["bytes"]:
        raise ModelPackageError(
            f"{path} has {actual['bytes']} bytes, the manifest expects {expected['bytes']} (truncated or replaced?)"
        )
    if actual["sha256"] != expected["sha256"]:
        raise ModelPackageError(
            f"{path} has SHA-256 {actual['sha256']}, the manifest expects {expected['sha256']} (corrupted or replaced?)"
        )
    return data
