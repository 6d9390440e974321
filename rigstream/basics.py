"""What every typed model of the rig file shares: the user-input error and the constrained
types. Its own module so the rule models (:mod:`rigstream.rules`) and the rig file's
(:mod:`rigstream.config`, which holds the rules) can both use them without importing each other
in a circle."""

from __future__ import annotations

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
