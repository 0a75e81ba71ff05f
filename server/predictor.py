"""The embedded inference engine: one model package, two onnxruntime sessions, checked requests.

No grpc, torch or trainer imports here: a serving install needs onnxruntime and numpy only.

    predictor = Predictor.load("models/digits")
    prediction = predictor.predict(x, mc_samples=100, seed=7)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from dropnet.core.errors import ConfigError, InvalidInputError, ModelPackageError
from dropnet.core.manifest import GRAPH_FILES, GRAPH_INPUTS, INPUT_NAME, NUM_SAMPLES_INPUT, SEED_INPUT, Manifest
from dropnet.core.outputs import (
    PREDICTED_CLASS,
    SAMPLES,
    Mode,
    all_output_names,
    default_output_names,
    graph_output_names,
)
from dropnet.server.package import ModelPackage, read_package
from dropnet.server.providers import choose_provider
from dropnet.server.request import CheckedRequest, answer, check_request
from dropnet.server.sessions import ORT_TENSOR_TYPES, create_session, run_session
from dropnet.server.validation import check_row_seeds

log = logging.getLogger(__name__)


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
    ) -> None:
        self._package = package
        self._provider = provider
        self._deterministic = deterministic
        self._mc = mc
        self.max_mc_samples = min(max_mc_samples, package.manifest.mc.max_samples)
        """Largest T accepted: the caller's bound, lowered to the package's own limit."""

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        device: str = "auto",
        intra_op_threads: int | None = None,
        max_mc_samples: int = 1000,
        spin_wait: bool = True,
    ) -> "Predictor":
        """Verify the package in ``model_dir`` and create its sessions on the chosen execution provider.

        ``spin_wait`` lets onnxruntime's idle intra-op threads busy-wait for the next run: lower
        latency on dedicated cores, wasted CPU where the cores are shared (a server's event loop).
        """
        if intra_op_threads is not None and (
            isinstance(intra_op_threads, bool) or not isinstance(intra_op_threads, int) or intra_op_threads < 1
        ):
            raise ConfigError(f"intra_op_threads must be a positive integer or None, got {intra_op_threads!r}")
        if isinstance(max_mc_samples, bool) or not isinstance(max_mc_samples, int) or max_mc_samples < 1:
            raise ConfigError(f"max_mc_samples must be a positive integer, got {max_mc_samples!r}")
        provider = choose_provider(device)
        package = read_package(model_dir)
        manifest = package.manifest
        sessions = {}
        for mode in Mode:
            what = str(package.path / GRAPH_FILES[mode])
            sessions[mode] = create_session(
                package.graphs[mode], what, provider, GRAPH_INPUTS[mode], graph_output_names(manifest.task, mode),
                intra_op_threads, spin_wait,
            )
            _check_against_manifest(sessions[mode], manifest, mode, what)
        log.info("loaded model %s version %s from %s on %s", manifest.name, manifest.version, package.path, provider)
        return cls(package, provider, sessions[Mode.DETERMINISTIC], sessions[Mode.MC], max_mc_samples)

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
        """The requested outputs of ``request`` (from ``dropnet.server.request.check_request``), in one onnxruntime run."""
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
        they are not checked again here.
        """
        names = graph_output_names(self.manifest.task, Mode.MC) if outputs is None else outputs
        feeds = {
            INPUT_NAME: x,
            NUM_SAMPLES_INPUT: np.array(num_samples, dtype=np.int64),
            SEED_INPUT: check_row_seeds(row_seeds, x.shape[0]),
        }
        return run_session(self._mc, self._what(Mode.MC), names, feeds)

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
