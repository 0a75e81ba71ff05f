"""The ``dropnet serve`` runner, driven by stand-in child processes (no server needed)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from dropnet.core.errors import DropnetError
from dropnet.server.process import ServeProcess


def python(script: str) -> list[str]:
    return [sys.executable, "-c", script]


SERVES_THEN_WAITS = python(
    "import sys, time; print('loading', flush=True); print('x serving on 127.0.0.1:5678', file=sys.stderr, flush=True);"
    " time.sleep(60)"
)


def test_wait_serving_reads_the_address_from_stdout_or_stderr_and_copies_the_log(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    with ServeProcess([], command=SERVES_THEN_WAITS, log_path=log_path) as server:
        assert server.wait_serving(timeout_s=60) == "127.0.0.1:5678"
        assert server.wait_for("load").group(0) == "load"  # earlier lines are searched too
        assert server.stop() == -signal.SIGTERM
    assert log_path.read_text().splitlines() == ["loading", "x serving on 127.0.0.1:5678"]


def test_a_process_that_never_serves_times_out_naming_the_log_and_is_reaped(tmp_path: Path) -> None:
    server = ServeProcess([], command=python("import time; time.sleep(60)"), log_path=tmp_path / "server.log")
    with server, pytest.raises(DropnetError, match=r"did not log .*serving on.* within 0\.2s; see .*server\.log"):
        server.wait_serving(timeout_s=0.2)
    assert server.process.returncode is not None  # waited for: no zombie left behind


def test_a_process_that_exits_first_is_an_error_quoting_its_output() -> None:
    with ServeProcess(["4"], command=python("import sys; print('bad flag'); sys.exit(int(sys.argv[1]))")) as server:
        with pytest.raises(DropnetError, match=r"exited with code 4 before logging .*its last output:\nbad flag$"):
            server.wait_serving()
