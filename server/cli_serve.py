"""``dropnet serve``: serve a models directory over gRPC until SIGTERM or SIGINT.

One flag per :class:`ServerSettings` field, with the field's docstring as its help. On SIGTERM or
SIGINT the server stops accepting requests, finishes those in flight (``--grace`` seconds at most)
and exits 0. Heavy imports (grpc, onnxruntime) happen in :func:`run` only.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import types
import typing
from typing import Any

from dropnet.fielddocs import field_docs
from server.settings import ServerSettings

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


async def serve(settings: ServerSettings) -> None:
    """Start the server, log where it listens, wait for SIGTERM/SIGINT, stop gracefully."""
    from server.app import GrpcServer, address

    server = GrpcServer(settings)
    port = await server.start()
    log.info("serving on %s", address(settings.host, port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        log.info("stopping: refusing new requests, finishing in-flight ones (up to %gs)", settings.shutdown_grace_s)
    finally:
        await server.stop()
    log.info("stopped")
