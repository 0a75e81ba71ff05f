"""The model package's ``manifest.json``: a frozen, typed :class:`Manifest`, validated once when read.

This module is the contract between whatever writes packages (the exporter) and whatever reads
them (the Predictor, the server, ``dropnet predict``). :meth:`Manifest.from_dict` checks every key
any of them reads and refuses a bad one with a :class:`ModelPackageError` naming the key path and
what was expected, so a package that loads never fails later for its manifest.

Formats: ``dropnet-model/2`` is written; ``dropnet-model/1`` (classification packages without
``task`` and without per-site dropout details) still loads. ``mc.sample_bytes`` is optional in
either: packages exported before it was recorded lack it. ``calibration`` (format 2, classification)
is present only in packages written by ``dropnet calibrate``. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Literal, get_args

from dropnet.core.errors import ModelPackageError
from dropnet.core.jsonfields import JsonObject, frozen, is_int, is_number, thawed
from dropnet.core.outputs import Mode, OutputSpec, Task, output_specs

FORMAT = "dropnet-model/2"
"""The format packages are written in."""
FORMAT_V1 = "dropnet-model/1"
"""The first format: a classification package; its dropout sites carry no module path."""
FORMATS = (FORMAT, FORMAT_V1)
MANIFEST_FILE = "manifest.json"
DETERMINISTIC_FILE = "deterministic.onnx"
MC_FILE = "mc.onnx"
ONNX_FILES = (DETERMINISTIC_FILE, MC_FILE)
GRAPH_FILES = {Mode.DETERMINISTIC: DETERMINISTIC_FILE, Mode.MC: MC_FILE}
INPUT_NAME = "x"
NUM_SAMPLES_INPUT = "num_samples"
SEED_INPUT = "seed"
GRAPH_INPUTS = {Mode.DETERMINISTIC: (INPUT_NAME,), Mode.MC: (INPUT_NAME, NUM_SAMPLES_INPUT, SEED_INPUT)}
"""The inputs each graph requires; only ``x`` is described by the manifest, the others are fixed."""
FIRST_SAMPLE_INPUT = "first_sample"
"""mc.onnx's optional input (an overridable initializer, default 0): the index of the run's first sample.
Graphs exported before it existed lack it; the engine then runs all T samples in one run."""
MAX_MC_SAMPLES = 1000
"""Default bound on T; lower when the mc graph's noise counters allow fewer samples."""
INPUT_DTYPES = ("float32", "float64", "float16", "int64", "int32", "uint8")
"""numpy dtype names an input may have (each has a dropnet.v1 DataType and an OIP datatype)."""
INTEGER_LIMITS = {"int64": (-(2**63), 2**63 - 1), "int32": (-(2**31), 2**31 - 1), "uint8": (0, 255)}
"""Values each integer input dtype can hold: an integer input's value_range must lie within them."""
DropoutKind = Literal["paper", "inverted", "gaussian"]
"""How a site draws its noise and scales (see dropnet.trainer.dropout); PyTorch's own dropout is "inverted"."""
DROPOUT_KINDS: tuple[str, ...] = get_args(DropoutKind)
"""The noise of a dropout site: the paper's Bernoulli masks (test-time weights scaled by p), inverted
Bernoulli masks (scaled by 1/p in training) or multiplicative gaussian noise N(1, (1-p)/p)."""
MASK_GRANULARITIES = ("element", "channel")
"""One mask value per unit, or one per feature map (channel) shared by its positions."""
MIXED = "mixed"
"""The package-wide dropout flavour when sites differ in kind."""
SHA256_HEX_DIGITS = 64


@dataclass(frozen=True)
class Normalisation:
    """(x - mean) / std applied to raw inputs."""

    mean: float
    std: float
    in_graph: bool
    """True when the graphs apply it themselves (clients send raw values)."""


