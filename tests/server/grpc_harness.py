"""Helpers of the gRPC tests: a real server on 127.0.0.1:0 in a background thread, and channels to it."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc

from dropnet.server.app import GrpcServer
from dropnet.server.settings import ServerSettings
from tests.server.helpers import MODEL, make_settings

T = TypeVar("T")


def models_dir_with(package: Path, root: Path) -> Path:
    """A models directory under ``root`` holding ``package`` as ``tiny/1``."""
    models = root / "models"
    shutil.copytree(package, models / MODEL / "1")
    return models


def grpc_settings(models_dir: Path, **overrides: Any) -> ServerSettings:
    """Test settings bound to 127.0.0.1 port 0."""
    return make_settings(models_dir, **{"host": "127.0.0.1", "port": 0, **overrides})


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail after two minutes."""
    for _ in range(12000):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting until {what}")


class ServerThread:
    """A :class:`GrpcServer` serving from its own event loop in a background thread."""

    def __init__(self, settings: ServerSettings) -> None:
        self.server = GrpcServer(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-test-server", daemon=True)
        self.port = 0

    @property
    def alive(self) -> bool:
        """Whether the server's thread and event loop still run."""
        return self._thread.is_alive() and self._loop.is_running()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=120)

    def channel(self, **options: Any) -> grpc.Channel:
        """A blocking channel to the server."""
        return grpc.insecure_channel(self.target, options=list(options.items()))

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        try:
            self.port = self.run(self.server.start())
        except BaseException:
            self._close_loop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.server.stop(grace=0))
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
