"""``dropnet serve --workers N``: N server processes on one port, and the process that supervises them.

Python serves a request on one core at a time, whatever the machine has; several processes, each
a whole ``dropnet serve`` with its own models, event loop and metrics, use several. They bind the
same gRPC (and REST) port with SO_REUSEPORT, and Linux spreads new connections across them (a
connection stays with the process that accepted it, so one client channel is served by one
worker). The supervisor holds the ports from before the workers start until they have all exited,
so that port 0 resolves to one free port for all of them and a port taken by another program is
refused up front (exit 2).

Worker ``i`` serves its Prometheus metrics on ``--metrics-port`` + ``i`` (each on a free port when
it is 0). Worker processes get their settings through :data:`SETTINGS_ENV`, run in their own process
group (a terminal's Ctrl-C reaches the supervisor alone, which passes it on once) and get SIGTERM
when the supervisor dies. The first SIGTERM or SIGINT is passed to every worker, which stop
gracefully; a second one is passed on too (each worker then exits at once) and the supervisor exits
with 128 + its number. A worker that exits on its own stops the others, and the supervisor exits with
that worker's code (128 + N for a worker ended by signal N; 1 if it exited 0): an orchestrator
restarts the whole server.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from dropnet.core.errors import ConfigError
from dropnet.server.settings import ServerSettings

log = logging.getLogger(__name__)

SETTINGS_ENV = "DROPNET_SERVE_WORKER_SETTINGS"
"""Environment variable that hands a worker process its settings, as JSON."""
WORKER_ENV = "DROPNET_SERVE_WORKER_INDEX"
"""Environment variable holding a worker's index (0-based), shown in its log lines."""
POLL_S = 0.2
"""How often the supervisor checks whether a worker has exited."""
_PR_SET_PDEATHSIG = 1


def supervise(settings: ServerSettings) -> int:
    """Run ``settings.workers`` worker processes on one port until they stop; the exit code (see the module doc)."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError(f"--workers {settings.workers} needs Linux, where SO_REUSEPORT spreads connections across "
                          "processes; expected --workers 1 on this platform")
    with contextlib.ExitStack() as held:
        port = held.enter_context(_reserve(settings.host, settings.port)).getsockname()[1]
        http_port = None
        if settings.http_port is not None:
            http_port = held.enter_context(_reserve(settings.host, settings.http_port)).getsockname()[1]
        workers = [_start(settings, port, http_port, index) for index in range(settings.workers)]
        log.info("started %d workers on port %d%s: pids %s", len(workers), port,
                 "" if http_port is None else f" (REST {http_port})", " ".join(str(w.pid) for w in workers))
        return _wait(workers)


def worker_settings(settings: ServerSettings, port: int, index: int, http_port: int | None = None) -> ServerSettings:
    """The settings of worker ``index``: the shared ports (SO_REUSEPORT; gRPC, and REST if on) and its own metrics
    port."""
    metrics_port = settings.metrics_port
    if metrics_port:
        metrics_port += index
        if metrics_port > 65535:
            raise ConfigError(f"--metrics-port {settings.metrics_port} with --workers {settings.workers}: worker {index} "
                              f"would serve metrics on port {metrics_port}; expected a port ≤ {65536 - settings.workers}")
    shared = {"port": port, "reuse_port": True, "metrics_port": metrics_port, "http_port": http_port}
    return ServerSettings.from_dict({**settings.to_dict(), **shared})


@contextlib.contextmanager
def _reserve(host: str, port: int) -> Iterator[socket.socket]:
    """A socket bound to ``host:port`` with SO_REUSEPORT but not listening: it holds the port for the workers."""
    with contextlib.ExitStack() as stack:
        try:
            family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                 flags=socket.AI_PASSIVE)[0]
            held = stack.enter_context(socket.socket(family, kind, proto))
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            held.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); expected a free port on a "
                              "local interface") from None
        yield held


def _start(settings: ServerSettings, port: int, http_port: int | None, index: int) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ, SETTINGS_ENV: worker_settings(settings, port, index, http_port).model_dump_json(),
        WORKER_ENV: str(index),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "dropnet.server.worker_main"], env=environment, process_group=0,
        preexec_fn=_die_with_parent,
    )


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the supervisor dies (Linux's parent-death signal)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait(workers: list[subprocess.Popen[bytes]]) -> int:
    """Pass stop signals on and wait for every worker; the supervisor's exit code."""
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        log.info("%s received: passing it on to %d workers%s", name, len(workers),
                 " (a second one: they exit at once)" if len(received) > 1 else "")
        _signal_all(workers, signum)
        if len(received) > 1:
            raise SystemExit(128 + signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        failed: int | None = None
        while any(worker.poll() is None for worker in workers):
            for index, worker in enumerate(workers):
                code = worker.poll()
                if code is not None and not received and failed is None:
                    failed = _exit_code(code) or 1
                    log.error("worker %d (pid %d) exited with code %d: stopping the others", index, worker.pid, failed)
                    _signal_all(workers, signal.SIGTERM)
            time.sleep(POLL_S)
        if failed is not None:
            return failed
        return max(_exit_code(worker.returncode) for worker in workers)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _exit_code(returncode: int) -> int:
    """A process's exit code as a shell reports it: 128 + N for one ended by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def _signal_all(workers: list[subprocess.Popen[bytes]], signum: int) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signum)
