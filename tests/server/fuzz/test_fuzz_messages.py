"""Fuzzing every RPC of both services with raw message bytes (random, or a valid message cut, flipped or
padded), and the metadata and health RPCs with unicode, path-like, NUL-bearing and 20 KB model names
and versions, checked against the five invariants (see conftest.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.server.fuzz.strategies import (
    MODEL_INFER,
    PREDICT,
    RPCS,
    Rpc,
    RpcCase,
    fuzz_settings,
    metadata_requests,
    raw_messages,
)

if TYPE_CHECKING:
    from tests.server.fuzz.conftest import Invariants

GARBAGE = {
    "garbage bytes": RpcCase(PREDICT, b"\xff\xff\xff\xff", "issue"),
    "bad UTF-8 in a string field": RpcCase(MODEL_INFER, b"\x0a\x02\xc3\x28", "issue"),
}


@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.path.rsplit("/", 1)[1])
@fuzz_settings(22)
@given(data=st.data())
def test_raw_message_bytes(invariants: Invariants, rpc: Rpc, data: st.DataObject) -> None:
    invariants.check(data.draw(raw_messages(rpc), label="fuzz_case"), "raw bytes")


@pytest.mark.parametrize("name", GARBAGE)
def test_garbage_issue_cases(invariants: Invariants, name: str) -> None:
    invariants.check(GARBAGE[name], "issue 10 cases")


@fuzz_settings(150)
@given(fuzz_case=metadata_requests())
def test_metadata_and_health(invariants: Invariants, fuzz_case: RpcCase) -> None:
    invariants.check(fuzz_case, "metadata")
