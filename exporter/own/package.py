"""Your own model to a model package: ``export_module`` (an nn.Module) and ``export_onnx`` (an ONNX file).

Both write the format ``dropnet export RUN_DIR`` writes (dropnet.exporter.write): manifest
``dropnet-model/2`` with the task, the class labels or target names, every dropout site and the
input spec, and the two graphs, after every export gate passed (dropnet.exporter.own) and both
graphs answered the example rows through the serving path's sessions. A module without a
dropout site is refused: mc.onnx would have nothing to sample.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from dropnet.core import manifest as contract
from dropnet.core.errors import ModelPackageError
from dropnet.core.outputs import Task
from dropnet.exporter.ort_check import PARITY_ROWS, check_outputs
from dropnet.exporter.own.build import OwnGraphs, build_own_graphs, parse_task
from dropnet.exporter.own.discover import Tolerance
from dropnet.exporter.own.inputs import example_rows, input_spec, spec_of
from dropnet.exporter.own.onnx_import import build_onnx_graphs
from dropnet.exporter.write import check_destination, check_identity, draft_manifest, write_package

log = logging.getLogger(__name__)

DEFAULT_TARGET = "y{}"
"""Name of regression target d when none are given ("y0", "y1", …); classes default to "0", "1", …."""


def export_module(
    module: nn.Module,
    example_input: torch.Tensor,
    out_dir: str | Path,
    *,
    name: str,
    version: str = "1",
    task: Task | str = Task.CLASSIFICATION,
    classes: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    max_samples: int = contract.MAX_MC_SAMPLES,
    value_range: Sequence[float] | None = None,
    tolerance: Tolerance = Tolerance(),
    source: Mapping[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Write the model package of ``module`` to ``out_dir`` and return ``out_dir``.

    ``example_input``: rows [B, …], float32 or int64, that the module accepts; the gates run on
    them and one row's shape becomes the package's input shape. ``classes`` (classification)
    default to "0".."C-1", ``targets`` (regression) to "y0".."y{D-1}"; their number must match
    the module's output width. ``value_range``: see dropnet.exporter.own.inputs (int64 inputs
    need one unless the module has an ``nn.Embedding``). ``max_samples`` bounds T (lowered to the
    noise scheme's limit). ``source``: how the module was made (the CLI records the factory and
    the weights file), kept in the manifest's ``source_run``. An existing package is replaced
    only with ``force``.
    """
    out_dir, task = Path(out_dir), parse_task(task)
    _check_request(out_dir, name, version, max_samples, force)
    labels = _given_labels(task, classes, targets)
    spec = spec_of(example_input, value_range, module)
    graphs = build_own_graphs(module, example_input, task=task, tolerance=tolerance)
    kind = type(module)
    made = {"exporter": "export_module", "module": f"{kind.__module__}.{kind.__qualname__}", **(source or {})}
    architecture = {"module": made["module"], "parameters": sum(p.numel() for p in module.parameters())}
    return _write(
        out_dir, graphs, spec, example_input.detach().numpy(), made, architecture, name=name, version=version,
        task=task, labels=labels, max_samples=max_samples, tolerance=tolerance, force=force,
    )


def export_onnx(
    onnx_path: str | Path,
    out_dir: str | Path,
    *,
    name: str,
    version: str = "1",
    task: Task | str = Task.CLASSIFICATION,
    classes: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    max_samples: int = contract.MAX_MC_SAMPLES,
    value_range: Sequence[float] | None = None,
    tolerance: Tolerance = Tolerance(),
    force: bool = False,
) -> Path:
    """Write the model package of the ONNX file ``onnx_path`` (its ``Dropout`` nodes mark the sites).

    As :func:`export_module`; the input's shape and dtype are the file's, and an int64 input
    needs ``value_range``.
    """
    onnx_path, out_dir, task = Path(onnx_path), Path(out_dir), parse_task(task)
    _check_request(out_dir, name, version, max_samples, force)
    labels = _given_labels(task, classes, targets)
    graphs = build_onnx_graphs(onnx_path, task=task, tolerance=tolerance)
    spec = input_spec(*_graph_input(graphs.deterministic), value_range)
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    made = {"exporter": "export_onnx", "onnx": {"file": onnx_path.name, "sha256": digest}}
    architecture = {"onnx_file": onnx_path.name, "dropout_sites": len(graphs.sites)}
    return _write(
        out_dir, graphs, spec, example_rows(spec, PARITY_ROWS), made, architecture, name=name, version=version,
        task=task, labels=labels, max_samples=max_samples, tolerance=tolerance, force=force,
    )


