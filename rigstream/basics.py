"""What every typed model of the rig file shares: the user-input error, the constrained types,
and the check that a folder some input names can be written. Its own module so the rule models
(:mod:`rigstream.rules`) and the rig file's (:mod:`rigstream.config`, which holds the rules)
can both use them without importing each other in a circle."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import msgspec

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]
Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")]


class InputError(ValueError):
    """Bad input from a user (a file, a folder, a value); the message says what and where.
    The CLI prints it as one line and exits with status 2."""


def write_error(folder: Path) -> str | None:
    """Why this process cannot make a file in ``folder``, or None. It makes one and removes it at
    once: ``os.access`` says yes to root everywhere, even on a read-only mount."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
