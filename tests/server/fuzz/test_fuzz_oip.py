"""Fuzzing ``inference.GRPCInferenceService/ModelInfer``: raw and typed contents, datatypes, shapes, values,
parameters (unknown, misspelt, mistyped, extreme), outputs, names and sizes (one test per family of
faults), each case checked against the five invariants (see conftest.py); and the requests issue 10
found mishandled."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dropnet.protos.inference import grpc_service_pb2 as oip
from tests.server.fuzz.strategies import MODEL, MODEL_INFER, OIP_FAMILIES, case, fuzz_settings, infer_requests
from tests.server.helpers import digits_rows

if TYPE_CHECKING:
    from tests.server.fuzz.conftest import Invariants


def _request(
    model: str = MODEL, shape: tuple[int, ...] = (2, 1, 8, 8), data: bytes | None = None
) -> oip.ModelInferRequest:
    raw = digits_rows(2, seed=5).tobytes() if data is None else data
    request = oip.ModelInferRequest(model_name=model, raw_input_contents=[raw])
    request.inputs.add(name="x", datatype="FP32", shape=shape)
    return request


def _misspelt() -> oip.ModelInferRequest:
    request = _request()
    request.parameters["mc_sample"].int64_param = 50
    return request


def _many_outputs() -> oip.ModelInferRequest:
    request = _request()
    for i in range(2_000):
        request.outputs.add(name=f"nope-{i}")
    return request


ISSUE_CASES = {
    "zero dimension beside huge ones": case(MODEL_INFER, _request(shape=(0, 2**40, 2**40), data=b""), "issue"),
    "the typo mc_sample": case(MODEL_INFER, _misspelt(), "issue"),
    "20 KB model name": case(MODEL_INFER, _request(model="é" * 10_000), "issue"),
    "2,000 unknown outputs": case(MODEL_INFER, _many_outputs(), "issue"),
}


@pytest.mark.parametrize("family", OIP_FAMILIES)
@fuzz_settings(28)
@given(data=st.data())
def test_model_infer(invariants: Invariants, family: str, data: st.DataObject) -> None:
    invariants.check(data.draw(infer_requests(family), label="fuzz_case"), "OIP ModelInfer")


@pytest.mark.parametrize("name", ISSUE_CASES)
def test_model_infer_issue_cases(invariants: Invariants, name: str) -> None:
    invariants.check(ISSUE_CASES[name], "issue 10 cases")
