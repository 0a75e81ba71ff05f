"""Helpers of the graph-builder tests: networks from real run directories, sessions, inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from tests.factories import make_run_dir
from dropnet.trainer.config import ModelConfig
from dropnet.trainer.models import InputSpec
from dropnet.trainer.rundir import load_run

CPU = ["CPUExecutionProvider"]


def network(directory: Path, seed: int = 0, **fields: Any) -> tuple[nn.Sequential, InputSpec]:
    """The eval-mode network of a run directory written with seeded random weights (digits spec)."""
    _, spec, model = load_run(make_run_dir(directory, ModelConfig(**fields), seed=seed))
    return model, spec


def session(
    proto: onnx.ModelProto | str | Path,
    level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    save_to: Path | None = None,
) -> ort.InferenceSession:
    """A CPU session at optimisation ``level``, optionally saving the optimised model to ``save_to``."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = 1
    if save_to is not None:
        options.optimized_model_filepath = str(save_to)
    source = proto.SerializeToString() if isinstance(proto, onnx.ModelProto) else str(proto)
    return ort.InferenceSession(source, options, providers=CPU)


def run(sess: ort.InferenceSession, **feeds: np.ndarray) -> dict[str, np.ndarray]:
    """All outputs of one run, by name."""
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def mc_feeds(x: np.ndarray, samples: int, seed: int | list[int] | np.ndarray) -> dict[str, np.ndarray]:
    """Feeds of mc.onnx: ``seed`` an int (sent as [1]) or one seed per row."""
    return {"x": x, "num_samples": np.array(samples, np.int64), "seed": np.atleast_1d(np.asarray(seed, np.int64))}


def rows(spec: InputSpec, count: int, seed: int = 0) -> np.ndarray:
    """``count`` float32 inputs drawn uniformly from the spec's value range."""
    low, high = spec.value_range
    return np.random.default_rng(seed).uniform(low, high, size=(count, *spec.shape)).astype(np.float32)


def torch_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The eval-mode network's logits for ``x``."""
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()
