"""``dropnet serve`` as a child process: start it, wait for lines of its log, stop it gracefully.

The one runner shared by ``dropnet demo``, the server benchmark and the tests; standard library only.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from dropnet.core.errors import DropnetError

log = logging.getLogger(__name__)

SERVING = re.compile(r"serving on (\S+:\d+)\s*$")
"""The line ``dropnet serve`` logs once every model is loaded and the port is bound; group 1 is host:port."""
REST = re.compile(r"REST on (https?://\S+:\d+)\s*$")
"""The line ``dropnet serve --http-port`` logs once the REST port is bound (before SERVING); group 1 is the URL."""
OUTPUT_TAIL_LINES = 40
"""Lines of the server's output an error quotes when there is no log file to point at."""


def serve_command() -> list[str]:
    """``dropnet serve`` run by this interpreter."""
    return [sys.executable, "-m", "dropnet.cli", "serve"]


class ServeProcess:
    """A started ``dropnet serve``; a reader thread collects its output (stdout and stderr) line by line.

    ``command`` replaces :func:`serve_command` (e.g. another venv's ``bin/dropnet serve``, or
    ``python -c SCRIPT``); ``flags`` follow it. With ``log_path`` every line is also written there.
    As a context manager it is stopped on exit, whatever happens.
    """

    def __init__(
        self,
        flags: Sequence[str],
        *,
        command: Sequence[str] | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.log_path = log_path
        self.lines: list[str] = []
        self._log_file = open(log_path, "w", encoding="utf-8") if log_path is not None else None
        try:
            self.process = subprocess.Popen(
                [*(command or serve_command()), *flags],
                cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            )
        except BaseException:
            if self._log_file is not None:
                self._log_file.close()
            raise
        self._changed = threading.Condition()
        self._ended = False
        self._reader = threading.Thread(target=self._read, name="dropnet-serve-output", daemon=True)
        self._reader.start()

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            for line in self.process.stdout:
                if self._log_file is not None:
                    self._log_file.write(line)
                    self._log_file.flush()
                with self._changed:
                    self.lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        finally:
            if self._log_file is not None:
                self._log_file.close()
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def wait_for(self, pattern: str | re.Pattern[str], timeout_s: float = 120.0) -> re.Match[str]:
        """The first output line matching ``pattern``, waiting up to ``timeout_s`` for it.

        Raises DropnetError if the process ends, or the time passes, without such a line.
        """
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if match := re.search(pattern, line):
                        return match
                seen = len(self.lines)
                if self._ended:
                    raise DropnetError(
                        f"dropnet serve exited with code {self.process.wait()} before logging "
                        f"{_text(pattern)!r}; {self._where()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DropnetError(f"dropnet serve did not log {_text(pattern)!r} within {timeout_s:g}s; {self._where()}")
                self._changed.wait(remaining)

    def wait_serving(self, timeout_s: float = 120.0) -> str:
        """Wait until the server is serving (every model loaded); return its ``host:port``."""
        return self.wait_for(SERVING, timeout_s).group(1)

    def wait_rest(self, timeout_s: float = 120.0) -> str:
        """Wait until the REST API is bound (``--http-port``); return its base URL, ``http[s]://host:port``."""
        return self.wait_for(REST, timeout_s).group(1)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (a graceful drain), SIGKILL if it has not exited ``timeout_s`` later; return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("dropnet serve did not stop within %gs of SIGTERM; killing it", timeout_s)
                self.process.kill()
        return self._reap()

    def kill(self) -> int:
        """SIGKILL (no drain); return the exit code."""
        if self.process.poll() is None:
            self.process.kill()
        return self._reap()

    def _reap(self) -> int:
        code = self.process.wait()
        self._reader.join()
        return code

    def _where(self) -> str:
        if self.log_path is not None:
            return f"see {self.log_path}"
        return "its last output:\n" + "\n".join(self.lines[-OUTPUT_TAIL_LINES:])


def _text(pattern: str | re.Pattern[str]) -> str:
    return pattern if isinstance(pattern, str) else pattern.pattern
