"""The output table: every output a model package can produce, per task and mode.

This table is the single source of the output names, dtypes, shapes and meanings. The graph
builders name their ONNX outputs from it, the Predictor and the server's data plane validate
requested outputs against it, both gRPC codecs describe outputs in metadata from it, and the CLI
and the proto documentation list it. Adding a statistic means adding one row here (and computing
it in the graph that produces it).

Shapes are written in symbols: ``B`` rows in the batch, ``C`` classes, ``D`` regression targets,
``T`` Monte-Carlo samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Task(str, Enum):
    """What a model predicts."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"


class Mode(str, Enum):
    """Which graph answers: the weight-scaled deterministic one or the Monte-Carlo dropout one."""

    DETERMINISTIC = "deterministic"
    MC = "mc"


@dataclass(frozen=True)
class OutputSpec:
    """One output of one mode of one task."""

    name: str
    dtype: str
    """numpy dtype name of the values ("float32" or "int64")."""
    shape: tuple[str, ...]
    """Dimensions in symbols: B rows, C classes, D targets, T samples."""
    description: str
    in_graph: bool = True
    """False for an output the engine derives from the graph's outputs (``predicted_class``)."""
    by_default: bool = True
    """False for an output returned only when a request names it (``samples``: T times larger)."""
    column: str | None = None
    """Heading of the output in per-row tables (``dropnet predict``); None: not tabulated. A [B, C]
    output is tabulated at the row's predicted class."""

    def dims(self, sizes: dict[str, int]) -> list[int]:
        """The concrete shape for ``sizes`` (e.g. ``{"B": 4, "C": 10}``); a symbol not in it becomes -1."""
        return [sizes.get(symbol, -1) for symbol in self.shape]


PREDICTED_CLASS = "predicted_class"
SAMPLES = "samples"
"""Outputs every consumer treats specially: one is derived from probabilities, one has rows on axis 1."""

_CLASSIFICATION = {
    Mode.DETERMINISTIC: (
        OutputSpec(
            "probabilities", "float32", ("B", "C"), "softmax of the weight-scaled network's logits", column="confidence"
        ),
        OutputSpec(PREDICTED_CLASS, "int64", ("B",), "argmax of probabilities", in_graph=False),
        OutputSpec("logits", "float32", ("B", "C"), "logits of the weight-scaled network"),
    ),
    Mode.MC: (
        OutputSpec(
            "probabilities", "float32", ("B", "C"), "mean over the T samples of each sample's softmax",
            column="confidence",
        ),
        OutputSpec(PREDICTED_CLASS, "int64", ("B",), "argmax of the mean probabilities", in_graph=False),
        OutputSpec(
            "std", "float32", ("B", "C"), "standard deviation over the T samples of each class probability",
            column="std",
        ),
        OutputSpec("predictive_entropy", "float32", ("B",), "entropy of the mean prediction, nats", column="entropy"),
        OutputSpec(
            "mutual_information", "float32", ("B",),
            "predictive entropy minus the mean entropy of the samples (BALD), nats: model uncertainty",
            column="mutual_info",
        ),
        OutputSpec(SAMPLES, "float32", ("T", "B", "C"), "each sample's softmax", by_default=False),
    ),
}

_REGRESSION = {
    Mode.DETERMINISTIC: (
        OutputSpec("prediction", "float32", ("B", "D"), "output of the weight-scaled network", column="prediction"),
    ),
    Mode.MC: (
        OutputSpec("mean", "float32", ("B", "D"), "mean over the T samples", column="mean"),
        OutputSpec("std", "float32", ("B", "D"), "standard deviation over the T samples", column="std"),
        OutputSpec(SAMPLES, "float32", ("T", "B", "D"), "each sample's output", by_default=False),
    ),
}

OUTPUT_TABLE: dict[Task, dict[Mode, tuple[OutputSpec, ...]]] = {
    Task.CLASSIFICATION: _CLASSIFICATION,
    Task.REGRESSION: _REGRESSION,
}


def output_specs(task: Task | str, mode: Mode | str) -> tuple[OutputSpec, ...]:
    """Every output of ``mode`` for ``task``, in the table's order."""
    return OUTPUT_TABLE[Task(task)][Mode(mode)]


def output_names(task: Task | str, mode: Mode | str) -> tuple[str, ...]:
    """Names of every output of ``mode`` for ``task``."""
    return tuple(spec.name for spec in output_specs(task, mode))


def default_output_names(task: Task | str, mode: Mode | str) -> tuple[str, ...]:
    """Names of the outputs returned when a request names none."""
    return tuple(spec.name for spec in output_specs(task, mode) if spec.by_default)


def graph_output_names(task: Task | str, mode: Mode | str) -> tuple[str, ...]:
    """Names of the outputs the ONNX graph of ``mode`` itself produces, in order."""
    return tuple(spec.name for spec in output_specs(task, mode) if spec.in_graph)


def output_spec(task: Task | str, mode: Mode | str, name: str) -> OutputSpec:
    """The row for output ``name``; KeyError when ``mode`` of ``task`` has no such output."""
    for spec in output_specs(task, mode):
        if spec.name == name:
            return spec
    raise KeyError(name)


def all_output_names() -> frozenset[str]:
    """Every output name of the table, of any task and mode."""
    return frozenset(_ROWS_AXIS)


def rows_axis(name: str) -> int:
    """Axis of the rows (B) in output ``name``: the same in every task and mode that has it (``samples``: 1)."""
    return _ROWS_AXIS[name]


_ROWS_AXIS = {
    spec.name: spec.shape.index("B") for modes in OUTPUT_TABLE.values() for specs in modes.values() for spec in specs
}
