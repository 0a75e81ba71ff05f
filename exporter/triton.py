"""A Triton model repository from a model package: ``NAME/`` (deterministic) and ``NAME_mc/`` (MC dropout).

Each model directory holds ``config.pbtxt`` and ``VERSION/model.onnx`` (the package's graph, byte
for byte), for Triton's onnxruntime backend (platform ``onnxruntime_onnx``). The configs are
written from the manifest and the output table (``dropnet.core.outputs``); the tests parse them
with Triton's own model-config schema and check them against the graphs.

Design (docs/triton.md explains it for users):

* Deterministic: ``max_batch_size`` and ``dynamic_batching`` as ``dropnet serve``'s defaults
  (--max-batch-size, --max-queue-delay-ms), so Triton batches rows of different requests as
  dropnet's own server does; dims are one row's, Triton prepends the batch dimension.
* MC: ``max_batch_size: 0`` (no batching, explicit ``-1`` dims). Triton's batcher would prepend a
  batch dimension to every input and concatenate requests along it, which cannot work here: the
  graph's ``num_samples`` is a scalar that all rows of a run share, and its ``samples`` output has
  T, not the rows, on axis 0. The onnxruntime backend reaches the same verdict on its own (its
  auto-complete batches a model only if every input and output has a variable first dimension).
  ``num_samples`` and ``seed`` are input tensors because that backend never sees request
  parameters; ``first_sample`` (an overridable initializer) is an *optional* input, which the
  backend allows only without batching, so a client can split T over requests exactly as the
  Predictor splits it into chunks. No ``dynamic_batching``: it needs ``max_batch_size`` > 0.
* Both: one instance per device (``KIND_AUTO``: each GPU if Triton has any, else the CPU); no
  ``optimization { graph { level } }``, so the backend's default ORT_ENABLE_ALL applies, the level
  dropnet's Predictor runs the graphs at (the tests run them at every level the backend offers).
* Provenance: a comment header and ``parameters`` (``dropnet_manifest_sha256`` and friends), which
  the onnxruntime backend ignores.
* Version directory: the manifest's version when it is a positive integer without leading zeros
  (Triton ignores other names), else 1.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import onnx

from dropnet.core.errors import ModelPackageError, quoted
from dropnet.core.manifest import (
    FIRST_SAMPLE_INPUT,
    INPUT_NAME,
    MANIFEST_FILE,
    NUM_SAMPLES_INPUT,
    SEED_INPUT,
    Manifest,
)
from dropnet.core.outputs import Mode, OutputSpec, output_specs
from dropnet.exporter.write import check_destination, write_directory
from dropnet.server.package import read_package
from dropnet.server.settings import ServerSettings

log = logging.getLogger(__name__)

PLATFORM = "onnxruntime_onnx"
CONFIG_FILE = "config.pbtxt"
MODEL_FILE = "model.onnx"
MC_SUFFIX = "_mc"
DEFAULT_VERSION = 1
MAX_BATCH_SIZE: int = ServerSettings.model_fields["max_batch_size"].default
"""Deterministic model's max_batch_size: ``dropnet serve``'s --max-batch-size default."""
QUEUE_DELAY_US = round(ServerSettings.model_fields["max_queue_delay_ms"].default * 1000)
"""Deterministic model's dynamic_batching delay: ``dropnet serve``'s --max-queue-delay-ms default."""
DATA_TYPES = {
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "float16": "TYPE_FP16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "uint8": "TYPE_UINT8",
}
"""numpy dtype name → Triton data_type."""
_VERSION = re.compile(r"[1-9][0-9]*")
_BAD_NAME = re.compile(r'[/\\"\x00-\x1f\x7f]')


@dataclass(frozen=True)
class TensorEntry:
    """One input or output of a Triton model config."""

    name: str
    dtype: str
    """numpy dtype name, a key of :data:`DATA_TYPES`."""
    dims: tuple[int, ...]
    """As the config states them: without the batch dimension where max_batch_size > 0; -1 is variable."""
    optional: bool = False


def model_names(name: str) -> dict[Mode, str]:
    """The Triton model name of each mode: ``NAME`` and ``NAME_mc``."""
    return {Mode.DETERMINISTIC: name, Mode.MC: name + MC_SUFFIX}


def triton_version(version: str) -> int:
    """The version directory for a package version: itself if a positive integer (no leading zero), else 1."""
    return int(version) if _VERSION.fullmatch(version) else DEFAULT_VERSION


def check_name(name: str) -> None:
    """Refuse a model name that cannot be a Triton model directory's name."""
    if not name or name.startswith(".") or _BAD_NAME.search(name):
        raise ModelPackageError(
            f"model name {quoted(name)} cannot name a Triton model directory; expected a non-empty name without "
            "'/', '\\', '\"' or control characters, not starting with '.'"
        )


