"""``python -m dropnet``: the ``dropnet`` command, for launchers that start a module (``torchrun -m dropnet train ...``)."""

import sys

from dropnet.cli import main

sys.exit(main())
