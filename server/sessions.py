"""onnxruntime sessions: creation, runs and the activation size of mc.onnx, with onnxruntime's
errors turned into dropnet errors.

The one wrapper around onnxruntime's own exceptions, used by the Predictor and by the exporter's
check of the graphs it writes.
"""

from __future__ import annotations

import bisect
import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dropnet.core.errors import ConfigError, ModelPackageError
from dropnet.core.manifest import INPUT_NAME, NUM_SAMPLES_INPUT, SEED_INPUT, InputSpec
from dropnet.server.providers import CPU, CUDA

_ORT_STATE = ort.capi.onnxruntime_pybind11_state
# onnxruntime raises its own Exception subclasses (Fail, InvalidArgument, ...), and RuntimeError.
_ORT_ERRORS: tuple[type[Exception], ...] = (RuntimeError,) + tuple(
    obj for obj in vars(_ORT_STATE).values() if isinstance(obj, type) and issubclass(obj, Exception)
)

ORT_TENSOR_TYPES = {
    "float32": "tensor(float)", "float64": "tensor(double)", "float16": "tensor(float16)",
    "int64": "tensor(int64)", "int32": "tensor(int32)", "uint8": "tensor(uint8)",
}
"""onnxruntime's name of the element type of each input dtype the manifest allows."""
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
"""Ops whose output onnxruntime's CPU kernels alias to their input: no memory of their own."""
PROBES = ((2, 2), (3, 2), (2, 3), (3, 3))
"""(T, B) of the runs :func:`sample_bytes` profiles, in this order."""


def create_session(
    model: bytes,
    what: str,
    provider: str,
    inputs: Sequence[str],
    outputs: Sequence[str],
    intra_op_threads: int | None = None,
    spin_wait: bool = False,
    arena: bool = True,
) -> ort.InferenceSession:
    """A session for ``model`` (named ``what`` in errors) on ``provider``, checked to have the given inputs/outputs.

    ``intra_op_threads`` None leaves onnxruntime's default; ``spin_wait`` lets idle intra-op threads
    busy-wait for the next run; ``arena`` False turns off onnxruntime's CPU memory arena, which
    otherwise keeps the largest run's peak allocated for the session's life.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: placement notes on CUDA are not worth a warning
    options.enable_cpu_mem_arena = arena
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
    providers = [CUDA, CPU] if provider == CUDA else [CPU]
    try:
        session = ort.InferenceSession(model, options, providers=providers)
    except _ORT_ERRORS as exc:
        raise ModelPackageError(f"{what}: onnxruntime {ort.__version__} cannot load it ({exc})") from None
    if session.get_providers()[0] != provider:
        raise ConfigError(f"{what}: onnxruntime placed the session on {session.get_providers()[0]}, not {provider}")
    have_inputs = [i.name for i in session.get_inputs()]
    have_outputs = [o.name for o in session.get_outputs()]
    if sorted(have_inputs) != sorted(inputs) or not set(outputs) <= set(have_outputs):
        raise ModelPackageError(
            f"{what}: graph has inputs {have_inputs} and outputs {have_outputs}; "
            f"expected inputs {list(inputs)} and outputs {list(outputs)}"
        )
    return session


def run_session(
    session: ort.InferenceSession, what: str, outputs: Sequence[str], feeds: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Run ``session`` and return the requested outputs by name; ModelPackageError when onnxruntime fails."""
    try:
        values = session.run(list(outputs), feeds)
    except _ORT_ERRORS as exc:
        shapes = {name: value.shape for name, value in feeds.items()}
        raise ModelPackageError(
            f"{what}: onnxruntime {ort.__version__} failed to run it on inputs of shapes {shapes} ({exc})"
        ) from None
    return dict(zip(outputs, values))


def sample_bytes(mc: bytes, what: str, spec: InputSpec) -> int:
    """Activation bytes per row and MC sample of the mc graph ``mc`` (``what`` in errors) whose input is ``spec``.

    What it counts: the outputs of every node onnxruntime runs on the CPU, after its graph
    optimisations (fused nodes count once), except views (:data:`VIEW_OPS`). Each output's size is
    bilinear in T and B, a·T·B + b·T + c·B + d ([T, B, n] masks and activations, [T, 1, W] noise
    counters, [B, n] layers before the first dropout site, shapes); this returns Σ a, read from
    onnxruntime's profile of runs at the (T, B) of :data:`PROBES` as a = s(3,3) - s(3,2) - s(2,3) + s(2,2).
    Every tensor is counted as if all were alive at once, so rows·T·sample_bytes bounds a run's
    activations from above (onnxruntime frees or reuses a buffer once its consumers ran). Not
    counted: weights, and tensors that grow with T alone or B alone. At least 1.
    """
    row = np.full((1, *spec.shape), min(max(0, spec.value_range[0]), spec.value_range[1]), dtype=spec.dtype)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="dropnet-profile-") as directory:
        options.profile_file_prefix = os.path.join(directory, "mc")
        try:
            session = ort.InferenceSession(mc, options, providers=[CPU])
            for samples, rows in PROBES:
                feeds = {
                    INPUT_NAME: np.repeat(row, rows, axis=0),
                    NUM_SAMPLES_INPUT: np.array(samples, dtype=np.int64),
                    SEED_INPUT: np.array([0], dtype=np.int64),
                }
                session.run(None, feeds)
            events = json.loads(Path(session.end_profiling()).read_text())
        except _ORT_ERRORS as exc:
            raise ModelPackageError(f"{what}: onnxruntime {ort.__version__} failed to profile it ({exc})") from None
    sizes = _output_bytes_per_run(events)
    if len(sizes) != len(PROBES):
        raise ModelPackageError(f"{what}: onnxruntime's profile holds {len(sizes)} runs; expected {len(PROBES)}")
    s22, s32, s23, s33 = sizes
    return max(1, sum(s33[node] - s32[node] - s23[node] + s22[node] for node in s22))


def _output_bytes_per_run(events: list[dict]) -> list[dict[str, int]]:
    """Per run ("model_run" event) of an onnxruntime profile, in order: node name → its outputs' bytes.

    Views (:data:`VIEW_OPS`) count 0.
    """
    runs = sorted((event["ts"], event["ts"] + event["dur"]) for event in events if event.get("name") == "model_run")
    starts = [start for start, _ in runs]
    sizes: list[dict[str, int]] = [defaultdict(int) for _ in runs]
    for event in events:
        args = event.get("args", {})
        if event.get("cat") != "Node" or "output_size" not in args:
            continue
        index = bisect.bisect_right(starts, event["ts"]) - 1
        if index >= 0 and event["ts"] <= runs[index][1] and args.get("op_name") not in VIEW_OPS:
            sizes[index][event["name"]] += int(args["output_size"])
    return sizes