def check_repository(repo_dir: Path, name: str, force: bool) -> None:
    """Refuse a repository path that is not a directory, and model directories that exist (unless ``force``).

    With ``force`` an existing model directory is replaced only if it holds a ``config.pbtxt`` (a
    Triton model); any other non-empty directory is never replaced.
    """
    check_name(name)
    if repo_dir.exists() and not repo_dir.is_dir():
        raise ModelPackageError(f"--triton-repo {repo_dir} exists and is not a directory; expected a directory")
    for model_name in model_names(name).values():
        check_model_dir(repo_dir / model_name, force)


def check_model_dir(model_dir: Path, force: bool) -> None:
    """Refuse a model directory that is a file, a non-empty non-model, or a model without ``force``."""
    check_destination(model_dir, force, CONFIG_FILE, "a Triton model", "a Triton model directory")


def tensor_entries(manifest: Manifest, mode: Mode, first_sample: bool) -> tuple[list[TensorEntry], list[TensorEntry]]:
    """The (inputs, outputs) of the Triton model of ``mode``, from the manifest and the output table.

    ``first_sample``: whether mc.onnx has that overridable initializer (packages exported before it do not).
    """
    spec = manifest.input
    sizes = manifest.sizes()
    outputs = [row for row in output_specs(manifest.task, mode) if row.in_graph]
    if mode is Mode.DETERMINISTIC:
        inputs = [TensorEntry(spec.name, spec.dtype, tuple(spec.shape))]
        return inputs, [TensorEntry(row.name, row.dtype, tuple(_batched_dims(row, sizes))) for row in outputs]
    inputs = [
        TensorEntry(INPUT_NAME, spec.dtype, (-1, *spec.shape)),
        TensorEntry(NUM_SAMPLES_INPUT, "int64", (1,)),  # a scalar in the graph: the backend wants dims [1]
        TensorEntry(SEED_INPUT, "int64", (-1,)),  # [1]: one seed for the batch, or [B]: one per row
    ]
    if first_sample:
        inputs.append(TensorEntry(FIRST_SAMPLE_INPUT, "int64", (1,), optional=True))
    return inputs, [TensorEntry(row.name, row.dtype, tuple(row.dims(sizes))) for row in outputs]


