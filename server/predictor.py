"""The embedded inference engine: one model package, two onnxruntime sessions, validated inputs.

No grpc, torch or trainer imports here: a serving install needs onnxruntime and numpy only.

    predictor = Predictor.load("models/digits")
    prediction = predictor.predict(x, mc_samples=100, seed=7)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from dropnet.core.errors import ConfigError, InvalidInputError, ModelPackageError
from dropnet.core.manifest import (
    DETERMINISTIC_FILE,
    DETERMINISTIC_INPUTS,
    DETERMINISTIC_OUTPUTS,
    MC_FILE,
    MC_INPUTS,
    MC_OUTPUTS,
)
from dropnet.core.seeding import row_seeds as make_row_seeds
from dropnet.server.package import ModelPackage, read_package
from dropnet.server.providers import choose_provider
from dropnet.server.sessions import create_session, run_session
from dropnet.server.validation import as_batch, check_int, check_row_seeds, resolve_seed

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """Predictions for a batch of B rows over C classes (MC fields are None for a deterministic run)."""

    probabilities: np.ndarray
    """[B, C] class probabilities (for MC: the mean over samples)."""
    predicted_class: np.ndarray
    """[B] int64 argmax of ``probabilities``."""
    labels: list[str]
    """Class label of each row's predicted class."""
    std: np.ndarray | None = None
    """[B, C] standard deviation of each class probability over the MC samples."""
    predictive_entropy: np.ndarray | None = None
    """[B] entropy of the mean prediction (nats)."""
    mutual_information: np.ndarray | None = None
    """[B] predictive entropy minus the mean entropy of the samples (nats): model uncertainty."""
    samples: np.ndarray | None = None
    """[T, B, C] per-sample probabilities, when asked for."""
    seed: int | None = None
    """The MC seed used (drawn from OS entropy when none was given)."""


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
        self.max_mc_samples = min(max_mc_samples, package.manifest["mc"]["max_samples"])
        """Largest T accepted: the caller's bound, lowered to the package's own limit."""
        self.input_shape: tuple[int, ...] = tuple(package.manifest["input"]["shape"])
        self.classes: list[str] = list(package.manifest["classes"])

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
        if intra_op_threads is not None and (not isinstance(intra_op_threads, int) or intra_op_threads < 1):
            raise ConfigError(f"intra_op_threads must be a positive integer or None, got {intra_op_threads!r}")
        if isinstance(max_mc_samples, bool) or not isinstance(max_mc_samples, int) or max_mc_samples < 1:
            raise ConfigError(f"max_mc_samples must be a positive integer, got {max_mc_samples!r}")
        provider = choose_provider(device)
        package = read_package(model_dir)
        deterministic = create_session(
            package.deterministic, str(package.path / DETERMINISTIC_FILE), provider, intra_op_threads, spin_wait,
            DETERMINISTIC_INPUTS, DETERMINISTIC_OUTPUTS,
        )
        mc = create_session(
            package.mc, str(package.path / MC_FILE), provider, intra_op_threads, spin_wait, MC_INPUTS, MC_OUTPUTS
        )
        for file_name, session in ((DETERMINISTIC_FILE, deterministic), (MC_FILE, mc)):
            _check_against_manifest(session, package.manifest, str(package.path / file_name))
        log.info("loaded model %s version %s from %s on %s", package.manifest["name"],
                 package.manifest["version"], package.path, provider)
        return cls(package, provider, deterministic, mc, max_mc_samples)

    @property
    def manifest(self) -> dict[str, Any]:
        """The parsed ``manifest.json``."""
        return self._package.manifest

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def provider(self) -> str:
        """"CUDAExecutionProvider" or "CPUExecutionProvider"."""
        return self._provider

    def validate_input(self, x: Any, max_rows: int | None = None) -> np.ndarray:
        """``x`` as float32 [B, *shape], or :class:`InvalidInputError` saying what was expected.

        ``max_rows`` (None: no limit) bounds B, checked before the values are converted.
        """
        return as_batch(x, self.input_shape, max_rows)

    def run_deterministic(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """``logits`` and ``probabilities`` [B, C] of the weight-scaled network for validated rows ``x``."""
        return run_session(self._deterministic, f"{self.name}/{DETERMINISTIC_FILE}", DETERMINISTIC_OUTPUTS, {"x": x})

    def run_mc(
        self, x: np.ndarray, num_samples: int, row_seeds: np.ndarray, outputs: Sequence[str] = MC_OUTPUTS
    ) -> dict[str, np.ndarray]:
        """The requested MC ``outputs`` for validated rows ``x``, T = ``num_samples``, one seed per row."""
        unknown = [name for name in outputs if name not in MC_OUTPUTS]
        if unknown:
            raise InvalidInputError(f"unknown MC output(s) {unknown}; expected some of {list(MC_OUTPUTS)}")
        samples = check_int("mc_samples", num_samples, 1, self.max_mc_samples)
        feeds = {
            "x": x,
            "num_samples": np.array(samples, dtype=np.int64),
            "seed": check_row_seeds(row_seeds, x.shape[0]),
        }
        return run_session(self._mc, f"{self.name}/{MC_FILE}", outputs, feeds)

    def predict(
        self, x: Any, mc_samples: int | None = None, seed: int | None = None, return_samples: bool = False
    ) -> Prediction:
        """Predict rows ``x``: weight scaling when ``mc_samples`` is None, else MC model averaging."""
        batch = self.validate_input(x)
        if mc_samples is None:
            if seed is not None or return_samples:
                raise InvalidInputError(
                    "seed and return_samples apply to Monte-Carlo prediction only; give mc_samples too"
                )
            return self._prediction(self.run_deterministic(batch)["probabilities"])
        samples = check_int("mc_samples", mc_samples, 1, self.max_mc_samples)
        used_seed = resolve_seed(seed)
        wanted = [name for name in MC_OUTPUTS if return_samples or name != "samples"]
        out = self.run_mc(batch, samples, make_row_seeds(used_seed, batch.shape[0]), wanted)
        return self._prediction(
            out["probabilities"],
            std=out["std"],
            predictive_entropy=out["predictive_entropy"],
            mutual_information=out["mutual_information"],
            samples=out.get("samples"),
            seed=used_seed,
        )

    def _prediction(self, probabilities: np.ndarray, **mc: Any) -> Prediction:
        predicted = probabilities.argmax(axis=1).astype(np.int64)
        return Prediction(probabilities, predicted, [self.classes[i] for i in predicted], **mc)


def _check_against_manifest(session: ort.InferenceSession, manifest: dict[str, Any], what: str) -> None:
    """Refuse a graph whose input shape or class count differs from what the manifest says."""
    x = next(i for i in session.get_inputs() if i.name == "x")
    probabilities = next(o for o in session.get_outputs() if o.name == "probabilities")
    expected_shape, classes = list(manifest["input"]["shape"]), len(manifest["classes"])
    if list(x.shape[1:]) != expected_shape or probabilities.shape[-1] != classes:
        raise ModelPackageError(
            f"{what}: graph takes x {x.shape} and gives probabilities {probabilities.shape}; the manifest "
            f"expects x (batch, {', '.join(map(str, expected_shape))}) and {classes} classes"
        )