@dataclass(frozen=True)
class InputSpec:
    """The one model input, ``x``: one example's shape, its element type and the values it takes."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    """numpy dtype name, one of :data:`INPUT_DTYPES`; requests are converted to it."""
    value_range: tuple[float, float]
    """[low, high] of the raw values seen in training; for an integer dtype the valid values (e.g. token ids)."""
    normalisation: Normalisation | None = None
    """None when the graphs take the values as they are (e.g. token ids)."""

    @property
    def is_integer(self) -> bool:
        """Whether the input holds integers (requests must then send integers within ``value_range``)."""
        return _is_integer_dtype(self.dtype)


@dataclass(frozen=True)
class DropoutSite:
    """One dropout site of the network, in network order."""

    path: str | None
    """The module's path in the network (its index in an nn.Sequential, or a dotted path such as
    "encoder.drop1"); None in ``dropnet-model/1`` packages, which did not record it."""
    kind: str
    """One of :data:`DROPOUT_KINDS`."""
    retain: float
    """Keep probability p in (0, 1]; the drop probability is 1 - p."""
    granularity: str = "element"
    """One of :data:`MASK_GRANULARITIES`."""


@dataclass(frozen=True)
class DropoutSpec:
    """Every dropout site of the network; the sites the mc graph samples masks for."""

    sites: tuple[DropoutSite, ...]

    @property
    def flavour(self) -> str:
        """The kind all sites share, or :data:`MIXED`."""
        kinds = {site.kind for site in self.sites}
        return kinds.pop() if len(kinds) == 1 else MIXED

    @property
    def retain(self) -> tuple[float, ...]:
        """Each site's keep probability p, in network order."""
        return tuple(site.retain for site in self.sites)


@dataclass(frozen=True)
class FileDigest:
    """Size and SHA-256 of one file of the package."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class OnnxVersions:
    opset: int
    ir_version: int


@dataclass(frozen=True)
class MonteCarlo:
    max_samples: int
    """Largest T the mc graph accepts."""
    rng: str
    """Name of the scheme that turns seeds into dropout noise."""
    sample_bytes: int | None = None
    """Activation bytes one row costs per MC sample: the bytes of every tensor of mc.onnx whose size
    grows with T·B, per row and sample (dropnet.server.sessions.sample_bytes says exactly what is
    counted). None in packages exported before it was recorded (the engine then measures it)."""


CALIBRATION_METHODS = ("temperature",)
"""How a calibrated package's graphs were changed: "temperature" divides the logits by τ (dropnet.quality)."""


@dataclass(frozen=True)
class ModeCalibration:
    """One mode's temperature and its effect on the split it was fitted on."""

    temperature: float
    """τ > 0 the logits (MC: each sample's logits) are divided by in the graph; > 1 softens, < 1 sharpens."""
    ece_before: float
    """Expected calibration error (a fraction) before τ, over ``Calibration.ece_bins`` equal-width bins."""
    ece_after: float
    nll_before: float
    """Mean negative log-likelihood (nats) before τ."""
    nll_after: float


@dataclass(frozen=True)
class Calibration:
    """How a package's graphs were calibrated, on what, and the effect (absent in uncalibrated packages).

    Facts only: the command and the data files' paths are provenance, kept in ``source_run`` (which
    servers hide by default), not here.
    """

    method: str
    """One of :data:`CALIBRATION_METHODS`."""
    deterministic: ModeCalibration
    mc: ModeCalibration
    split: str
    """The split fitted on (e.g. "val")."""
    examples: int
    """Rows of that split."""
    dataset: str
    """The dataset's name (e.g. "mnist", or a file name)."""
    data_files: tuple[FileDigest, ...]
    """Size and SHA-256 of each file the data was read from (empty for bundled data)."""
    mc_samples: int
    """T of the MC predictions fitted on."""
    seed: int
    """Seed of those MC predictions (row seeds ``row_seeds(seed, examples)``)."""
    ece_bins: int
    source_version: str
    """The version of the uncalibrated package the graphs came from."""
    source_files: Mapping[str, FileDigest]
    """Digests of that package's graphs."""

    def of(self, mode: Mode | str) -> ModeCalibration:
        """The calibration of ``mode``."""
        return self.deterministic if Mode(mode) is Mode.DETERMINISTIC else self.mc


