"""Verified downloads into a cache: try each mirror, check SHA-256, write atomically."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from dropnet.core.errors import DataError
from dropnet.core.fileio import atomic_write_bytes
from dropnet.trainer.data.sources import sha256_hex

log = logging.getLogger(__name__)

Fetch = Callable[[str], bytes]
"""Returns the body at a URL or raises OSError (urllib's errors derive from it)."""

TIMEOUT_S = 60.0


def fetch_url(url: str) -> bytes:
    """GET ``url`` with urllib (http(s) and file:// URLs)."""
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        return response.read()


def download(name: str, sha256: str, dest_dir: Path, mirrors: Sequence[str], fetch: Fetch = fetch_url) -> Path:
    """Fetch ``name`` from the first mirror that serves it with SHA-256 ``sha256``, then store it.

    A mirror that fails or serves a body with another hash is skipped (the body is never
    written); when every mirror fails, the error lists each one's problem.
    """
    failures = []
    for mirror in mirrors:
        url = mirror + name
        log.info("downloading %s", url)
        try:
            data = fetch(url)
        except (OSError, ValueError) as exc:
            log.warning("could not download %s: %s", url, exc)
            failures.append(f"{url} ({exc})")
            continue
        actual = sha256_hex(data)
        if actual != sha256:
            log.warning("%s has SHA-256 %s, expected %s; discarded", url, actual, sha256)
            failures.append(f"{url} (SHA-256 {actual}, expected {sha256}; discarded)")
            continue
        path = dest_dir / name
        atomic_write_bytes(path, data)
        return path
    raise DataError(
        f"could not download {name} from any mirror: {'; '.join(failures) or 'no mirrors given'}; "
        "expected network access, or pass a directory that holds the file (data_dir / --data-dir)"
    )


def ensure_cached(
    files: Mapping[str, str], cache_dir: Path, mirrors: Sequence[str], fetch: Fetch = fetch_url
) -> dict[str, Path]:
    """Paths of ``files`` (name → SHA-256) in ``cache_dir``, downloading any missing or not matching its hash."""
    paths = {}
    for name, sha256 in files.items():
        path = cache_dir / name
        if path.is_file():
            actual = sha256_hex(path.read_bytes())
            if actual == sha256:
                paths[name] = path
                continue
            log.warning("cached %s has SHA-256 %s, expected %s; downloading it again", path, actual, sha256)
        paths[name] = download(name, sha256, cache_dir, mirrors, fetch)
    return paths
