"""The input ``x`` of an own-model package: its spec in the manifest and seeded example rows.

Inputs are float32 values or int64 token ids. A float input's value range is what the caller
gives, else the widest finite float32 range (the server then accepts any finite value). An int64
input's range is the valid ids the server lets through: what the caller gives, else
[0, num_embeddings - 1] of the module's first ``nn.Embedding``; without either it is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from dropnet.core import manifest as contract
from dropnet.core.errors import ModelPackageError

log = logging.getLogger(__name__)

DTYPES = ("float32", "int64")
FLOAT32_MAX = float(np.finfo(np.float32).max)
WIDEST_FLOAT_RANGE = (-FLOAT32_MAX, FLOAT32_MAX)


def input_spec(
    dtype: str, shape: Sequence[int], value_range: Sequence[float] | None, module: nn.Module | None = None
) -> contract.InputSpec:
    """The manifest's input: ``dtype`` values of one row's ``shape``, within the (checked or default) range."""
    if dtype not in DTYPES:
        raise ModelPackageError(f"input dtype {dtype} is not supported; expected one of {list(DTYPES)}")
    shape = tuple(int(d) for d in shape)
    if not shape or any(d < 1 for d in shape):
        raise ModelPackageError(f"input shape {list(shape)} is not a shape of one row; expected positive sizes")
    if value_range is None:
        value_range = _default_range(dtype, module)
    low, high = _checked_range(dtype, value_range)
    return contract.InputSpec(contract.INPUT_NAME, shape, dtype, (low, high))


def spec_of(example: torch.Tensor, value_range: Sequence[float] | None, module: nn.Module) -> contract.InputSpec:
    """The input spec of an example input [B, …] of ``module``; its values must lie in the range."""
    if not isinstance(example, torch.Tensor) or example.dim() < 2:
        shown = list(example.shape) if isinstance(example, torch.Tensor) else type(example).__name__
        raise ModelPackageError(f"example input is {shown}; expected a tensor [B, …] of B rows of at least one axis")
    dtype = str(example.dtype).removeprefix("torch.")
    spec = input_spec(dtype, example.shape[1:], value_range, module)
    low, high = spec.value_range
    if example.numel() and not (low <= example.min().item() and example.max().item() <= high):
        raise ModelPackageError(
            f"example input holds values in {example.min().item()}..{example.max().item()}; expected them within "
            f"the input's value range [{low}, {high}]"
        )
    return spec


def example_rows(spec: contract.InputSpec, rows: int, seed: int = 0) -> np.ndarray:
    """``rows`` seeded rows of ``spec``: integers uniform in the range; floats standard normal, clipped to it."""
    generator = np.random.default_rng(seed)
    low, high = spec.value_range
    size = (rows, *spec.shape)
    if spec.is_integer:
        return generator.integers(int(low), int(high), size=size, endpoint=True, dtype=np.int64)
    return np.clip(generator.standard_normal(size), low, high).astype(np.float32)


def _default_range(dtype: str, module: nn.Module | None) -> tuple[float, float]:
    if dtype == "float32":
        log.info("input value range: any finite float32 (pass value_range to state the range the model expects)")
        return WIDEST_FLOAT_RANGE
    embedding = next((m for m in module.modules() if isinstance(m, nn.Embedding)), None) if module else None
    if embedding is None:
        raise ModelPackageError(
            "an int64 input needs its value range (the valid token ids, e.g. --value-range 0,VOCABULARY-1); "
            "expected value_range, or an nn.Embedding in the module to take it from"
        )
    log.info("input value range: token ids 0..%d, from the first nn.Embedding", embedding.num_embeddings - 1)
    return 0, embedding.num_embeddings - 1


def _checked_range(dtype: str, value_range: Sequence[float]) -> tuple[float, float]:
    integer = dtype == "int64"
    try:
        low, high = value_range
    except (TypeError, ValueError):
        raise ModelPackageError(f"value range {value_range!r} is not a pair; expected [low, high]") from None
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    whole = numbers and (not integer or all(float(v).is_integer() for v in (low, high)))
    if not (whole and np.isfinite([low, high]).all() and low <= high):
        kind = "integers" if integer else "finite numbers"
        raise ModelPackageError(f"value range {[low, high]} is invalid; expected {kind} low <= high")
    return (int(low), int(high)) if integer else (float(low), float(high))
