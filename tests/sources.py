"""The repository's Python files and the module names they are imported as once installed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = {
    "dropnet": "dropnet", "trainer": "dropnet.trainer", "exporter": "dropnet.exporter",
    "server": "dropnet.server", "protos": "dropnet.protos",
}
"""Repository folder → installed package (pyproject.toml's package-dir)."""
SKIPPED_DIRS = {"__pycache__", "build", "dist", "runs"}


def module_name(relative: Path) -> str:
    """The name a repository file is imported as: installed packages by their dropnet.* names, the rest by path."""
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[0] in PACKAGE_FOLDERS:
        parts[0] = PACKAGE_FOLDERS[parts[0]]
    return ".".join(parts)


def python_files(root: Path = REPO) -> Iterator[Path]:
    """Every .py file under ``root`` (relative to it) outside virtual environments, caches, build output and hidden folders."""
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if not any(part.startswith(".") or part in SKIPPED_DIRS for part in relative.parts[:-1]):
            yield relative


def installed_modules(root: Path = REPO) -> set[str]:
    """The modules a wheel of the repository at ``root`` must hold."""
    return {module_name(relative) for relative in python_files(root) if relative.parts[0] in PACKAGE_FOLDERS}
