"""Fresh virtual environments with dropnet installed, non-editable, from a copy of the working tree.

Shared by the serving-install test and ``benchmarks/install_size.py``. Every distribution is pinned
(a pip constraints file) to the version this interpreter's environment holds, so a fresh install
resolves to the same releases as the development venv and reuses what pip has cached.
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.sources import PACKAGE_FOLDERS, REPO

log = logging.getLogger(__name__)

PROJECT_FILES = ("pyproject.toml", "README.md", *PACKAGE_FOLDERS)
"""What building the wheel reads."""


def pinned_versions() -> list[str]:
    """``name==version`` of every distribution in this environment except dropnet itself."""
    versions = {dist.metadata["Name"]: dist.version for dist in importlib.metadata.distributions()}
    return sorted(f"{name}=={version}" for name, version in versions.items() if name and name != "dropnet")


def build_wheel(work_dir: Path) -> Path:
    """A wheel of the working tree, built from a copy (the tree itself gets no build/ or egg-info)."""
    source = work_dir / "source"
    shutil.copytree(REPO, source, ignore=_not_built)
    wheels = work_dir / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(source)])
    (wheel,) = wheels.glob("dropnet-*.whl")
    return wheel


def _not_built(folder: str, names: list[str]) -> set[str]:
    if Path(folder) == REPO:
        return set(names) - set(PROJECT_FILES)
    return set(names) & {"__pycache__"}


def create_venv(venv: Path, extras: Sequence[str] = ()) -> Path:
    """A new venv at ``venv`` with dropnet (and ``extras``) installed from the working tree; returns its python.

    The venv has no pip of its own: this environment's pip installs into it (``pip --python``).
    """
    work_dir = venv.with_name(venv.name + "-build")
    work_dir.mkdir(parents=True)
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    constraints = work_dir / "constraints.txt"
    constraints.write_text("\n".join(pinned_versions()) + "\n")
    wheel = build_wheel(work_dir)
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--constraint", str(constraints),
          f"{wheel}[{','.join(extras)}]" if extras else str(wheel)])
    return python


def site_packages(python: Path) -> Path:
    """The site-packages folder of the venv whose interpreter is ``python``."""
    return Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip())


def _run(command: list[str]) -> str:
    """The command's stdout; a failure raises with its stderr."""
    log.debug("running %s", command)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with code {done.returncode}:\n{done.stderr}")
    return done.stdout
