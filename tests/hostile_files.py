"""What tests of the user-file readers need to build hostile files: a pickle that leaves a trace if run."""

from __future__ import annotations

import os
from pathlib import Path

OBJECTS = (
    "expected numeric arrays (object arrays are refused: loading them would unpickle, i.e. run, code from the file)"
)
"""The refusal every reader of user arrays gives an object array."""


class Unpickled:
    """An object whose unpickling creates a directory: proof that a file's pickle was (not) run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)
