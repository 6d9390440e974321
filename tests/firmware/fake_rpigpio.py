"""A stand-in for RPi.GPIO (0.7.x) that behaves like the real module and records every call.

It enforces what the real C module enforces (numbering mode set before use, one mode per
process, valid channels, output only on outputs, pulls only on inputs, edge detection only on
inputs and once per channel, cleanup returning channels to inputs, removing their edge
detection and unsetting the mode), with the same exception types and messages, so a driver
that passes here does not meet a new error on a Pi. Every call is recorded in order with
``time.monotonic_ns()``, failed calls too, with its keyword arguments as passed: ``calls`` is
what a Pi would have received.

The world outside the header is :meth:`FakeGPIO.drive`: a signal on an input (a sensor).
``GPIO.input`` then reads it (an input nothing drives reads its pull: high with ``PUD_UP``, low
otherwise). Edge detection works as RPi.GPIO's does: each change of a watched input is an
event; an event within ``bouncetime`` ms of the last one let through is dropped (RPi.GPIO's
rule, applied at the event's time); the callbacks get only the channel, one event at a time,
on one event thread of the module's own (RPi.GPIO's poll thread), so they run after the change,
read the level themselves and may see a later one. A test holds that thread with
:meth:`FakeGPIO.hold_events` (events queue up, as under load) and waits for it with
:meth:`FakeGPIO.wait_idle`.

Install it for one test with :func:`install` (``sys.modules["RPi"]`` and ``["RPi.GPIO"]``).
"""

from __future__ import annotations

import collections
import contextlib
import sys
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest

NO_INITIAL = -1
_UNSET: Any = object()  # an argument not passed (recorded calls list only what was passed)
_BOUNCE_UNSET = -666  # RPi.GPIO's own "no bouncetime" value
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