def _check_request(out_dir: Path, name: str, version: str, max_samples: int, force: bool) -> None:
    """The checks of the package that need no graph, made before the export's expensive part."""
    check_identity(name, version)
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise ModelPackageError(f"max_samples must be a positive integer, got {max_samples!r}")
    check_destination(out_dir, force)


def _write(
    out_dir: Path,
    graphs: OwnGraphs,
    spec: contract.InputSpec,
    x: np.ndarray,
    made: dict[str, Any],
    architecture: dict[str, Any],
    *,
    name: str,
    version: str,
    task: Task,
    labels: tuple[str, ...] | None,
    max_samples: int,
    tolerance: Tolerance,
    force: bool,
) -> Path:
    """The package of ``graphs``, checked on the rows ``x``, through the one package writer."""
    width = _width(graphs.deterministic)
    names = _labels(task, width, labels)
    gates = {
        "deterministic_max_abs_error": graphs.gates.deterministic,
        "samples_max_abs_error": graphs.gates.samples,
        "tolerance": {"atol": tolerance.atol, "rtol": tolerance.rtol},
    }
    draft = draft_manifest(
        name=name,
        version=version,
        source_run={**made, "gates": gates},
        input=spec,
        architecture=architecture,
        sites=tuple(contract.DropoutSite(**site.manifest_entry()) for site in graphs.sites),  # type: ignore[arg-type]
        task=task,
        classes=names if task is Task.CLASSIFICATION else (),
        targets=names if task is Task.REGRESSION else (),
        max_samples=max_samples,
    )
    write_package(
        out_dir, draft, graphs.deterministic, graphs.mc, lambda det, mc: check_outputs(det, mc, task, x, width), force
    )
    log.info("exported %s version %s (%s, %d dropout sites) to %s", name, version, task.value, len(graphs.sites),
             out_dir)
    return out_dir


def _width(deterministic: onnx.ModelProto) -> int:
    """C or D: the last axis of the deterministic graph's first output."""
    return deterministic.graph.output[0].type.tensor_type.shape.dim[-1].dim_value


def _graph_input(proto: onnx.ModelProto) -> tuple[str, tuple[int, ...]]:
    """(numpy dtype name, one row's shape) of the graph's input ``x``."""
    tensor = proto.graph.input[0].type.tensor_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
    return dtype, tuple(d.dim_value for d in tensor.shape.dim[1:])


def _given_labels(task: Task, classes: Sequence[str] | None, targets: Sequence[str] | None) -> tuple[str, ...] | None:
    """The labels given for ``task`` (classes or targets), checked for form; None when not given."""
    given, key, other = (classes, "classes", targets) if task is Task.CLASSIFICATION else (targets, "targets", classes)
    if other is not None:
        raise ModelPackageError(
            f"{'targets' if key == 'classes' else 'classes'} are given for a {task.value} model; expected {key} "
            "(or neither)"
        )
    if given is None:
        return None
    if isinstance(given, str):
        raise ModelPackageError(f"{key} is the string {given!r}; expected a sequence of labels, one per output")
    labels = tuple(given)
    if not all(isinstance(label, str) and label.strip() for label in labels) or len(set(labels)) != len(labels):
        raise ModelPackageError(f"{key} {list(labels)[:10]} are not distinct non-empty strings; expected such labels")
    return labels


def _labels(task: Task, width: int, given: tuple[str, ...] | None) -> tuple[str, ...]:
    """The names along the output's last axis: ``given`` (one per output) or the defaults."""
    classification = task is Task.CLASSIFICATION
    if given is None:
        return tuple(str(i) if classification else DEFAULT_TARGET.format(i) for i in range(width))
    if len(given) != width:
        key, symbol = ("classes", "C") if classification else ("targets", "D")
        raise ModelPackageError(
            f"{len(given)} {key} given but the model's output has {width} ({symbol}); expected one label per output"
        )
    return given
