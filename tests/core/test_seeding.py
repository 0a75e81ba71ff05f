"""row_seeds: the per-row seeds a single seed stands for (numpy only, shared with the server)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dropnet.core.errors import InvalidInputError
from dropnet.core.seeding import row_seeds


def test_row_b_gets_the_seed_xor_b_shifted_by_32() -> None:
    seeds = row_seeds(5, 3)
    assert seeds.dtype == np.int64
    assert seeds.tolist() == [5, 5 ^ (1 << 32), 5 ^ (2 << 32)]
    assert row_seeds(-1, 2).tolist() == [-1, -1 ^ (1 << 32)]
    assert row_seeds(7, 0).shape == (0,)


def test_seeds_below_2_to_32_never_collide_across_rows() -> None:
    seeds = np.concatenate([row_seeds(s, 64) for s in (0, 1, 2**32 - 1)])
    assert np.unique(seeds).size == seeds.size


def test_extreme_seeds_stay_in_int64() -> None:
    assert row_seeds(2**63 - 1, 2).tolist() == [2**63 - 1, (2**63 - 1) ^ (1 << 32)]
    assert row_seeds(np.int64(-(2**63)), 1).tolist() == [-(2**63)]


@pytest.mark.parametrize("seed", [2**63, -(2**63) - 1, 1.5, "3", True, None])
def test_bad_seeds_are_refused(seed: object) -> None:
    with pytest.raises(InvalidInputError, match=r"seed must be an integer in \[-2\^63, 2\^63\)"):
        row_seeds(seed, 2)  # type: ignore[arg-type]


@pytest.mark.parametrize("rows", [-1, 2**31 + 1, 2.0])
def test_bad_row_counts_are_refused(rows: object) -> None:
    with pytest.raises(InvalidInputError, match="rows must be an integer"):
        row_seeds(0, rows)  # type: ignore[arg-type]


def test_imports_neither_torch_nor_onnx() -> None:
    code = "import sys, dropnet.core.seeding; print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