@dataclass(frozen=True)
class Manifest:
    """A model package's manifest. Build it with :meth:`from_dict` (reading) or :func:`build_manifest` (writing)."""

    format: str
    name: str
    version: str
    created: str
    dropnet_version: str
    versions: Mapping[str, str]
    """Library versions at export (dropnet, torch, onnx, onnxruntime, ...)."""
    source_run: Mapping[str, Any]
    """Where the network came from (for a trained run: its config, creation time and command)."""
    task: Task
    input: InputSpec
    classes: tuple[str, ...]
    """Class labels (classification; C = their number); empty for regression."""
    targets: tuple[str, ...]
    """Names of the D regression targets; empty for classification."""
    architecture: Mapping[str, Any]
    dropout: DropoutSpec
    max_norm: tuple[float | None, ...]
    """Max-norm bound per weight layer, None where a layer is unconstrained."""
    onnx: OnnxVersions
    files: Mapping[str, FileDigest]
    """Digest of each of :data:`ONNX_FILES` (empty in a draft)."""
    mc: MonteCarlo
    metrics: Mapping[str, Any]
    """Final metrics of the training run (any JSON values)."""
    calibration: Calibration | None = None
    """How the graphs were calibrated (temperature scaling); None for an uncalibrated package."""

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> Manifest:
        """The manifest in the parsed JSON ``raw``, or a ModelPackageError naming ``where`` and the bad key."""
        return _parse(raw, where)

    def to_dict(self) -> dict[str, Any]:
        """The JSON content of ``manifest.json``, in this manifest's format."""
        raw: dict[str, Any] = {
            "format": self.format,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "dropnet_version": self.dropnet_version,
            "versions": thawed(self.versions),
            "source_run": thawed(self.source_run),
            "task": self.task.value,
            "input": _input_dict(self.input),
            "classes": list(self.classes),
            "targets": list(self.targets),
            "architecture": thawed(self.architecture),
            "dropout": {
                "flavour": self.dropout.flavour,
                "retain": list(self.dropout.retain),
                "sites": [_site_dict(site) for site in self.dropout.sites],
            },
            "max_norm": list(self.max_norm),
            "onnx": {"opset": self.onnx.opset, "ir_version": self.onnx.ir_version},
            "files": {name: _digest_dict(digest) for name, digest in self.files.items()},
            "mc": _mc_dict(self.mc),
            "metrics": thawed(self.metrics),
        }
        if self.calibration is not None:
            raw["calibration"] = _calibration_dict(self.calibration)
        if self.format == FORMAT_V1:
            del raw["task"], raw["targets"], raw["dropout"]["sites"]
        elif self.task is Task.CLASSIFICATION:
            del raw["targets"]
        else:
            del raw["classes"]
        return raw

    @property
    def labels(self) -> tuple[str, ...]:
        """The names along the last axis of the outputs: ``classes`` or ``targets``."""
        return self.classes if self.task is Task.CLASSIFICATION else self.targets

    @property
    def labels_key(self) -> str:
        """The key holding :attr:`labels`: "classes" or "targets"."""
        return "classes" if self.task is Task.CLASSIFICATION else "targets"

    def sizes(self) -> dict[str, int]:
        """The output table's fixed size symbol: {"C": classes} or {"D": targets}."""
        return {"C" if self.task is Task.CLASSIFICATION else "D": len(self.labels)}

    def outputs(self, mode: Mode | str) -> tuple[OutputSpec, ...]:
        """Every output of ``mode`` for this package's task (the output table's rows)."""
        return output_specs(self.task, mode)


def data_digest(data: bytes) -> FileDigest:
    """The size and SHA-256 of ``data``."""
    return FileDigest(hashlib.sha256(data).hexdigest(), len(data))


def build_manifest(
    *,
    name: str,
    version: str,
    created: str,
    dropnet_version: str,
    versions: Mapping[str, str],
    source_run: Mapping[str, Any],
    input: InputSpec,
    architecture: Mapping[str, Any],
    dropout: DropoutSpec,
    max_norm: tuple[float | None, ...],
    onnx: OnnxVersions,
    rng: str,
    metrics: Mapping[str, Any],
    task: Task = Task.CLASSIFICATION,
    classes: tuple[str, ...] = (),
    targets: tuple[str, ...] = (),
) -> Manifest:
    """The draft manifest of a package being exported: no file digests yet, T bounded by :data:`MAX_MC_SAMPLES`.

    The draft gives the graphs their :func:`onnx_metadata`; :func:`seal_manifest` then adds what is
    known only once the graphs exist, and validates the result as a reader will.
    """
    return Manifest(
        format=FORMAT, name=name, version=version, created=created, dropnet_version=dropnet_version,
        versions=versions, source_run=source_run, task=task, input=input, classes=classes, targets=targets,
        architecture=architecture, dropout=dropout, max_norm=max_norm, onnx=onnx, files=MappingProxyType({}),
        mc=MonteCarlo(MAX_MC_SAMPLES, rng), metrics=metrics,
    )


