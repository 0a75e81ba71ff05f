"""Fuzzing the embedded ``Predictor.predict`` (one test per family of inputs: valid, NaN/Inf and extreme
values, any shape, empty, broadcast to huge, non-numeric, non-arrays), with extreme and mistyped
mc_samples and seeds: each call must return a self-consistent, reproducible answer or raise the
dropnet error the contract names, log no traceback, and leave the next call's answer unchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.server.fuzz.strategies import EMBEDDED_FAMILIES, embedded_calls, fuzz_settings

if TYPE_CHECKING:
    from tests.server.fuzz.conftest import EmbeddedInvariants


@pytest.mark.parametrize("family", EMBEDDED_FAMILIES)
@fuzz_settings(30)
@given(data=st.data())
def test_predictor_predict(embedded: EmbeddedInvariants, family: str, data: st.DataObject) -> None:
    embedded.check(data.draw(embedded_calls(family), label="call"))
