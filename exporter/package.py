"""Export a run directory to a model package: manifest.json, deterministic.onnx, mc.onnx.

The package is built and checked in full (ONNX checker, onnxruntime load, parity with the torch
network) inside a temporary directory next to ``out_dir`` and then renamed into place, so no
reader ever sees a half-written package.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import onnx
import onnxruntime as ort
from torch import nn

import dropnet
from dropnet.core import manifest as contract
from dropnet.core.errors import ModelPackageError
from dropnet.core.fileio import fsync_dir, fsync_tree
from dropnet.core.manifest import DETERMINISTIC_FILE, MANIFEST_FILE, MC_FILE, onnx_metadata, seal_manifest
from dropnet.exporter.graphs import IR_VERSION, OPSET, RNG_SCHEME, build_deterministic, build_mc, verify_model
from dropnet.exporter.ort_check import check_in_onnxruntime
from dropnet.trainer.dropout import Dropout
from dropnet.trainer.models import InputSpec
from dropnet.trainer.rundir import load_run, read_config, versions

log = logging.getLogger(__name__)


def export_package(
    run_dir: str | Path, out_dir: str | Path, name: str | None = None, version: str = "1", force: bool = False
) -> Path:
    """Write the model package of ``run_dir`` to ``out_dir`` and return ``out_dir``.

    ``name`` defaults to the run directory's name. An existing non-empty package is replaced only
    with ``force``; a non-empty directory that is not a package is never replaced.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    _check_destination(out_dir, force)
    name = name if name is not None else run_dir.resolve().name
    for field, value in (("name", name), ("version", version)):
        if not isinstance(value, str) or not value.strip():
            raise ModelPackageError(f"package {field} must be a non-empty string, got {value!r}")
    config, spec, model = load_run(run_dir)
    run_config = read_config(run_dir)
    draft = contract.build_manifest(
        name=name,
        version=version,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        dropnet_version=dropnet.__version__,
        versions={**versions(), "onnx": onnx.__version__, "onnxruntime": ort.__version__},
        source_run={key: run_config.get(key) for key in ("config", "created", "command")},
        input=_input_spec(spec),
        classes=tuple(spec.class_labels),
        architecture=run_config["config"]["model"],
        dropout=contract.DropoutSpec(_dropout_sites(model)),
        max_norm=tuple(config.model.resolved_max_norm()),
        onnx=contract.OnnxVersions(OPSET, IR_VERSION),
        rng=RNG_SCHEME,
        metrics=run_config.get("final_metrics") or {},
    )
    metadata = onnx_metadata(draft)
    graphs = {
        DETERMINISTIC_FILE: build_deterministic(model, spec, metadata),
        MC_FILE: build_mc(model, spec, metadata),
    }
    for proto in graphs.values():
        verify_model(proto)
    blobs = {file_name: proto.SerializeToString() for file_name, proto in graphs.items()}
    check_in_onnxruntime(blobs[DETERMINISTIC_FILE], blobs[MC_FILE], model, spec)
    mc_props = {prop.key: prop.value for prop in graphs[MC_FILE].metadata_props}
    manifest = seal_manifest(draft, blobs, int(mc_props["rng_max_samples"]))
    blobs[MANIFEST_FILE] = (json.dumps(manifest.to_dict(), indent=2) + "\n").encode()
    _write_directory(out_dir, blobs, force)
    log.info("exported %s version %s from %s to %s", name, version, run_dir, out_dir)
    return out_dir


def _input_spec(spec: InputSpec) -> contract.InputSpec:
    """The package's input: raw float32 values of the run's shape and range, standardised in the graphs."""
    return contract.InputSpec(
        name=contract.INPUT_NAME,
        shape=spec.shape,
        dtype="float32",
        value_range=spec.value_range,
        normalisation=contract.Normalisation(spec.mean, spec.std, in_graph=True),
    )


def _dropout_sites(model: nn.Sequential) -> tuple[contract.DropoutSite, ...]:
    """Every dropout module of ``model``, by its index in the Sequential: elementwise masks."""
    return tuple(
        contract.DropoutSite(str(position), module.flavour, module.retain, "element")
        for position, module in enumerate(model)
        if isinstance(module, Dropout)
    )


def _check_destination(out_dir: Path, force: bool) -> None:
    """Refuse a destination that is a file, a non-empty non-package, or a package without ``force``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelPackageError(f"{out_dir} exists and is not a directory; expected a new or empty directory")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not (out_dir / MANIFEST_FILE).is_file():
        raise ModelPackageError(
            f"{out_dir} is a non-empty directory without {MANIFEST_FILE}; expected a new or empty directory "
            "(an existing package can be replaced with --force)"
        )
    if not force:
        raise ModelPackageError(f"{out_dir} already holds a model package; pass --force to replace it")


def _write_directory(out_dir: Path, files: dict[str, bytes], force: bool) -> None:
    """Write ``files`` into a temporary sibling of ``out_dir``, sync it, then rename it into place.

    Durability follows ``dropnet.core.fileio``: the files and the staging directory are synced before
    the rename, the parent directory after it.
    """
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    except OSError as exc:
        raise ModelPackageError(f"cannot create the package directory {out_dir}: {exc.strerror or exc}") from None
    try:
        for file_name, data in files.items():
            (staging / file_name).write_bytes(data)
        staging.chmod(0o755)
        fsync_tree(staging)
        _check_destination(out_dir, force)
        if out_dir.is_dir() and any(out_dir.iterdir()):
            _swap_in(staging, out_dir)
        else:
            os.replace(staging, out_dir)  # also replaces an empty directory
        fsync_dir(out_dir.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Replace the existing package ``out_dir`` by ``staging``: the old one is moved aside, then deleted."""
    retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    os.replace(out_dir, retired)
    try:
        os.replace(staging, out_dir)
    except BaseException:
        os.replace(retired, out_dir)
        raise
    shutil.rmtree(retired)