def seal_manifest(
    draft: Manifest, graphs: Mapping[str, bytes], rng_max_samples: int, sample_bytes: int | None = None
) -> Manifest:
    """``draft`` with the digest of each serialised graph, T bounded by the noise scheme's limit and
    the mc graph's ``sample_bytes`` (see :class:`MonteCarlo`; None leaves it unrecorded).

    Refused (ModelPackageError) when the result is not a manifest :meth:`Manifest.from_dict` accepts.
    """
    sealed = replace(
        draft,
        files=MappingProxyType({file_name: data_digest(data) for file_name, data in graphs.items()}),
        mc=replace(draft.mc, max_samples=min(draft.mc.max_samples, rng_max_samples), sample_bytes=sample_bytes),
    )
    return Manifest.from_dict(sealed.to_dict(), f"the manifest of {draft.name} version {draft.version}")


def onnx_metadata(manifest: Manifest) -> dict[str, str]:
    """The ``metadata_props`` both graphs carry: the key facts of ``manifest``, so a bare .onnx says what it is.

    Values are strings (JSON for lists and mappings). The graph builders add their own keys (the
    graph kind, and for mc.onnx the noise scheme).
    """
    spec = manifest.input
    facts: dict[str, Any] = {
        "format": manifest.format,
        "name": manifest.name,
        "version": manifest.version,
        "task": manifest.task.value,
        "flavour": manifest.dropout.flavour,
        "retain": list(manifest.dropout.retain),
        "max_norm": list(manifest.max_norm),
        manifest.labels_key: list(manifest.labels),
        "input_shape": list(spec.shape),
        "value_range": list(spec.value_range),
        "normalisation": _normalisation_dict(spec.normalisation),
        "dropnet_version": manifest.dropnet_version,
    }
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in facts.items()}


# --- reading ----------------------------------------------------------------------------------

_V1_KEYS = (
    "format", "name", "version", "created", "dropnet_version", "versions", "source_run", "input",
    "classes", "architecture", "dropout", "max_norm", "onnx", "files", "mc", "metrics",
)
_KEYS = {FORMAT_V1: _V1_KEYS, FORMAT: (*_V1_KEYS, "task", "targets", "calibration")}
_INPUT_KEYS = ("name", "shape", "dtype", "value_range", "normalisation")
_SITE_KEYS = ("path", "kind", "retain", "granularity")


def _parse(raw: Any, where: str) -> Manifest:
    if not isinstance(raw, dict):
        raise ModelPackageError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    expected = f"{FORMAT!r} or {FORMAT_V1!r}"
    if "format" not in raw:
        raise ModelPackageError(f"{where}: format is missing; expected {expected}")
    if raw["format"] not in FORMATS:
        raise ModelPackageError(f"{where}: format must be {expected}, got {raw['format']!r}")
    fmt = raw["format"]
    top = JsonObject(raw, "", where, ModelPackageError, _KEYS[fmt])
    task = Task(top.choice("task", [t.value for t in Task])) if top.has("task") else Task.CLASSIFICATION
    classes, targets = _labels(top, task)
    return Manifest(
        format=fmt,
        name=top.string("name"),
        version=top.string("version"),
        created=top.string("created"),
        dropnet_version=top.string("dropnet_version"),
        versions=top.get("versions", "a JSON object of strings", _string_mapping),
        source_run=top.mapping("source_run"),
        task=task,
        input=_input(top.object("input", _INPUT_KEYS), needs_normalisation=fmt == FORMAT_V1),
        classes=classes,
        targets=targets,
        architecture=top.mapping("architecture"),
        dropout=_dropout(top, fmt),
        max_norm=top.get("max_norm", "a list of positive numbers or nulls", _max_norm),
        onnx=_onnx(top.object("onnx", ("opset", "ir_version"))),
        files=_files(top.object("files", ONNX_FILES)),
        mc=_mc(top.object("mc", ("max_samples", "rng", "sample_bytes"))),
        metrics=top.mapping("metrics"),
        calibration=_calibration(top, task) if top.has("calibration") else None,
    )


