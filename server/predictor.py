"""The embedded inference engine: one model package, two onnxruntime sessions, checked requests.

No grpc, torch or trainer imports here: a serving install needs onnxruntime and numpy only.

    predictor = Predictor.load("models/digits")
    prediction = predictor.predict(x, mc_samples=100, seed=7)

MC runs are bounded in memory: T is split into chunks of samples (mc.onnx's ``first_sample``
input makes a chunk draw exactly the masks of those samples in a single run) so that rows ×
chunk × the model's activation bytes per row and sample stay within ``mc_chunk_bytes``, and the
rows too when one sample of every row is over it. The summaries are computed here from the
chunks' samples (:class:`SampleSummaries`), in float64 and in sample order, so the answer is the
same bytes whatever the chunk size. The MC session runs without onnxruntime's CPU arena, which
would keep the largest run's peak allocated for good.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from dropnet.core.errors import ConfigError, InvalidInputError, ModelPackageError
from dropnet.core.manifest import (
    FIRST_SAMPLE_INPUT,
    GRAPH_FILES,
    GRAPH_INPUTS,
    INPUT_NAME,
    NUM_SAMPLES_INPUT,
    SEED_INPUT,
    Manifest,
)
from dropnet.core.outputs import (
    PREDICTED_CLASS,
    SAMPLES,
    Mode,
    Task,
    all_output_names,
    default_output_names,
    graph_output_names,
    rows_axis,
)
from dropnet.server.package import ModelPackage, read_package
from dropnet.server.priority import call_at_lower_priority
from dropnet.server.providers import choose_provider
from dropnet.server.request import CheckedRequest, answer, check_request
from dropnet.server.sessions import ORT_TENSOR_TYPES, create_session, run_session, sample_bytes
from dropnet.server.validation import check_row_seeds

log = logging.getLogger(__name__)

DEFAULT_MC_CHUNK_BYTES = 64 * 1024**2
"""Default activation budget of one MC run, in bytes (the server's ``mc_chunk_bytes`` default). Past what the
CPU's caches hold, a run gets slower per row: on a 2-core AMD EPYC, ``benchmarks/mc_chunk_size.py`` measured
20% less CPU per sample-row at 64 MiB than at 256 MiB for 8 rows × T=200 and 4% less for 32 rows × T=50
(one row × T=1000, split into two runs, 5% more); the peak memory of a request at the cost limit halves."""
TINY = float(np.finfo(np.float32).tiny)
"""The floor under probabilities before their log, as in mc.onnx (0·log 0 = 0)."""
HOST_BYTES_PER_VALUE = 32
"""Most bytes :class:`SampleSummaries` holds per value of a chunk's samples: the float32 chunk and at
most three float64 arrays of its size at once (the values, their differences stacked on the running
sum, one entropy temporary): 4 + 3·8 = 28, rounded up for the stacked row and the [B, C] sums."""


@dataclass(frozen=True)
class Prediction:
    """The outputs of one prediction, by name, as the output table of the model's task and mode lists them.

    Each output name of the table is also an attribute: ``prediction.probabilities``,
    ``prediction.std``, ... (None when this mode has no such output or it was not asked for).
    """

    outputs: Mapping[str, np.ndarray]
    """The mode's default outputs (and ``samples`` when asked for), in the table's order."""
    classes: tuple[str, ...]
    """The model's class labels (empty for regression)."""
    seed: int | None = None
    """The MC seed used (drawn from OS entropy when none was given); None for a deterministic run."""

    @property
    def labels(self) -> list[str] | None:
        """The class label of each row's predicted class (None without ``predicted_class``)."""
        predicted = self.outputs.get(PREDICTED_CLASS)
        return None if predicted is None else [self.classes[i] for i in predicted]

    def __getattr__(self, name: str) -> np.ndarray | None:
        if name in all_output_names():
            return self.outputs.get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


class Predictor:
    """Runs one model package in-process. Build with :meth:`load`."""

    def __init__(
        self,
        package: ModelPackage,
        provider: str,
        deterministic: ort.InferenceSession,
        mc: ort.InferenceSession,
        max_mc_samples: int,
        mc_chunk_bytes: int,
        sample_bytes: int,
    ) -> None:
        self._package = package
        self._provider = provider
        self._deterministic = deterministic
        self._mc = mc
        self.max_mc_samples = min(max_mc_samples, package.manifest.mc.max_samples)
        """Largest T accepted: the caller's bound, lowered to the package's own limit."""
        self.mc_chunk_bytes = mc_chunk_bytes
        """Activation budget of one MC run: rows × samples × :attr:`sample_bytes` stays within it."""
        self.sample_bytes = sample_bytes
        """Activation bytes one row costs per MC sample (the manifest's ``mc.sample_bytes``, else measured)."""
        self.chunks_samples = FIRST_SAMPLE_INPUT in {i.name for i in mc.get_overridable_initializers()}
        """Whether mc.onnx takes ``first_sample`` (MC runs split T); packages exported before it split rows only."""

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        device: str = "auto",
        intra_op_threads: int | None = None,
        max_mc_samples: int = 1000,
        spin_wait: bool = True,
        mc_chunk_bytes: int = DEFAULT_MC_CHUNK_BYTES,
        mc_nice: int = 0,
    ) -> "Predictor":
        """Verify the package in ``model_dir`` and create its sessions on the chosen execution provider.

        ``spin_wait`` lets onnxruntime's idle intra-op threads busy-wait for the next run: lower
        latency on dedicated cores, wasted CPU where the cores are shared (a server's event loop).
        ``mc_chunk_bytes`` bounds the activations of one MC run (see the module docstring).
        ``mc_nice`` > 0 creates the MC session at that much lower CPU priority (Linux), so its intra-op
        threads yield the cores to deterministic runs (:mod:`dropnet.server.priority`).
        """
        if intra_op_threads is not None and (
            isinstance(intra_op_threads, bool) or not isinstance(intra_op_threads, int) or intra_op_threads < 1
        ):
            raise ConfigError(f"intra_op_threads must be a positive integer or None, got {intra_op_threads!r}")
        for name, value in (("max_mc_samples", max_mc_samples), ("mc_chunk_bytes", mc_chunk_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        provider = choose_provider(device)
        package = read_package(model_dir)
        manifest = package.manifest
        sessions = {}
        for mode in Mode:
            what = str(package.path / GRAPH_FILES[mode])
            sessions[mode] = call_at_lower_priority(functools.partial(
                create_session, package.graphs[mode], what, provider, GRAPH_INPUTS[mode],
                graph_output_names(manifest.task, mode), intra_op_threads, spin_wait, arena=mode is Mode.DETERMINISTIC,
            ), by=mc_nice if mode is Mode.MC else 0)
            _check_against_manifest(sessions[mode], manifest, mode, what)
        predictor = cls(
            package, provider, sessions[Mode.DETERMINISTIC], sessions[Mode.MC], max_mc_samples, mc_chunk_bytes,
            _sample_bytes(package),
        )
        log.info("loaded model %s version %s from %s on %s", manifest.name, manifest.version, package.path, provider)
        if not predictor.chunks_samples:
            log.info(
                "model %s version %s: its mc.onnx has no %s input (exported before it existed), so MC runs are "
                "split by rows only: one run holds all T samples of its rows", manifest.name, manifest.version,
                FIRST_SAMPLE_INPUT,
            )
        return predictor

    @property
    def manifest(self) -> Manifest:
        """The package's validated manifest."""
        return self._package.manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example."""
        return self.manifest.input.shape

    @property
    def provider(self) -> str:
        """"CUDAExecutionProvider" or "CPUExecutionProvider"."""
        return self._provider

    def run(self, request: CheckedRequest) -> dict[str, np.ndarray]:
        """The requested outputs of ``request`` (from ``dropnet.server.request.check_request``).

        Deterministic: one onnxruntime run; MC: runs of bounded size (:meth:`run_mc`).
        """
        if request.mode is Mode.MC:
            graph = self.run_mc(request.x, request.num_samples, request.row_seeds(), request.graph_outputs)
        else:
            graph = self.run_deterministic(request.x)
        return answer(request, graph)

    def run_deterministic(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every graph output of the weight-scaled network for checked rows ``x`` (``CheckedRequest.x``)."""
        outputs = graph_output_names(self.manifest.task, Mode.DETERMINISTIC)
        return run_session(self._deterministic, self._what(Mode.DETERMINISTIC), outputs, {INPUT_NAME: x})

    def run_mc(
        self, x: np.ndarray, num_samples: int, row_seeds: np.ndarray, outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The MC graph ``outputs`` (None: all) for checked rows ``x`` and T = ``num_samples``, one seed per row.

        ``num_samples`` and ``outputs`` are those of a :class:`CheckedRequest` (or a batch of them):
        they are not checked again here. Runs in chunks of rows and samples (:func:`mc_plan`); the
        summaries come from :class:`SampleSummaries` (for a package without ``first_sample``: from
        the graph, which then runs all T samples of a chunk of rows).
        """
        names = tuple(graph_output_names(self.manifest.task, Mode.MC) if outputs is None else outputs)
        seeds = check_row_seeds(row_seeds, x.shape[0])
        rows = x.shape[0]
        if self.chunks_samples:
            rows_per_run, samples_per_run = mc_plan(rows, num_samples, self.sample_bytes, self.mc_chunk_bytes)
        else:
            rows_per_run = max(1, self.mc_chunk_bytes // (num_samples * self.sample_bytes))
            samples_per_run = num_samples
        parts = [
            self._mc_rows(x[start : start + rows_per_run], num_samples, seeds[start : start + rows_per_run], names,
                          samples_per_run)
            for start in range(0, max(rows, 1), rows_per_run)
        ]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([part[name] for part in parts], axis=rows_axis(name)) for name in names}

    def _mc_rows(
        self, x: np.ndarray, num_samples: int, seeds: np.ndarray, names: tuple[str, ...], samples_per_run: int
    ) -> dict[str, np.ndarray]:
        """The MC ``names`` of rows ``x``, from runs of ``samples_per_run`` samples (all T without ``first_sample``)."""
        feeds = {INPUT_NAME: x, SEED_INPUT: seeds}
        what = self._what(Mode.MC)
        if not self.chunks_samples:
            return run_session(self._mc, what, names, {**feeds, NUM_SAMPLES_INPUT: np.array(num_samples, np.int64)})
        summaries = SampleSummaries(self.manifest.task, names, num_samples)
        for first in range(0, num_samples, samples_per_run):
            chunk = min(samples_per_run, num_samples - first)
            feeds[NUM_SAMPLES_INPUT] = np.array(chunk, dtype=np.int64)
            feeds[FIRST_SAMPLE_INPUT] = np.array(first, dtype=np.int64)
            summaries.add(run_session(self._mc, what, (SAMPLES,), feeds)[SAMPLES])
        return summaries.outputs()

    def predict(
        self, x: Any, mc_samples: int | None = None, seed: int | None = None, return_samples: bool = False
    ) -> Prediction:
        """Predict rows ``x``: weight scaling when ``mc_samples`` is None, else MC model averaging."""
        if mc_samples is None and (seed is not None or return_samples):
            raise InvalidInputError("seed and return_samples apply to Monte-Carlo prediction only; give mc_samples too")
        mode = Mode.DETERMINISTIC if mc_samples is None else Mode.MC
        outputs = (*default_output_names(self.manifest.task, mode), SAMPLES) if return_samples else None
        request = check_request(self, x, mode, mc_samples, seed, outputs)
        return Prediction(self.run(request), self.manifest.classes, request.seed)

    def _what(self, mode: Mode) -> str:
        return f"{self.name}/{GRAPH_FILES[mode]}"


def mc_plan(rows: int, num_samples: int, sample_bytes: int, budget: int) -> tuple[int, int]:
    """(rows per run, samples per run) so that rows × samples × ``sample_bytes`` stays within ``budget``.

    All rows and as many samples as fit; one sample of fewer rows when one sample of all rows is
    over the budget; at least one sample of one row per run, whatever the budget.
    """
    per_run = max(1, budget // sample_bytes)
    if rows <= per_run:
        return max(rows, 1), min(num_samples, per_run // max(rows, 1))
    return per_run, 1


class SampleSummaries:
    """The MC summaries of T samples [T, B, C or D], fed in order in chunks of samples.

    Exact across chunks: every statistic is a float64 sum to which the samples are added one at a
    time, in sample order, starting from the previous chunk's total (:func:`ordered_sum`), so any
    chunking of the samples (or of the rows) gives the same bytes. Classification:
    ``probabilities`` = mean, ``std`` = population std, ``predictive_entropy`` = entropy of the
    mean (nats), ``mutual_information`` = that minus the mean per-sample entropy, clamped at 0
    (0·log 0 = 0 via the :data:`TINY` floor, as in mc.onnx). Regression: ``mean``, ``std``. The
    sums are of the samples' differences to sample 0 (the same sample for any chunking), so the
    variance's cancellation is relative to the spread, not the magnitude, of the values. Only the
    sums the requested outputs need are kept, and the ``samples`` only when asked for. Memory: at
    most :data:`HOST_BYTES_PER_VALUE` bytes per value of a chunk, beyond the outputs.
    """

    def __init__(self, task: Task, names: Sequence[str], num_samples: int) -> None:
        """Summaries ``names`` of ``task`` (the MC output table's names) over ``num_samples`` samples."""
        self._task = task
        self._names = tuple(names)
        self._num_samples = num_samples
        wanted = set(names)
        self._means = bool(wanted - {SAMPLES})
        self._squares = "std" in wanted
        self._entropies = "mutual_information" in wanted
        self._keep_samples = SAMPLES in wanted
        self._samples: np.ndarray | None = None
        self._count = 0
        self._shift: np.ndarray | None = None
        self._sums: dict[str, np.ndarray] = {}

    def add(self, chunk: np.ndarray) -> None:
        """Add the next samples [n, B, C or D] (float32, the graph's ``samples``)."""
        first, self._count = self._count, self._count + len(chunk)
        if self._keep_samples:
            self._keep(chunk, first)
        if not self._means:
            return
        values = chunk.astype(np.float64)
        if self._shift is None:
            self._shift = values[0].copy()
        stacked = np.empty((len(values) + 1, *values.shape[1:]))
        np.subtract(values, self._shift, out=stacked[1:])
        self._add_up("differences", stacked)
        if self._squares:
            np.square(stacked[1:], out=stacked[1:])
            self._add_up("squares", stacked)
        if self._entropies:
            entropies = np.empty((len(values) + 1, *values.shape[1:-1]))
            entropies[1:] = entropy(values)
            self._add_up("entropies", entropies)

    def outputs(self) -> dict[str, np.ndarray]:
        """The requested outputs, float32, from the samples added so far (at least one)."""
        values: dict[str, np.ndarray] = {}
        if self._samples is not None:
            values[SAMPLES] = self._samples
        if self._means:
            count, shift = self._count, self._shift
            assert shift is not None, "no samples were added"
            mean_difference = self._sums["differences"] / count
            mean = shift + mean_difference
            values["mean" if self._task is Task.REGRESSION else "probabilities"] = mean.astype(np.float32)
            if self._squares:
                variance = np.maximum(self._sums["squares"] / count - np.square(mean_difference), 0.0)
                values["std"] = np.sqrt(variance).astype(np.float32)
            if self._task is Task.CLASSIFICATION:
                predictive = entropy(mean)
                values["predictive_entropy"] = predictive.astype(np.float32)
                if self._entropies:
                    information = np.maximum(predictive - self._sums["entropies"] / count, 0.0)
                    values["mutual_information"] = information.astype(np.float32)
        return {name: values[name] for name in self._names}

    def _keep(self, chunk: np.ndarray, first: int) -> None:
        """Keep the samples of ``chunk`` (samples first.. of all T) for the ``samples`` output."""
        if first == 0 and len(chunk) == self._num_samples:
            self._samples = chunk
            return
        if self._samples is None:
            self._samples = np.empty((self._num_samples, *chunk.shape[1:]), dtype=chunk.dtype)
        self._samples[first : first + len(chunk)] = chunk

    def _add_up(self, key: str, stacked: np.ndarray) -> None:
        """Add the samples ``stacked[1:]`` to the sum ``key`` in order (``stacked[0]`` is overwritten with it)."""
        stacked[0] = self._sums.get(key, 0.0)
        self._sums[key] = ordered_sum(stacked)


def ordered_sum(values: np.ndarray) -> np.ndarray:
    """values[0] + values[1] + … along axis 0, added in this order for every element (float64).

    numpy reduces axis 0 of a C-contiguous [n, m] array row by row (its inner loop runs along m),
    which is this order, when m > 1; when m == 1 its loop runs along the summed axis and adds
    pairwise, so a one-dimensional ``np.add.accumulate`` (each prefix from the previous one) is
    used instead. tests/server/test_mc_chunks.py checks both facts.
    """
    flat = values.reshape(len(values), -1)
    if flat.shape[1] != 1:
        return np.add.reduce(flat, axis=0).reshape(values.shape[1:])
    return np.add.accumulate(flat[:, 0])[-1:].copy().reshape(values.shape[1:])


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """-Σ p·log max(p, TINY) over the last axis (the classes), in nats, float64.

    Each row's class sum is numpy's sum of its C contiguous values, the same computation whatever
    the leading axes, so the chunking does not change it (tests/server/test_mc_chunks.py).
    """
    terms = np.maximum(probabilities, TINY)
    np.log(terms, out=terms)
    terms *= probabilities
    return -np.add.reduce(terms, axis=-1)


def _sample_bytes(package: ModelPackage) -> int:
    """The manifest's ``mc.sample_bytes``, or for a package exported before it was recorded, measured (logged)."""
    manifest = package.manifest
    if manifest.mc.sample_bytes is not None:
        return manifest.mc.sample_bytes
    measured = sample_bytes(package.graphs[Mode.MC], str(package.path / GRAPH_FILES[Mode.MC]), manifest.input)
    log.info(
        "model %s version %s: its manifest has no mc.sample_bytes (exported before it was recorded); measured %d "
        "activation bytes per row and sample from its mc.onnx", manifest.name, manifest.version, measured,
    )
    return measured


def _check_against_manifest(session: ort.InferenceSession, manifest: Manifest, mode: Mode, what: str) -> None:
    """Refuse a graph whose input or output shapes, or input type, differ from what the manifest says."""
    spec = manifest.input
    x = next(i for i in session.get_inputs() if i.name == INPUT_NAME)
    if x.type != ORT_TENSOR_TYPES[spec.dtype]:
        raise ModelPackageError(
            f"{what}: graph takes x of type {x.type}; "
            f"the manifest expects {spec.dtype} ({ORT_TENSOR_TYPES[spec.dtype]})"
        )
    shapes = {o.name: o.shape for o in session.get_outputs()}
    sizes = manifest.sizes()
    for output in manifest.outputs(mode):
        if not output.in_graph:
            continue
        shape = shapes[output.name]
        fits = len(shape) == len(output.shape) and all(
            shape[axis] == sizes[symbol] for axis, symbol in enumerate(output.shape) if symbol in sizes
        )
        if list(x.shape[1:]) != list(spec.shape) or not fits:
            raise ModelPackageError(
                f"{what}: graph takes x {x.shape} and gives {output.name} {shape}; the manifest expects "
                f"x (batch, {', '.join(map(str, spec.shape))}) and {len(manifest.labels)} {manifest.labels_key}"
            )
