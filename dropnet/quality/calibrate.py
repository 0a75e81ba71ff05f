"""``calibrate_package``: fit one temperature per mode on a package's validation split and write a calibrated version.

The package runs in-process (dropnet.quality.predictions) on the validation split of its data
(dropnet.quality.datasets); τ is fitted by minimising the NLL per mode (dropnet.quality.temperature);
both graphs get τ folded in (dropnet.quality.fold_temperature) and are written, checked against the
source graphs in onnxruntime, as a new package version by the one package writer
(dropnet.exporter.write). The manifest's ``calibration`` records τ, the split and data, T and the
seed, and ECE/NLL before and after per mode; ``source_run.calibration`` the command and the data's
description with its file paths (provenance, hidden by servers unless they expose it).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from dropnet.core.errors import ConfigError, ModelPackageError
from dropnet.core.manifest import (
    CALIBRATION_METHODS,
    FORMAT,
    Calibration,
    FileDigest,
    Manifest,
    ModeCalibration,
    onnx_metadata,
)
from dropnet.core.outputs import Mode, Task
from dropnet.exporter.ort_check import PARITY_ROWS
from dropnet.exporter.write import check_destination, draft_manifest, write_package
from dropnet.quality import metrics
from dropnet.quality.datasets import package_split
from dropnet.quality.fold_temperature import check_folded, fold_deterministic, fold_mc
from dropnet.quality.predictions import Predictions, predict_package
from dropnet.quality.temperature import calibrated_probabilities, fit_temperature
from dropnet.server.package import read_package

log = logging.getLogger(__name__)

SPLIT = "val"
ECE_BINS = 15
VERSION_NAME = re.compile(r"[0-9]+")
"""A version directory of a model directory (``models/NAME/2``), as the server's repository numbers them."""


@dataclass(frozen=True)
class CalibrationResult:
    """The calibrated package written, and where it came from."""

    source: Path
    package: Path
    manifest: Manifest

    @property
    def calibration(self) -> Calibration:
        """The new manifest's calibration record."""
        assert self.manifest.calibration is not None
        return self.manifest.calibration