def _labels(top: JsonObject, task: Task) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(classes, targets): classification needs classes and no targets, regression targets and no classes."""
    if task is Task.CLASSIFICATION:
        top.refuse_present("targets", "absent for a classification package")
        return top.strings("classes", non_empty=True), ()
    if top.has("classes"):
        top.get("classes", "absent or empty for a regression package", lambda v: v if v == [] else None)
    return (), top.strings("targets", non_empty=True)


def _input(spec: JsonObject, needs_normalisation: bool) -> InputSpec:
    """The input spec; format 1 always records the normalisation, format 2 when there is one."""
    name = spec.get("name", repr(INPUT_NAME), lambda v: v if v == INPUT_NAME else None)
    shape = spec.get(
        "shape", "a non-empty list of positive ints",
        lambda v: tuple(v) if isinstance(v, list) and v and all(is_int(d) and d >= 1 for d in v) else None,
    )
    dtype = spec.choice("dtype", INPUT_DTYPES)
    integer = _is_integer_dtype(dtype)
    low, high = INTEGER_LIMITS.get(dtype, (-math.inf, math.inf))
    accept = is_int if integer else is_number
    value_range = spec.get(
        "value_range",
        f"[low, high] with low <= high{f', integers for an integer input, within {dtype} [{low}, {high}]' if integer else ''}",
        lambda v: tuple(v) if isinstance(v, list) and len(v) == 2 and all(map(accept, v)) and low <= v[0] <= v[1] <= high
        else None,
    )
    normalisation = None
    if needs_normalisation or spec.has("normalisation"):
        fields = spec.object("normalisation", ("mean", "std", "in_graph"))
        normalisation = Normalisation(
            fields.number("mean"), fields.number("std", positive=True), fields.boolean("in_graph")
        )
    return InputSpec(name, shape, dtype, value_range, normalisation)


def _dropout(top: JsonObject, fmt: str) -> DropoutSpec:
    """Format 1 records a flavour and one retain per site; format 2 the sites, with flavour and retain kept too."""
    fields = top.object("dropout", ("flavour", "retain") if fmt == FORMAT_V1 else ("flavour", "retain", "sites"))
    retain = fields.get("retain", "a non-empty list of probabilities in (0, 1]", _retain_list)
    if fmt == FORMAT_V1:
        flavour = fields.choice("flavour", DROPOUT_KINDS)
        return DropoutSpec(tuple(DropoutSite(None, flavour, p) for p in retain))
    sites = fields.get("sites", "a non-empty list of dropout sites", lambda v: v if isinstance(v, list) and v else None)
    spec = DropoutSpec(tuple(_site(JsonObject(site, f"{fields.key_path('sites')}[{i}]", top.where, ModelPackageError,
                                               _SITE_KEYS)) for i, site in enumerate(sites)))
    flavour = fields.choice("flavour", (*DROPOUT_KINDS, MIXED))
    if flavour != spec.flavour:
        fields.fail("flavour", f"{spec.flavour!r}, the kind of every site", flavour)
    if retain != spec.retain:
        fields.fail("retain", f"{list(spec.retain)}, each site's retain", list(retain))
    return spec


def _site(fields: JsonObject) -> DropoutSite:
    retain = fields.get("retain", "a probability in (0, 1]", lambda v: float(v) if _is_probability(v) else None)
    return DropoutSite(
        fields.string("path"), fields.choice("kind", DROPOUT_KINDS), retain,
        fields.choice("granularity", MASK_GRANULARITIES),
    )


def _onnx(fields: JsonObject) -> OnnxVersions:
    return OnnxVersions(fields.integer("opset"), fields.integer("ir_version"))


def _files(fields: JsonObject) -> Mapping[str, FileDigest]:
    return MappingProxyType({name: _digest(fields.object(name, ("sha256", "bytes"))) for name in ONNX_FILES})


def _digest(entry: JsonObject) -> FileDigest:
    sha256 = entry.get(
        "sha256", f"{SHA256_HEX_DIGITS} lowercase hex digits",
        lambda v: v if isinstance(v, str) and len(v) == SHA256_HEX_DIGITS and set(v) <= set("0123456789abcdef")
        else None,
    )
    return FileDigest(sha256, entry.integer("bytes", low=0))


_CALIBRATION_KEYS = (
    "method", "deterministic", "mc", "split", "examples", "dataset", "data_files", "mc_samples", "seed", "ece_bins",
    "source",
)
_MODE_CALIBRATION_KEYS = ("temperature", "ece_before", "ece_after", "nll_before", "nll_after")


def _calibration(top: JsonObject, task: Task) -> Calibration:
    """The optional ``calibration`` object: classification packages only."""
    if task is not Task.CLASSIFICATION:
        top.refuse_present("calibration", "absent for a regression package (temperature scaling is for classifiers)")
    fields = top.object("calibration", _CALIBRATION_KEYS)
    files = fields.get("data_files", "a list of {sha256, bytes} objects", lambda v: v if isinstance(v, list) else None)
    source = fields.object("source", ("version", "files"))
    return Calibration(
        method=fields.choice("method", CALIBRATION_METHODS),
        deterministic=_mode_calibration(fields.object(Mode.DETERMINISTIC.value, _MODE_CALIBRATION_KEYS)),
        mc=_mode_calibration(fields.object(Mode.MC.value, _MODE_CALIBRATION_KEYS)),
        split=fields.string("split"),
        examples=fields.integer("examples"),
        dataset=fields.string("dataset"),
        data_files=tuple(
            _digest(JsonObject(entry, f"{fields.key_path('data_files')}[{i}]", top.where, ModelPackageError,
                               ("sha256", "bytes")))
            for i, entry in enumerate(files)
        ),
        mc_samples=fields.integer("mc_samples"),
        seed=fields.integer("seed", low=0),
        ece_bins=fields.integer("ece_bins"),
        source_version=source.string("version"),
        source_files=_files(source.object("files", ONNX_FILES)),
    )


def _mode_calibration(fields: JsonObject) -> ModeCalibration:
    def fraction(key: str) -> float:
        return fields.get(key, "a number in [0, 1]", lambda v: float(v) if is_number(v) and 0 <= v <= 1 else None)

    def loss(key: str) -> float:
        return fields.get(key, "a finite number >= 0", lambda v: float(v) if is_number(v) and v >= 0 else None)

    return ModeCalibration(
        fields.number("temperature", positive=True), fraction("ece_before"), fraction("ece_after"),
        loss("nll_before"), loss("nll_after"),
    )


def _mc(fields: JsonObject) -> MonteCarlo:
    """T's bound and the noise scheme; ``sample_bytes`` when recorded (absent in older packages)."""
    sample_bytes = fields.integer("sample_bytes") if fields.has("sample_bytes") else None
    return MonteCarlo(fields.integer("max_samples"), fields.string("rng"), sample_bytes)


