"""Installed size of the serving install (``pip install dropnet``) and of the training install (``dropnet[train]``).

    .venv/bin/python benchmarks/install_size.py

Builds a wheel of the working tree and installs it into two fresh venvs (tests/venvs.py): one without
extras, one with ``[train]``. Every distribution is pinned to the version in the running environment,
so torch is the build ``scripts/setup.sh`` installed (``torch==2.13.0``, CPU). Reports ``du -k`` of
each venv's site-packages and of its largest top-level folders, and writes ``benchmarks/results/install_size.json``.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.venvs builds the venvs

from tests.venvs import create_venv, site_packages  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "install_size.json"
INSTALLS = {"serving": (), "train": ("train",)}
LARGEST = 5


def measure(python: Path) -> dict[str, object]:
    """``du -k -d 1`` of the venv's site-packages and of its largest top-level entries, in MiB."""
    root = site_packages(python)
    du = subprocess.run(["du", "-k", "-d", "1", str(root)], check=True, capture_output=True, text=True).stdout
    kib = {Path(path).name if Path(path) != root else "": int(size)
           for size, path in (line.split("\t", 1) for line in du.splitlines())}
    total = kib.pop("")
    largest = sorted(kib.items(), key=lambda item: -item[1])[:LARGEST]
    return {"site_packages_mib": round(total / 1024), "largest_mib": {name: round(size / 1024) for name, size in largest}}


def main() -> int:
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extras in INSTALLS.items():
            results[name] = measure(create_venv(Path(tmp) / name, extras))
            largest = ", ".join(f"{folder} {mib}" for folder, mib in results[name]["largest_mib"].items())
            print(f"{name:<8} {results[name]['site_packages_mib']:>6} MiB in site-packages (largest, MiB: {largest})")
    results["python"] = platform.python_version()
    results["platform"] = f"{platform.system()} {platform.machine()}"
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
