"""onnxruntime sessions: creation and runs, with onnxruntime's errors turned into dropnet errors.

The one wrapper around onnxruntime's own exceptions, used by the Predictor and by the exporter's
check of the graphs it writes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from dropnet.core.errors import ConfigError, ModelPackageError
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


def create_session(
    model: bytes,
    what: str,
    provider: str,
    inputs: Sequence[str],
    outputs: Sequence[str],
    intra_op_threads: int | None = None,
    spin_wait: bool = False,
) -> ort.InferenceSession:
    """A session for ``model`` (named ``what`` in errors) on ``provider``, checked to have the given inputs/outputs.

    ``intra_op_threads`` None leaves onnxruntime's default; ``spin_wait`` lets idle intra-op threads
    busy-wait for the next run.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: placement notes on CUDA are not worth a warning
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
