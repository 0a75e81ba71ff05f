"""Fuzzing ``dropnet.v1.Predictor/Predict``: shapes, dtypes, byte lengths, values, modes, T, seeds, outputs,
names and sizes (one test per family of faults), each case checked against the five invariants (see
conftest.py); and the requests issue 10 found mishandled."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dropnet.protos.dropnet.v1 import predictor_pb2 as v1
from tests.server.fuzz.strategies import MODEL, PREDICT, V1_FAMILIES, case, fuzz_settings, predict_requests
from tests.server.helpers import digits_rows

if TYPE_CHECKING:
    from tests.server.fuzz.conftest import Invariants


def _tensor(rows: int) -> v1.Tensor:
    return v1.Tensor(shape=[rows, 1, 8, 8], dtype=v1.DATA_TYPE_FLOAT32, data=digits_rows(rows, seed=rows).tobytes())


ISSUE_CASES = {
    "zero dimension beside huge ones": case(
        PREDICT, v1.PredictRequest(model=MODEL, input=v1.Tensor(shape=[0, 2**40, 2**40], dtype=v1.DATA_TYPE_FLOAT32)),
        "issue",
    ),
    "response over --max-message-bytes": case(
        PREDICT, v1.PredictRequest(model=MODEL, input=_tensor(8), mc_samples=1000, seed=1, outputs=["samples"]), "issue"
    ),
    "20 KB model name": case(PREDICT, v1.PredictRequest(model="m" * 20_000, input=_tensor(2)), "issue"),
    "2,000 unknown outputs": case(
        PREDICT, v1.PredictRequest(model=MODEL, input=_tensor(2), outputs=[f"nope-{i}" for i in range(2_000)]), "issue"
    ),
}


@pytest.mark.parametrize("family", V1_FAMILIES)
@fuzz_settings(32)
@given(data=st.data())
def test_predict(invariants: Invariants, family: str, data: st.DataObject) -> None:
    invariants.check(data.draw(predict_requests(family), label="fuzz_case"), "v1 Predict")


@pytest.mark.parametrize("name", ISSUE_CASES)
def test_predict_issue_cases(invariants: Invariants, name: str) -> None:
    invariants.check(ISSUE_CASES[name], "issue 10 cases")