def calibrate_package(
    model_dir: str | Path,
    out_dir: str | Path | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    mc_samples: int = 50,
    seed: int = 0,
    force: bool = False,
) -> CalibrationResult:
    """Calibrate the classification package ``model_dir`` and write it to ``out_dir`` (see the module docstring).

    ``out_dir`` defaults to the next version of ``model_dir``'s model directory (``NAME/2`` from
    ``NAME/1``); ``data``/``data_dir`` replace the recorded run's data (required without one).
    A calibrated package is refused (calibrate its uncalibrated version instead), as is a
    regression package.
    """
    for name, value, low in (("mc_samples", mc_samples, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    model_dir = Path(model_dir)
    source = read_package(model_dir)
    manifest = source.manifest
    _check_calibratable(manifest, model_dir)
    out_dir = Path(out_dir) if out_dir is not None else next_version_dir(model_dir)
    if Path(os.path.abspath(out_dir)) == Path(os.path.abspath(model_dir)):
        raise ConfigError(f"--out {out_dir} is the package being calibrated; expected another directory")
    check_destination(out_dir, force)
    x, y, description = package_split(manifest, SPLIT, data, data_dir)
    predictions = predict_package(model_dir, x, y, mc_samples=mc_samples, seed=seed)
    modes = {
        Mode.DETERMINISTIC: _fit(predictions.det_logits, predictions.labels, Mode.DETERMINISTIC),
        Mode.MC: _fit(predictions.mc_log_samples, predictions.labels, Mode.MC),
    }
    taus = {mode: entry.temperature for mode, entry in modes.items()}
    graphs = {mode: onnx.load_from_string(blob) for mode, blob in source.graphs.items()}
    deterministic = fold_deterministic(graphs[Mode.DETERMINISTIC], taus[Mode.DETERMINISTIC])
    mc = fold_mc(graphs[Mode.MC], taus[Mode.MC])
    draft = _draft(manifest, out_dir, _record(manifest, modes, predictions, description), description)
    for proto in (deterministic, mc):
        props = {prop.key: prop.value for prop in proto.metadata_props}
        helper.set_model_props(proto, {**props, **onnx_metadata(draft)})  # the new version's facts, stamped anew
    rows = np.asarray(x[:PARITY_ROWS], dtype=manifest.input.dtype)
    written = write_package(
        out_dir, draft, deterministic, mc, lambda det, mc_blob: check_folded(source.graphs, det, mc_blob, taus, rows),
        force,
    )
    log.info("calibrated %s version %s (τ deterministic %.4g, MC %.4g) into %s", manifest.name, manifest.version,
             taus[Mode.DETERMINISTIC], taus[Mode.MC], out_dir)
    return CalibrationResult(model_dir, out_dir, written)


def next_version_dir(model_dir: Path) -> Path:
    """``NAME/<max + 1>`` for a package at ``NAME/<integer>``; else a ConfigError asking for ``--out``."""
    path = Path(os.path.abspath(model_dir))
    if not VERSION_NAME.fullmatch(path.name):
        raise ConfigError(
            f"{model_dir} is not a numbered version of a model directory (NAME/1, NAME/2, ...), so the calibrated "
            "package has no default place; expected --out DIR"
        )
    versions = [int(entry.name) for entry in path.parent.iterdir() if VERSION_NAME.fullmatch(entry.name)]
    return Path(model_dir).parent / str(max(versions) + 1)


def _check_calibratable(manifest: Manifest, model_dir: Path) -> None:
    if manifest.task is not Task.CLASSIFICATION:
        raise ModelPackageError(
            f"{model_dir} is a {manifest.task.value} package; temperature scaling is for classifiers, expected a "
            "classification package"
        )
    if manifest.calibration is not None:
        record = manifest.calibration
        raise ModelPackageError(
            f"{model_dir} is already calibrated (τ deterministic {record.deterministic.temperature:.4g}, MC "
            f"{record.mc.temperature:.4g}, from version {record.source_version}); expected an uncalibrated package: "
            f"calibrate version {record.source_version} again instead"
        )
    if manifest.format != FORMAT:
        raise ModelPackageError(
            f"{model_dir} is a {manifest.format} package; expected {FORMAT} (export it again with this dropnet)"
        )


def _fit(log_probs: np.ndarray, labels: np.ndarray, mode: Mode) -> ModeCalibration:
    """τ of one mode (rounded to the float32 the graph holds) and ECE/NLL before and after it."""
    tau = float(np.float32(fit_temperature(log_probs, labels)))
    before, after = (calibrated_probabilities(log_probs, t) for t in (1.0, tau))
    entry = ModeCalibration(
        temperature=tau,
        ece_before=metrics.ece(before, labels, ECE_BINS), ece_after=metrics.ece(after, labels, ECE_BINS),
        nll_before=metrics.nll(before, labels), nll_after=metrics.nll(after, labels),
    )
    log.info("%s: τ = %.4g, ECE %.2f%% → %.2f%%, NLL %.4f → %.4f", mode.value, tau, 100 * entry.ece_before,
             100 * entry.ece_after, entry.nll_before, entry.nll_after)
    return entry


def _record(
    manifest: Manifest, modes: Mapping[Mode, ModeCalibration], predictions: Predictions, description: Mapping[str, Any]
) -> Calibration:
    return Calibration(
        method=CALIBRATION_METHODS[0],
        deterministic=modes[Mode.DETERMINISTIC],
        mc=modes[Mode.MC],
        split=SPLIT,
        examples=len(predictions.labels),
        dataset=Path(str(description["name"])).name,
        data_files=tuple(FileDigest(entry["sha256"], entry["bytes"]) for entry in description["sources"]),
        mc_samples=predictions.mc_samples,
        seed=predictions.seed,
        ece_bins=ECE_BINS,
        source_version=manifest.version,
        source_files=manifest.files,
    )


def _draft(manifest: Manifest, out_dir: Path, calibration: Calibration, description: Mapping[str, Any]) -> Manifest:
    """The new version's draft: the source's facts, this export's time and versions, and the calibration."""
    name = Path(os.path.abspath(out_dir)).name
    version = name if VERSION_NAME.fullmatch(name) else f"{manifest.version}-calibrated"
    provenance = {"command": sys.argv, "data": description}
    draft = draft_manifest(
        name=manifest.name, version=version, source_run={**manifest.source_run, "calibration": provenance},
        input=manifest.input, architecture=manifest.architecture, sites=manifest.dropout.sites, task=manifest.task,
        classes=manifest.classes, max_norm=manifest.max_norm, metrics=manifest.metrics,
        max_samples=manifest.mc.max_samples,
    )
    return replace(draft, onnx=manifest.onnx, calibration=calibration)