def _string_mapping(value: Any) -> Mapping[str, str] | None:
    if isinstance(value, dict) and all(isinstance(item, str) for item in value.values()):
        return frozen(value)
    return None


def _retain_list(value: Any) -> tuple[float, ...] | None:
    if isinstance(value, list) and value and all(map(_is_probability, value)):
        return tuple(float(p) for p in value)
    return None


def _max_norm(value: Any) -> tuple[float | None, ...] | None:
    if isinstance(value, list) and all(c is None or (is_number(c) and c > 0) for c in value):
        return tuple(None if c is None else float(c) for c in value)
    return None


def _is_integer_dtype(dtype: str) -> bool:
    return dtype in INTEGER_LIMITS


def _is_probability(value: Any) -> bool:
    return is_number(value) and 0 < value <= 1


# --- writing ----------------------------------------------------------------------------------

def _input_dict(spec: InputSpec) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype, "value_range": list(spec.value_range),
    }
    if spec.normalisation is not None:
        raw["normalisation"] = _normalisation_dict(spec.normalisation)
    return raw


def _normalisation_dict(normalisation: Normalisation | None) -> dict[str, Any] | None:
    if normalisation is None:
        return None
    return {"mean": normalisation.mean, "std": normalisation.std, "in_graph": normalisation.in_graph}


def _mc_dict(mc: MonteCarlo) -> dict[str, Any]:
    raw: dict[str, Any] = {"max_samples": mc.max_samples, "rng": mc.rng}
    if mc.sample_bytes is not None:
        raw["sample_bytes"] = mc.sample_bytes
    return raw


def _digest_dict(digest: FileDigest) -> dict[str, Any]:
    return {"sha256": digest.sha256, "bytes": digest.bytes}


def _calibration_dict(calibration: Calibration) -> dict[str, Any]:
    modes = {
        mode.value: {
            "temperature": entry.temperature, "ece_before": entry.ece_before, "ece_after": entry.ece_after,
            "nll_before": entry.nll_before, "nll_after": entry.nll_after,
        }
        for mode, entry in ((Mode.DETERMINISTIC, calibration.deterministic), (Mode.MC, calibration.mc))
    }
    return {
        "method": calibration.method,
        **modes,
        "split": calibration.split,
        "examples": calibration.examples,
        "dataset": calibration.dataset,
        "data_files": [_digest_dict(digest) for digest in calibration.data_files],
        "mc_samples": calibration.mc_samples,
        "seed": calibration.seed,
        "ece_bins": calibration.ece_bins,
        "source": {
            "version": calibration.source_version,
            "files": {name: _digest_dict(digest) for name, digest in calibration.source_files.items()},
        },
    }


def _site_dict(site: DropoutSite) -> dict[str, Any]:
    return {"path": site.path, "kind": site.kind, "retain": site.retain, "granularity": site.granularity}
