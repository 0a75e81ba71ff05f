"""``dropnet serve``: serve a models directory over gRPC until SIGTERM or SIGINT.

One flag per :class:`ServerSettings` field, with the field's docstring as its help; a value out of
range is a ConfigError (exit 2). On SIGTERM or SIGINT the server stops accepting requests, finishes
those in flight (``--grace`` seconds at most) and exits 0; a signal that arrives while the models
are still loading stops the loading and exits 0 as well. A second SIGTERM or SIGINT before the
stop is done exits at once, dropping whatever is in flight, with code 128 + the signal number
(143 for SIGTERM, 130 for SIGINT). Heavy imports (grpc, onnxruntime) happen in :func:`run` only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import types
import typing
from collections.abc import Callable
from typing import Any

from dropnet.fielddocs import field_docs
from dropnet.server.settings import ServerSettings

log = logging.getLogger(__name__)

FLAG_NAMES = {
    "models_dir": "--models",
    "batching": "--no-batching",
    "reload_interval_s": "--reload-interval",
    "shutdown_grace_s": "--grace",
}
"""Flags not spelled like their field (``--field-name``)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per ServerSettings field."""
    docs = field_docs(ServerSettings)
    hints = typing.get_type_hints(ServerSettings)
    for field in dataclasses.fields(ServerSettings):
        flag = FLAG_NAMES.get(field.name, "--" + field.name.replace("_", "-"))
        kind = _value_type(hints[field.name])
        help_text = docs.get(field.name, "")
        if kind is bool:
            negated = flag.startswith("--no-")
            parser.add_argument(
                flag, dest=field.name, action="store_false" if negated else "store_true",
                help=f"turn off {field.name}: {help_text}" if negated else help_text,
            )
        elif field.default is dataclasses.MISSING:
            parser.add_argument(flag, dest=field.name, type=kind, required=True, metavar="DIR", help=help_text)
        else:
            parser.add_argument(
                flag, dest=field.name, type=kind, default=field.default, help=f"{help_text} (default: %(default)s)"
            )


def _value_type(hint: Any) -> type:
    """The type a flag's value is parsed as: ``int | None`` → int."""
    if isinstance(hint, types.UnionType):
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return hint


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """The ServerSettings the parsed flags describe."""
    return ServerSettings(**{field.name: getattr(args, field.name) for field in dataclasses.fields(ServerSettings)})


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT, then drain; the exit code is 0 after a clean stop."""
    asyncio.run(serve(settings_from_args(args)))
    return 0


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """SIGTERM/SIGINT handling on the running loop: the first asks for a graceful stop, a second forces an exit."""

    def __init__(self, force_exit: Callable[[int], object] = os._exit) -> None:
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
        for handler in logging.getLogger().handlers:  # a forced exit skips the interpreter's cleanup
            handler.flush()
        self._force_exit(code)


async def serve(settings: ServerSettings, signals: StopSignals | None = None) -> None:
    """Load the models and serve until SIGTERM/SIGINT, then stop gracefully; handlers are in place before loading."""
    from dropnet.server.app import GrpcServer, address

    signals = signals or StopSignals()
    signals.install()
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
        await server.stop()
    log.info("stopped")
