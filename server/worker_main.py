"""Entry point of one ``dropnet serve --workers N`` worker process, started by :mod:`dropnet.server.workers`.

    python -m dropnet.server.worker_main    # settings in $DROPNET_SERVE_WORKER_SETTINGS (JSON)
"""

from __future__ import annotations

import json
import logging
import os
import sys

from dropnet.core.errors import DropnetError
from dropnet.server.cli_serve import serve_here
from dropnet.server.settings import ServerSettings
from dropnet.server.workers import SETTINGS_ENV, WORKER_ENV


def main() -> int:
    """Serve with the settings the supervisor handed over; 2 with a one-line error if they cannot be served."""
    index = os.environ.get(WORKER_ENV, "?")
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        if SETTINGS_ENV not in os.environ:
            raise DropnetError(f"${SETTINGS_ENV} is not set; expected to be started by dropnet serve --workers N")
        return serve_here(ServerSettings.from_dict(json.loads(os.environ[SETTINGS_ENV])))
    except DropnetError as exc:
        print(f"dropnet serve: error: worker {index}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
