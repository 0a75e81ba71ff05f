"""Export a run directory to a model package: manifest.json, deterministic.onnx, mc.onnx.

The graphs are built from the run's network, checked in onnxruntime against it, and written by
dropnet.exporter.write (atomically: no reader ever sees a half-written package).
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from dropnet.core import manifest as contract
from dropnet.exporter.graphs import build_deterministic, build_mc, verify_model
from dropnet.exporter.ort_check import check_in_onnxruntime
from dropnet.exporter.write import check_destination, check_identity, draft_manifest, write_package
from dropnet.trainer.dropout import Dropout
from dropnet.trainer.models import InputSpec
from dropnet.trainer.rundir import load_run, read_config

log = logging.getLogger(__name__)


def export_package(
    run_dir: str | Path, out_dir: str | Path, name: str | None = None, version: str = "1", force: bool = False
) -> Path:
    """Write the model package of ``run_dir`` to ``out_dir`` and return ``out_dir``.

    ``name`` defaults to the run directory's name. An existing non-empty package is replaced only
    with ``force``; a non-empty directory that is not a package is never replaced.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    check_destination(out_dir, force)
    name = name if name is not None else run_dir.resolve().name
    check_identity(name, version)
    config, spec, model = load_run(run_dir)
    run_config = read_config(run_dir)
    draft = draft_manifest(
        name=name,
        version=version,
        source_run={key: run_config.get(key) for key in ("config", "created", "command")},
        input=_input_spec(spec),
        classes=tuple(spec.class_labels),
        architecture=run_config["config"]["model"],
        sites=_dropout_sites(model),
        max_norm=tuple(config.model.resolved_max_norm()),
        metrics=run_config.get("final_metrics") or {},
    )
    deterministic, mc = build_deterministic(model, spec, {}), build_mc(model, spec, {})
    for proto in (deterministic, mc):
        verify_model(proto)
    write_package(
        out_dir, draft, deterministic, mc, lambda det, mc_blob: check_in_onnxruntime(det, mc_blob, model, spec), force
    )
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