def config_text(manifest: Manifest, mode: Mode, manifest_sha256: str, first_sample: bool) -> str:
    """The ``config.pbtxt`` of the Triton model of ``mode`` (protobuf text format of Triton's ModelConfig)."""
    inputs, outputs = tensor_entries(manifest, mode, first_sample)
    name = model_names(manifest.name)[mode]
    batched = mode is Mode.DETERMINISTIC
    lines = [
        f"# Written by `dropnet export` from model package {manifest.name} version {manifest.version}",
        f"# ({MANIFEST_FILE} SHA-256 {manifest_sha256}): the {mode.value} graph.",
        "# No optimization { graph { level } }: the backend's default ORT_ENABLE_ALL, as in dropnet's engine.",
    ]
    if not batched:
        lines += [
            "# max_batch_size 0: num_samples is one scalar per run and samples is [T, B, ...], so requests",
            f"# cannot be concatenated; send t0 + num_samples <= {manifest.mc.max_samples} (mc.max_samples).",
        ]
    lines += [
        f"name: {_quoted(name)}",
        f"platform: {_quoted(PLATFORM)}",
        f"max_batch_size: {MAX_BATCH_SIZE if batched else 0}",
        "input [",
        ",\n".join(_tensor(entry) for entry in inputs),
        "]",
        "output [",
        ",\n".join(_tensor(entry) for entry in outputs),
        "]",
    ]
    if batched:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {QUEUE_DELAY_US}", "}"]
    lines += ["instance_group [", "  {", "    count: 1", "    kind: KIND_AUTO", "  }", "]"]
    parameters = {
        "dropnet_manifest_sha256": manifest_sha256,
        "dropnet_model": manifest.name,
        "dropnet_version": manifest.version,
        "dropnet_mode": mode.value,
    }
    if not batched:
        parameters |= {"dropnet_mc_max_samples": str(manifest.mc.max_samples), "dropnet_rng": manifest.mc.rng}
    lines += [f"parameters {{ key: {_quoted(key)} value {{ string_value: {_quoted(value)} }} }}"
              for key, value in parameters.items()]
    return "\n".join(lines) + "\n"


def write_repository(package_dir: str | Path, repo_dir: str | Path, force: bool = False) -> dict[Mode, Path]:
    """Write the Triton models of the package in ``package_dir`` into ``repo_dir``; return each model's directory.

    The package is read (and its graphs verified against the manifest) as the server reads it. Each
    model directory is written in a hidden temporary directory inside ``repo_dir``, synced and
    renamed into place (an existing one, with ``force``, is moved aside and deleted afterwards).
    """
    package_dir, repo_dir = Path(package_dir), Path(repo_dir)
    package = read_package(package_dir)
    manifest = package.manifest
    check_repository(repo_dir, manifest.name, force)
    manifest_sha256 = hashlib.sha256((package_dir / MANIFEST_FILE).read_bytes()).hexdigest()
    first_sample = _has_first_sample(package.graphs[Mode.MC])
    version = str(triton_version(manifest.version))
    if version != manifest.version:
        log.info("Triton version directory %s for package version %r (not a positive integer)", version,
                 manifest.version)
    written = {}
    for mode, model_name in model_names(manifest.name).items():
        files = {
            CONFIG_FILE: config_text(manifest, mode, manifest_sha256, first_sample).encode(),
            f"{version}/{MODEL_FILE}": package.graphs[mode],
        }
        written[mode] = write_directory(repo_dir / model_name, files, lambda model_dir: check_model_dir(model_dir, force))
    log.info("wrote Triton models %s to %s", ", ".join(model_names(manifest.name).values()), repo_dir)
    return written


def _batched_dims(row: OutputSpec, sizes: dict[str, int]) -> list[int]:
    """An output's dims without its leading batch dimension (deterministic outputs all start with B)."""
    if row.shape[0] != "B":
        raise ModelPackageError(f"output {row.name} has shape {row.shape}; a batched Triton model needs B first")
    return row.dims(sizes)[1:]


def _tensor(entry: TensorEntry) -> str:
    """One ``input``/``output`` entry; an empty ``dims`` becomes dims [1] reshaped to a scalar."""
    dims = entry.dims or (1,)
    fields = [f"name: {_quoted(entry.name)}", f"data_type: {DATA_TYPES[entry.dtype]}",
              f"dims: [ {', '.join(map(str, dims))} ]"]
    if not entry.dims:
        fields.append("reshape: { shape: [ ] }")
    if entry.optional:
        fields.append("optional: true")
    return "  {\n" + "".join(f"    {field}\n" for field in fields) + "  }"


def _quoted(text: str) -> str:
    """A protobuf text-format string literal (names are checked free of quotes and control characters)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _has_first_sample(mc: bytes) -> bool:
    """Whether the serialised mc.onnx lists ``first_sample`` among its inputs (an overridable initializer)."""
    return FIRST_SAMPLE_INPUT in {value.name for value in onnx.load_from_string(mc).graph.input}
