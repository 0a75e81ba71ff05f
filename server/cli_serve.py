"""``dropnet serve``: serve a models directory over gRPC until SIGTERM or SIGINT.

One flag per :class:`ServerSettings` field (:mod:`dropnet.settings_flags`), with the field's
docstring as its help; a value out of range is a ConfigError (exit 2). On SIGTERM or SIGINT the
server stops accepting calls and gives those in flight ``--grace`` seconds; each one still running
then ends UNAVAILABLE, and the process exits 0 within about ``--grace`` +
:data:`dropnet.server.dataplane.CUT_MARGIN_S` seconds. An onnxruntime run cannot be interrupted, so
one still going then is not waited for: the process exits without it (:func:`exit_now`). A signal
that arrives while the models are still loading stops the loading and exits 0 as well. A second
SIGTERM or SIGINT before the stop is done exits at once, dropping whatever is in flight, with code
128 + the signal number (143 for SIGTERM, 130 for SIGINT). Heavy imports (grpc, onnxruntime) happen
in :func:`run` only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from dropnet.core.errors import ConfigError
from dropnet.server.settings import ServerSettings
from dropnet.settings_flags import add_flags, given_values

log = logging.getLogger(__name__)

FLAG_NAMES = {"models_dir": "--models", "reload_interval_s": "--reload-interval", "shutdown_grace_s": "--grace"}
"""Flags not spelled like their field (``--field-name``)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per ServerSettings field."""
    add_flags(parser, ServerSettings, name="server", renames=FLAG_NAMES)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """The ServerSettings the parsed flags describe (the fields' defaults for the flags not given)."""
    return ServerSettings.from_dict(given_values(args))


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT, then drain; the exit code is 0 after a stop, even one that cut requests.

    With ``--workers N`` (N > 1) this process supervises N serving processes (:mod:`dropnet.server.workers`).
    """
    settings = settings_from_args(args)
    if settings.workers > 1:
        from dropnet.server.workers import supervise

        return supervise(settings)
    return serve_here(settings)


def serve_here(settings: ServerSettings) -> int:
    """Serve in this process until SIGTERM/SIGINT, then drain; 0 (see :func:`run`)."""
    from dropnet.server.memory import return_freed_memory

    return_freed_memory()
    with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
        finished = runner.run(serve(settings))
    if not finished:
        exit_now(0)  # the interpreter would wait for the worker threads still in onnxruntime
    return 0


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the event loop of ``--event-loop`` ``choice`` (None: asyncio's default)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("--event-loop uvloop: uvloop is not installed; expected `pip install uvloop` "
                              "(Linux or macOS), or --event-loop asyncio") from None
        log.info("uvloop is not installed: serving on asyncio's event loop")
        return None
    return uvloop.new_event_loop


def exit_now(code: int) -> NoReturn:
    """Flush the log and the standard streams, then end the process with ``code`` without waiting for any thread."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """SIGTERM/SIGINT handling on the running loop: the first asks for a graceful stop, a second forces an exit."""

    def __init__(self, force_exit: Callable[[int], object] = exit_now) -> None:
        self.requested = asyncio.Event()
        """Set by the first signal."""
        self._force_exit = force_exit

    def install(self) -> None:
        """Handle :data:`STOP_SIGNALS` on the running loop (until it closes)."""
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self.received, signum)

    def received(self, signum: int) -> None:
        """The first call sets :attr:`requested`; a later one logs and exits with 128 + ``signum`` at once."""
        name = signal.Signals(signum).name
        if not self.requested.is_set():
            log.info("%s received: stopping (send it again to exit at once)", name)
            self.requested.set()
            return
        code = 128 + signum
        log.warning("second %s received: exiting now with code %d, dropping in-flight requests", name, code)
        self._force_exit(code)


async def serve(settings: ServerSettings, signals: StopSignals | None = None) -> bool:
    """Load the models and serve until SIGTERM/SIGINT, then stop gracefully; handlers are in place before loading.

    Returns False when the stop left onnxruntime runs going in worker threads (see :meth:`GrpcServer.stop`).
    """
    from dropnet.server.app import GrpcServer, address

    signals = signals or StopSignals()
    signals.install()
    log.info("event loop: %s", type(asyncio.get_running_loop()).__module__.split(".")[0])
    server = GrpcServer(settings)
    starting = asyncio.create_task(server.start(), name="dropnet-start")
    stop_requested = asyncio.create_task(signals.requested.wait(), name="dropnet-stop-signal")
    try:
        await asyncio.wait({starting, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            log.info("stopping before the models finished loading")
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        else:
            port = starting.result()  # raises what start() raised (a ConfigError: exit 2)
            log.info("serving on %s", address(settings.host, port))
            await stop_requested
            log.info("stopping: refusing new requests, finishing in-flight ones (up to %gs)", settings.shutdown_grace_s)
    finally:
        stop_requested.cancel()
        finished = await server.stop()
    log.info("stopped")
    return finished
