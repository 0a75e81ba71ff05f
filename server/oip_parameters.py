"""The Open Inference Protocol parameters dropnet accepts, for both transports (no protobuf, no HTTP).

A compatibility choice (also in docs/interfaces.md): a request may carry ``mc_samples`` and
``seed`` (integers), which select MC mode. Standard clients add a few parameters of their own,
accepted: ``priority`` and ``timeout`` (Triton's schedule-policy extension, sent by tritonclient's
``infer(priority=, timeout=)``; dropnet serves in arrival order and honours the gRPC deadline
instead, so they have no effect), ``binary_data_output`` (the binary-data extension: on REST it
asks for binary outputs, on gRPC it is a mere hint), on the input ``binary_data_size`` (the
length of its binary data on REST; KServe's Python SDK sends it beside gRPC's raw_input_contents)
and on a requested output ``binary_data``. Anything else is refused naming the known parameters,
so that a typo (``mc_sample``) is not answered deterministically, and features dropnet lacks are
refused rather than silently skipped: Triton's ``sequence_*`` (stateful models), ``shared_memory_*``
(tensors in shared memory) and ``classification`` (top-k labels). A known parameter of the wrong
kind (``mc_samples`` as a string) is refused too.

Kinds are named as the gRPC ``InferParameter`` fields (``int64_param``, ``bool_param``, ...); the
REST codec names a JSON value's kind the same way (:func:`json_kind`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dropnet.core.errors import InvalidInputError, quoted_list

MC_SAMPLES = "mc_samples"
SEED = "seed"
BINARY_DATA_OUTPUT = "binary_data_output"
BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
INT64_LIMIT = 2**63


@dataclass(frozen=True)
class Parameter:
    """An OIP parameter dropnet accepts: the kinds it may be sent as, and whether it leaves the answer unchanged."""

    kinds: tuple[str, ...]
    ignored: bool = False
    """Accepted for compatibility with standard clients, without effect on the answer."""


_INTEGER, _BOOL = ("int64_param", "uint64_param"), ("bool_param",)
REQUEST_PARAMETERS: dict[str, Parameter] = {
    MC_SAMPLES: Parameter(_INTEGER),
    SEED: Parameter(_INTEGER),
    "priority": Parameter(_INTEGER, ignored=True),
    "timeout": Parameter(_INTEGER, ignored=True),
    BINARY_DATA_OUTPUT: Parameter(_BOOL, ignored=True),
}
"""Parameters of an inference request (see the module docstring for why each is here)."""
INPUT_PARAMETERS: dict[str, Parameter] = {BINARY_DATA_SIZE: Parameter(_INTEGER, ignored=True)}
"""Parameters of the input tensor."""
OUTPUT_PARAMETERS: dict[str, Parameter] = {BINARY_DATA: Parameter(_BOOL, ignored=True)}
"""Parameters of a requested output."""


def check_parameters(where: str, kinds: Mapping[str, str | None], known: Mapping[str, Parameter]) -> None:
    """InvalidInputError for a parameter not in ``known`` (naming the known ones) or of a kind it may not have.

    ``kinds`` maps each parameter sent to its kind, None when it holds no value.
    """
    unknown = sorted(key for key in kinds if key not in known)
    if unknown:
        used = [key for key, parameter in known.items() if not parameter.ignored]
        ignored = [key for key, parameter in known.items() if parameter.ignored]
        raise InvalidInputError(
            f"{where} has unknown parameter(s) {quoted_list(unknown)}; expected "
            + (f"some of {used} (or {ignored}, accepted and ignored)" if used else f"none, or {ignored} (ignored)")
        )
    for key, kind in kinds.items():
        expected = " or ".join(known[key].kinds)
        if kind is None:
            raise InvalidInputError(f"{where} parameter {key!r} is set but holds no value; expected {expected}")
        if kind not in known[key].kinds:
            raise InvalidInputError(f"{where} parameter {key!r} is a {kind}; expected {expected}")


def json_kind(value: Any) -> str | None:
    """The InferParameter kind a JSON parameter value stands for; None for null, "JSON array"/"JSON object"."""
    if isinstance(value, bool):
        return "bool_param"
    if isinstance(value, int):
        return "int64_param" if value < INT64_LIMIT else "uint64_param"
    if isinstance(value, float):
        return "double_param"
    if isinstance(value, str):
        return "string_param"
    if isinstance(value, list):
        return "JSON array"
    return None if value is None else "JSON object"
