#!/bin/sh
# The serving image's install step (Dockerfile), also run by tests/test_deploy.py in a fresh venv:
# dropnet's wheel without extras, then a check that `dropnet serve` starts up as far as its help and
# that nothing of the training extra (torch, ...) came with it.
#   usage: sh deploy/install.sh DROPNET_WHEEL     (runs the `python` and `dropnet` found on PATH)
set -eu
if [ "$#" -ne 1 ]; then
    echo "usage: $0 DROPNET_WHEEL (a dropnet-*.whl; expected exactly one argument, got $#)" >&2
    exit 2
fi
python -m pip install "$1"
dropnet serve --help >/dev/null
python - <<'PY'
import importlib.util
import sys

from dropnet.extras import TRAIN_MODULES

present = [name for name in TRAIN_MODULES if importlib.util.find_spec(name)]
if present:
    sys.exit(f"the serving install holds modules of the training extra: {present}; expected none of {TRAIN_MODULES}")
PY
