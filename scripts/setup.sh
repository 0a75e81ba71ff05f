#!/usr/bin/env bash
# Create .venv (if missing) and install dropnet with its training extra and test dependencies into it.
# torch is pinned to the CPU build first, so that the project's `torch>=` range installs nothing more.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[train,dev]"
