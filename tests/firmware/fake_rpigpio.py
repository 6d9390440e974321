"""A stand-in for RPi.GPIO (0.7.x) that behaves like the real module and records every call.

It enforces what the real C module enforces (numbering mode set before use, one mode per
process, valid channels, output only on outputs, cleanup returning channels to inputs and the
mode to unset), with the same exception types and messages, so a driver that passes here
does not meet a new error on a Pi. Every call is recorded in order with ``time.monotonic_ns()``,
failed calls too: ``calls`` is what a Pi would have received.

Install it for one test with :func:`install` (``sys.modules["RPi"]`` and ``["RPi.GPIO"]``).
"""

from __future__ import annotations

import sys
import time
import types
import warnings
from typing import Any, NamedTuple

import pytest

NO_INITIAL = -1
_MODE_MESSAGE = (
    "Please set pin numbering mode using GPIO.setmode(GPIO.BOARD) or GPIO.setmode(GPIO.BCM)"
)
# Physical header pin -> BCM GPIO number on the 40-pin header (Pi 2 and later).
_BOARD_TO_BCM = {
    3: 2,
    5: 3,
    7: 4,
    8: 14,
    10: 15,
    11: 17,
    12: 18,
    13: 27,
    15: 22,
    16: 23,
    18: 24,
    19: 10,
    21: 9,
    22: 25,
    23: 11,
    24: 8,
    26: 7,
    27: 0,
    28: 1,
    29: 5,
    31: 6,
    32: 12,
    33: 13,
    35: 19,
    36: 16,
    37: 26,
    38: 20,
    40: 21,
}


class Call(NamedTuple):
    t_ns: int
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class FakeGPIO(types.ModuleType):
    """The module object: constants and functions as in RPi.GPIO, plus ``calls`` and state."""

    BOARD = 10
    BCM = 11
    OUT = 0
    IN = 1
    HIGH = 1
    LOW = 0
    PUD_OFF = 20
    PUD_DOWN = 21
    PUD_UP = 22
    VERSION = "0.7.1 (fake)"
    RPI_INFO = {"P1_REVISION": 3, "TYPE": "Pi 4 Model B (fake)", "PROCESSOR": "BCM2711"}

    def __init__(self) -> None:
        super().__init__("RPi.GPIO")
        self.calls: list[Call] = []
        self.mode: int | None = None
        self.warnings_on = True
        self.directions: dict[int, int] = {}
        """BCM number -> IN or OUT, for channels set up and not cleaned up."""
        self.levels: dict[int, int] = {}
        self.history: dict[int, list[tuple[int, int]]] = {}
        """BCM number -> [(t_ns, level)] for every output() (and setup's initial level)."""

    # -- inspection for tests --------------------------------------------------------------

    def sequence(self) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
        """The calls without their times, for exact comparison."""
        return [(c.name, c.args, c.kwargs) for c in self.calls]

    def _record(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        t_ns = time.monotonic_ns()
        self.calls.append(Call(t_ns, name, args, kwargs))
        return t_ns

    # -- the RPi.GPIO API ----------------------------------------------------------------

    def setwarnings(self, flag: bool) -> None:
        self._record("setwarnings", (flag,), {})
        self.warnings_on = bool(flag)

    def setmode(self, mode: int) -> None:
        self._record("setmode", (mode,), {})
        if self.mode is not None and mode != self.mode:
            raise ValueError("A different mode has already been set!")
        if mode not in (self.BOARD, self.BCM):
            raise ValueError("An invalid mode was passed to setmode()")
        self.mode = mode

    def getmode(self) -> int | None:
        return self.mode

    def setup(
        self, channel: Any, direction: int, pull_up_down: int = PUD_OFF, initial: int = NO_INITIAL
    ) -> None:
        kwargs = {}
        if pull_up_down != self.PUD_OFF:
            kwargs["pull_up_down"] = pull_up_down
        if initial != NO_INITIAL:
            kwargs["initial"] = initial
        t_ns = self._record("setup", (channel, direction), kwargs)
        if direction not in (self.IN, self.OUT):
            raise ValueError("An invalid direction was passed to setup()")
        if direction == self.OUT and pull_up_down != self.PUD_OFF:
            raise ValueError("pull_up_down parameter is not valid for outputs")
        if direction == self.IN and initial != NO_INITIAL:
            raise ValueError("initial parameter is not valid for inputs")
        for ch in self._channels(channel):
            gpio = self._gpio(ch)
            if self.warnings_on and gpio in self.directions:
                warnings.warn(
                    "This channel is already in use, continuing anyway.  Use "
                    "GPIO.setwarnings(False) to disable warnings.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            self.directions[gpio] = direction
            if direction == self.OUT:
                level = self.levels.get(gpio, self.LOW) if initial == NO_INITIAL else initial
                self.levels[gpio] = 1 if level else 0
                self.history.setdefault(gpio, []).append((t_ns, self.levels[gpio]))

    def output(self, channel: Any, value: Any) -> None:
        t_ns = self._record("output", (channel, value), {})
        for ch in self._channels(channel):
            gpio = self._gpio(ch)
            if self.directions.get(gpio) != self.OUT:
                raise RuntimeError("The GPIO channel has not been set up as an OUTPUT")
            self.levels[gpio] = 1 if value else 0
            self.history.setdefault(gpio, []).append((t_ns, self.levels[gpio]))

    def input(self, channel: int) -> int:
        self._record("input", (channel,), {})
        gpio = self._gpio(channel)
        if gpio not in self.directions:
            raise RuntimeError("You must setup() the GPIO channel first")
        return self.levels.get(gpio, self.LOW)

    def cleanup(self, channel: Any = None) -> None:
        self._record("cleanup", () if channel is None else (channel,), {})
        if not self.directions:
            if self.warnings_on:
                warnings.warn(
                    "No channels have been set up yet - nothing to clean up!  Try "
                    "cleaning up at the end of your program instead!",
                    RuntimeWarning,
                    stacklevel=2,
                )
            self.mode = None
            return
        if channel is None:
            targets = list(self.directions)
        else:
            targets = [self._gpio(ch) for ch in self._channels(channel)]
        for gpio in targets:
            self.directions.pop(gpio, None)  # back to an input
            self.levels.pop(gpio, None)
        if not self.directions:
            self.mode = None

    # -- channel checks as the C module does them ----------------------------------------

    @staticmethod
    def _channels(channel: Any) -> list[Any]:
        return list(channel) if isinstance(channel, (list, tuple)) else [channel]

    def _gpio(self, channel: Any) -> int:
        if self.mode is None:
            raise RuntimeError(_MODE_MESSAGE)
        if isinstance(channel, bool) or not isinstance(channel, int):
            raise ValueError("Channel must be an integer or list/tuple of integers")
        if self.mode == self.BCM:
            if not 0 <= channel <= 53:
                raise ValueError("The channel sent is invalid on a Raspberry Pi")
            return channel
        if channel not in _BOARD_TO_BCM:
            raise ValueError("The channel sent is invalid on a Raspberry Pi")
        return _BOARD_TO_BCM[channel]


def install(monkeypatch: pytest.MonkeyPatch) -> FakeGPIO:
    """A fresh fake as ``RPi.GPIO`` for the duration of one test."""
    gpio = FakeGPIO()
    package = types.ModuleType("RPi")
    package.__path__ = []  # a package, as the real RPi is
    package.GPIO = gpio  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "RPi", package)
    monkeypatch.setitem(sys.modules, "RPi.GPIO", gpio)
    return gpio
