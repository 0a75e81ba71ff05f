"""Write a model package: the one writer behind every exporter (run directories, own modules, ONNX files).

An exporter checks its destination early (:func:`check_destination`), builds and checks its two
graphs, and hands them with a draft manifest (:func:`draft_manifest`) to :func:`write_package`.
That stamps the manifest's facts into both graphs' ``metadata_props``, runs the exporter's
onnxruntime check on the serialised graphs, seals the manifest (digests, T bound, activation bytes
per row and sample) and writes the package inside a temporary directory next to ``out_dir``,
renamed into place once complete, so no reader ever sees a half-written package.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
from onnx import helper

import dropnet
from dropnet.core import manifest as contract
from dropnet.core.errors import ModelPackageError
from dropnet.core.fileio import FILE_MODE, fsync_dir, fsync_tree
from dropnet.core.manifest import DETERMINISTIC_FILE, MANIFEST_FILE, MC_FILE, Manifest, onnx_metadata, seal_manifest
from dropnet.core.outputs import Task
from dropnet.exporter.graphs import IR_VERSION, OPSET, RNG_SCHEME
from dropnet.exporter.onnx_graph import merge_metadata
from dropnet.server.sessions import sample_bytes
from dropnet.trainer.rundir import versions

log = logging.getLogger(__name__)

GraphCheck = Callable[[bytes, bytes], None]
"""Checks (deterministic.onnx, mc.onnx) as serialised; raises ModelPackageError."""


def check_identity(name: str, version: str) -> None:
    """Refuse a package name or version that is not a non-empty string."""
    for field, value in (("name", name), ("version", version)):
        if not isinstance(value, str) or not value.strip():
            raise ModelPackageError(f"package {field} must be a non-empty string, got {value!r}")


def check_destination(
    out_dir: Path, force: bool, marker: str = MANIFEST_FILE, holds: str = "a model package", expected: str = ""
) -> None:
    """Refuse a destination that is a file, a non-empty directory without ``marker`` (the file that says it holds
    ``holds``), or one holding it without ``force``. ``expected`` names what the destination should be (default:
    a new or empty directory)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelPackageError(
            f"{out_dir} exists and is not a directory; expected {expected or 'a new or empty directory'}"
        )
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not (out_dir / marker).is_file():
        raise ModelPackageError(
            f"{out_dir} is a non-empty directory without {marker}; expected a new or empty directory "
            f"(an existing {holds.removeprefix('a ')} can be replaced with --force)"
        )
    if not force:
        raise ModelPackageError(f"{out_dir} already holds {holds}; pass --force to replace it")


def draft_manifest(
    *,
    name: str,
    version: str,
    source_run: Mapping[str, Any],
    input: contract.InputSpec,
    architecture: Mapping[str, Any],
    sites: tuple[contract.DropoutSite, ...],
    task: Task = Task.CLASSIFICATION,
    classes: tuple[str, ...] = (),
    targets: tuple[str, ...] = (),
    max_norm: tuple[float | None, ...] = (),
    metrics: Mapping[str, Any] | None = None,
    max_samples: int = contract.MAX_MC_SAMPLES,
) -> Manifest:
    """The draft manifest, with what every exporter records the same way: time, versions, ONNX, noise scheme."""
    draft = contract.build_manifest(
        name=name,
        version=version,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        dropnet_version=dropnet.__version__,
        versions={**versions(), "onnx": onnx.__version__, "onnxruntime": ort.__version__},
        source_run=source_run,
        input=input,
        architecture=architecture,
        dropout=contract.DropoutSpec(sites),
        max_norm=max_norm,
        onnx=contract.OnnxVersions(OPSET, IR_VERSION),
        rng=RNG_SCHEME,
        metrics=metrics or {},
        task=task,
        classes=classes,
        targets=targets,
    )
    return replace(draft, mc=replace(draft.mc, max_samples=max_samples))


def write_package(
    out_dir: Path, draft: Manifest, deterministic: onnx.ModelProto, mc: onnx.ModelProto, check: GraphCheck, force: bool
) -> Manifest:
    """Stamp, check, seal and atomically write the package of ``draft`` to ``out_dir``; return its manifest.

    Both graphs get :func:`onnx_metadata` of the draft added to their own ``metadata_props``;
    ``check`` runs on the serialised graphs; mc.onnx's ``rng_max_samples`` bounds T, and its
    activation bytes per row and sample (dropnet.server.sessions.sample_bytes) are recorded as
    ``mc.sample_bytes``.
    """
    metadata = onnx_metadata(draft)
    graphs = {DETERMINISTIC_FILE: deterministic, MC_FILE: mc}
    for proto in graphs.values():
        helper.set_model_props(proto, merge_metadata(metadata, _props(proto)))
    blobs = {file_name: proto.SerializeToString() for file_name, proto in graphs.items()}
    check(blobs[DETERMINISTIC_FILE], blobs[MC_FILE])
    per_sample = sample_bytes(blobs[MC_FILE], MC_FILE, draft.input)
    manifest = seal_manifest(draft, blobs, int(_props(mc)["rng_max_samples"]), per_sample)
    blobs[MANIFEST_FILE] = (json.dumps(manifest.to_dict(), indent=2) + "\n").encode()
    write_directory(out_dir, blobs, lambda destination: check_destination(destination, force))
    log.debug("wrote %s version %s to %s", manifest.name, manifest.version, out_dir)
    return manifest


def _props(proto: onnx.ModelProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in proto.metadata_props}


def write_directory(out_dir: Path, files: Mapping[str, bytes], check: Callable[[Path], None]) -> Path:
    """Write ``files`` (paths relative to ``out_dir``) into a temporary sibling of ``out_dir``, sync it, then rename
    it into place, replacing what ``out_dir`` held; returns the absolute ``out_dir``.

    ``check(out_dir)`` refuses a destination (e.g. :func:`check_destination`); it runs again just before the
    rename, since something may have appeared meanwhile. Files get ``FILE_MODE``, directories 0755. Durability
    follows ``dropnet.core.fileio``: the files and the staging directory are synced before the rename, the parent
    directory after it. On any failure the staging directory is removed and ``out_dir`` is untouched.
    """
    out_dir = Path(os.path.abspath(out_dir))  # so its parent is a real sibling directory, also for "."
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    except OSError as exc:
        raise ModelPackageError(f"cannot create the directory {out_dir}: {exc.strerror or exc}") from None
    try:
        for relative, data in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(FILE_MODE)
        for directory in (staging, *{(staging / relative).parent for relative in files}):
            directory.chmod(0o755)
        fsync_tree(staging)
        check(out_dir)
        if out_dir.is_dir() and any(out_dir.iterdir()):
            _swap_in(staging, out_dir)
        else:
            os.replace(staging, out_dir)  # also replaces an empty directory
        fsync_dir(out_dir.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Replace the existing package ``out_dir`` by ``staging``: the old one is moved aside, then deleted."""
    retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    os.replace(out_dir, retired)
    try:
        os.replace(staging, out_dir)
    except BaseException:
        os.replace(retired, out_dir)
        raise
    try:
        shutil.rmtree(retired)
    except OSError as exc:  # the new package is in place; only the old copy's clean-up failed
        log.warning("replaced %s, but could not delete its old copy %s: %s", out_dir, retired, exc)
