"""Helpers of the serving-core tests: settings, inputs, and an engine that records and holds its runs."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from dropnet.server.predictor import Predictor
from dropnet.server.settings import ServerSettings

MODEL = "tiny"


def make_settings(models_dir: Path, **overrides: Any) -> ServerSettings:
    """Settings for tests: CPU, one worker, no hot reload unless asked."""
    return ServerSettings(**{"models_dir": models_dir, "device": "cpu", "reload_interval_s": 0.0, **overrides})


def digits_rows(rows: int, seed: int) -> np.ndarray:
    """``rows`` random digits-shaped inputs (1×8×8, values 0..16)."""
    return np.random.default_rng(seed).uniform(0.0, 16.0, size=(rows, 1, 8, 8)).astype(np.float32)


class RecordingEngine:
    """A real predictor whose runs are recorded (rows per run) and held until ``release()``."""

    def __init__(self, predictor: Predictor, held: bool = True) -> None:
        self._predictor = predictor
        self._gate = threading.Event()
        if not held:
            self._gate.set()
        self.started = threading.Event()
        self.rows: list[int] = []

    def release(self) -> None:
        self._gate.set()

    def run_deterministic(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self._enter(x)
        return self._predictor.run_deterministic(x)

    def run_mc(self, x: np.ndarray, num_samples: int, row_seeds: np.ndarray, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        self._enter(x)
        return self._predictor.run_mc(x, num_samples, row_seeds, outputs)

    def _enter(self, x: np.ndarray) -> None:
        self.rows.append(int(x.shape[0]))
        self.started.set()
        if not self._gate.wait(timeout=60):
            raise RuntimeError("RecordingEngine was never released")


def assert_outputs_match(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """Same output names, shapes and dtypes, values within 1e-6 relative.

    ``mutual_information`` is a difference of two entropies of size up to log(C), so its rounding
    error scales with log(C), not with its own (small) value: it gets 1e-6·log(C) absolute.
    """
    assert set(actual) == set(expected)
    for name, value in actual.items():
        assert value.shape == expected[name].shape and value.dtype == expected[name].dtype, name
        atol = 1e-6 * np.log(expected["probabilities"].shape[-1]) if name == "mutual_information" else 0.0
        np.testing.assert_allclose(value, expected[name], rtol=1e-6, atol=atol, err_msg=name)
