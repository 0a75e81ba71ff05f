"""Modules, inputs and tasks the own-model export refuses: one clear ModelPackageError each."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from dropnet.core.errors import ModelPackageError
from dropnet.exporter.own import build_own_graphs
from tests.exporter.own import bad_models as bad

ROWS = torch.randn(3, 6)
CASES: dict[str, tuple[Callable[[], nn.Module], torch.Tensor, str]] = {
    "no site": (bad.no_dropout, ROWS, r"Sequential has no active dropout site, so MC dropout has nothing to sample"),
    "alpha dropout": (
        bad.alpha_dropout, ROWS, r"^2 \(AlphaDropout\) uses alpha_dropout .* cannot be sampled faithfully"
    ),
    "not exportable": (
        bad.DataDependentBranch, ROWS,
        r"^torch\.onnx cannot export DataDependentBranch \(in body\.2 \(DataDependentGate\)\): \w+",
    ),
    "random op": (bad.NoisyInEval, ROWS, r"^<root> \(NoisyInEval\) calls the random function torch\.randn_like"),
    "dropout on in eval": (bad.DropoutAlwaysOn, ROWS, r"applies dropout \(p = 0\.5\) in eval mode"),
    "training differs": (bad.TrainingShortcut, ROWS, r"something else than dropout depends on training"),
    "rows not first": (
        bad.SequenceFirst, torch.randn(3, 5, 8),
        r"^layer\.dropout1 \(Dropout\): dropout input is \[5, 2, 8\] for 2 rows .* batch_first=True",
    ),
    "shape rejected": (
        bad.no_dropout, torch.randn(3, 7), r"Sequential rejects the example input torch\.float32 \[3, 7\]"
    ),
    "dtype": (bad.no_dropout, ROWS.double(), r"example input is torch\.float64; expected one of"),
    "output shape": (
        lambda: nn.Sequential(nn.Linear(6, 2), nn.Dropout(0.3), nn.Flatten(0)), ROWS,
        r"returns torch\.float32 \[4\] for an input torch\.float32 \[2, 6\]; expected a float32 tensor \[B, C\]",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_with_a_clear_message(case: str) -> None:
    build, x, message = CASES[case]
    module = build().eval()
    with pytest.raises(ModelPackageError, match=message) as refused:
        build_own_graphs(module, x)
    assert "\n" not in str(refused.value)
    assert not any(m.training for m in module.modules())  # the module's modes are restored


def test_unknown_task() -> None:
    with pytest.raises(ModelPackageError, match=r"task 'ranking' is unknown; expected one of"):
        build_own_graphs(bad.no_dropout(), ROWS, task="ranking")