@dataclass
class Detection:
    """Edge detection on one GPIO, as add_event_detect set it up."""

    channel: Any
    """The channel as the caller named it (what the callbacks get)."""
    edge: int
    bouncetime_ms: int
    callbacks: list[Callable[[Any], Any]] = field(default_factory=list)
    last_us: int = 0
    """When the last event let through happened (us; 0: none yet)."""


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
    RISING = 31
    FALLING = 32
    BOTH = 33
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
        self.pulls: dict[int, int] = {}
        """BCM number -> PUD_* of a channel set up as an input."""
        self.driven: dict[int, int] = {}
        """BCM number -> the level a signal outside drives the pin to (see drive())."""
        self.detections: dict[int, Detection] = {}
        """BCM number -> its edge detection."""
        self.bounced: list[tuple[int, int]] = []
        """(t_ns, BCM number) of events dropped by a bouncetime."""
        self.callback_errors: list[BaseException] = []
        """Exceptions raised by callbacks (RPi.GPIO prints them and goes on)."""
        self._events: collections.deque[int] = collections.deque()
        self._cond = threading.Condition()
        self._held = False
        self._busy = False
        self._thread: threading.Thread | None = None

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
        self, channel: Any, direction: int, pull_up_down: int = _UNSET, initial: int = _UNSET
    ) -> None:
        kwargs = {}
        if pull_up_down is not _UNSET:
            kwargs["pull_up_down"] = pull_up_down
        if initial is not _UNSET:
            kwargs["initial"] = initial
        t_ns = self._record("setup", (channel, direction), kwargs)
        pull_up_down = self.PUD_OFF if pull_up_down is _UNSET else pull_up_down
        initial = NO_INITIAL if initial is _UNSET else initial
        if direction not in (self.IN, self.OUT):
            raise ValueError("An invalid direction was passed to setup()")
        if direction == self.OUT and pull_up_down != self.PUD_OFF:
            raise ValueError("pull_up_down parameter is not valid for outputs")
        if direction == self.IN and initial != NO_INITIAL:
            raise ValueError("initial parameter is not valid for inputs")
        if pull_up_down not in (self.PUD_OFF, self.PUD_DOWN, self.PUD_UP):
            raise ValueError(
                "Invalid value for pull_up_down - should be either PUD_OFF, PUD_UP or PUD_DOWN"
            )
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
                self.pulls.pop(gpio, None)
                level = self.levels.get(gpio, self.LOW) if initial == NO_INITIAL else initial
                self.levels[gpio] = 1 if level else 0
                self.history.setdefault(gpio, []).append((t_ns, self.levels[gpio]))
            else:
                self.pulls[gpio] = pull_up_down

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
        if self.directions[gpio] == self.IN:
            return self._input_level(gpio)
        return self.levels.get(gpio, self.LOW)

    def add_event_detect(
        self, channel: Any, edge: int, callback: Any = _UNSET, bouncetime: int = _UNSET
    ) -> None:
        kwargs = {}
        if callback is not _UNSET:
            kwargs["callback"] = callback
        if bouncetime is not _UNSET:
            kwargs["bouncetime"] = bouncetime
        self._record("add_event_detect", (channel, edge), kwargs)
        callback = None if callback is _UNSET else callback
        bouncetime = _BOUNCE_UNSET if bouncetime is _UNSET else bouncetime
        gpio = self._gpio(channel)
        if self.directions.get(gpio) != self.IN:
            raise RuntimeError("You must setup() the GPIO channel as an input first")
        if edge not in (self.RISING, self.FALLING, self.BOTH):
            raise ValueError("The edge must be set to RISING, FALLING or BOTH")
        if bouncetime != _BOUNCE_UNSET and bouncetime <= 0:
            raise ValueError("Bouncetime must be greater than 0")
        if callback is not None and not callable(callback):
            raise TypeError("Parameter must be callable")
        with self._cond:
            if gpio in self.detections:
                raise RuntimeError("Conflicting edge detection already enabled for this GPIO channel")
            self.detections[gpio] = Detection(channel, edge, bouncetime, [callback] if callback else [])
            if self._thread is None:
                self._thread = threading.Thread(target=self._run_events, name="fake-rpigpio-events",
                                                daemon=True)
                self._thread.start()

    def remove_event_detect(self, channel: Any) -> None:
        self._record("remove_event_detect", (channel,), {})
        gpio = self._gpio(channel)
        with self._cond:
            self.detections.pop(gpio, None)  # events still queued for it are dropped
            self._cond.notify_all()

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
        with self._cond:
            for gpio in targets:
                self.directions.pop(gpio, None)  # back to an input
                self.levels.pop(gpio, None)
                self.pulls.pop(gpio, None)  # and no pull
                self.detections.pop(gpio, None)  # cleanup ends edge detection, as RPi.GPIO's does
            self._cond.notify_all()
        if not self.directions:
            self.mode = None

    # -- the world outside the header, and the event thread -------------------------------

    def drive(self, gpio: int, level: int, t_ns: int | None = None) -> int:
        """A signal outside drives BCM ``gpio`` to ``level`` at ``t_ns`` (default: now); a change
        on a watched input is an event (subject to its bouncetime). Returns the time used."""
        t = time.monotonic_ns() if t_ns is None else t_ns
        level = 1 if level else 0
        with self._cond:
            if self.directions.get(gpio) == self.OUT:
                raise ValueError(f"GPIO {gpio} is an output: driving it from outside would short it")
            before = self._input_level(gpio)
            self.driven[gpio] = level
            if self.directions.get(gpio) != self.IN or level == before:
                return t
            det = self.detections.get(gpio)
            if det is None:
                return t
            if (det.edge == self.RISING and not level) or (det.edge == self.FALLING and level):
                return t
            now_us = t // 1000
            if (
                det.bouncetime_ms == _BOUNCE_UNSET
                or now_us - det.last_us > det.bouncetime_ms * 1000
                or det.last_us == 0
                or det.last_us > now_us
            ):
                det.last_us = now_us
                self._events.append(gpio)
                self._cond.notify_all()
            else:
                self.bounced.append((t, gpio))
        return t

    @contextlib.contextmanager
    def hold_events(self) -> Iterator[None]:
        """Hold the event thread: events queue up and run when the block ends."""
        with self._cond:
            self._held = True
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued event's callbacks have run, or are held (False on timeout)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._busy and (not self._events or self._held), timeout_s
            )

    def _input_level(self, gpio: int) -> int:
        if gpio in self.driven:
            return self.driven[gpio]
        return 1 if self.pulls.get(gpio) == self.PUD_UP else 0

    def _run_events(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._events or self._held:
                    if not self.detections and not self._events:
                        self._thread = None  # RPi.GPIO's poll thread ends with the last detection
                        cond.notify_all()
                        return
                    cond.wait()
                gpio = self._events.popleft()
                det = self.detections.get(gpio)
                callbacks = [] if det is None else list(det.callbacks)
                self._busy = True
            try:
                for callback in callbacks:
                    try:
                        callback(det.channel)  # type: ignore[union-attr]
                    except Exception as exc:
                        self.callback_errors.append(exc)
            finally:
                with cond:
                    self._busy = False
                    cond.notify_all()

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
