"""A stand-in for the ``pigpio`` module (1.78) and the daemon behind it, recording every call.

It behaves as the real client and ``pigpiod`` do where the driver can tell: ``pi()`` connects
only if the daemon runs (``connected`` false otherwise, and with ``show_errors`` the same
message printed to stdout); bad GPIO numbers, levels and modes raise ``pigpio.error`` with
pigpio's texts; a stopped ``pi`` has no socket, so any command raises the ``AttributeError`` the
real one does. ``write`` makes the pin an output, as pigpiod's ``gpioWrite`` does: writes to a
pin not in OUTPUT mode are allowed but listed in ``implicit_outputs``, so a test can require
that none happens outside setup. The daemon's pin state outlives a client, as pigpiod's does.

Install it for one test with :func:`install` (``sys.modules["pigpio"]``).
"""

from __future__ import annotations

import os
import sys
import time
import types
from typing import Any, NamedTuple

import pytest

INPUT = 0
OUTPUT = 1
ALT0, ALT1, ALT2, ALT3, ALT4, ALT5 = 4, 5, 6, 7, 3, 2
PI_MAX_GPIO = 53


class Call(NamedTuple):
    t_ns: int
    name: str
    args: tuple[Any, ...]


class error(Exception):
    """pigpio module exception (``str`` is the repr of the text, as in pigpio)."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __str__(self) -> str:
        return repr(self.value)


class pulse:
    def __init__(self, gpio_on: int, gpio_off: int, delay: int) -> None:
        self.gpio_on = gpio_on
        self.gpio_off = gpio_off
        self.delay = delay


class FakeDaemon:
    """pigpiod's state: pin modes and levels, and every command in order with its time."""

    def __init__(self) -> None:
        self.running = True
        self.calls: list[Call] = []
        self.modes: dict[int, int] = {}
        self.levels: dict[int, int] = {}
        self.edges: list[tuple[int, int, int]] = []
        """``(t_ns, pin, level)`` for every write, in order."""
        self.implicit_outputs: list[tuple[int, int]] = []
        """``(index into edges, pin)`` of writes to a pin that was not in OUTPUT mode."""
        self.clients_open = 0

    def sequence(self) -> list[tuple[str, tuple[Any, ...]]]:
        """The commands without their times, for exact comparison."""
        return [(c.name, c.args) for c in self.calls]

    def history(self, pin: int) -> list[tuple[int, int]]:
        return [(t, level) for t, p, level in self.edges if p == pin]


class _SockLock:
    def __init__(self) -> None:
        self.s: object | None = None


class _Socket:
    def __init__(self, daemon: FakeDaemon) -> None:
        self.daemon = daemon

    def send(self, name: str, args: tuple[Any, ...]) -> int:
        t_ns = time.monotonic_ns()
        self.daemon.calls.append(Call(t_ns, name, args))
        return t_ns


def _make_pi_class(daemon: FakeDaemon) -> type:
    class pi:
        def __init__(
            self,
            host: str = os.getenv("PIGPIO_ADDR", "localhost"),
            port: int | str = os.getenv("PIGPIO_PORT", 8888),
            show_errors: bool = True,
        ) -> None:
            self.connected = True
            self.sl = _SockLock()
            self._host = host or "localhost"
            self._port = int(port)
            if daemon.running:
                self.sl.s = _Socket(daemon)
                daemon.clients_open += 1
                return
            self.connected = False
            if show_errors:
                print(f"%%%%\nCan't connect to pigpio at {self._host}({self._port})\n\n"
                      "Did you start the pigpio daemon? E.g. sudo pigpiod\n%%%%")

        def __repr__(self) -> str:
            return f"<pipio.pi host={self._host} port={self._port}>"

        def _send(self, name: str, *args: Any) -> int:
            sock = self.sl.s
            return sock.send(name, args)  # type: ignore[union-attr]  # None after stop: as pigpio

        def set_mode(self, gpio: int, mode: int) -> int:
            self._send("set_mode", gpio, mode)
            if not 0 <= gpio <= PI_MAX_GPIO:
                raise error("GPIO not 0-53")
            if not 0 <= mode <= 7:
                raise error("mode not 0-7")
            daemon.modes[gpio] = mode
            return 0

        def get_mode(self, gpio: int) -> int:
            self._send("get_mode", gpio)
            if not 0 <= gpio <= PI_MAX_GPIO:
                raise error("GPIO not 0-53")
            return daemon.modes.get(gpio, INPUT)

        def write(self, gpio: int, level: int) -> int:
            t_ns = self._send("write", gpio, level)
            if not 0 <= gpio <= PI_MAX_GPIO:
                raise error("GPIO not 0-53")
            if level not in (0, 1):
                raise error("level not 0-1")
            if daemon.modes.get(gpio, INPUT) != OUTPUT:
                daemon.implicit_outputs.append((len(daemon.edges), gpio))
                daemon.modes[gpio] = OUTPUT  # gpioWrite switches the pin to output
            daemon.levels[gpio] = int(level)
            daemon.edges.append((t_ns, gpio, int(level)))
            return 0

        def read(self, gpio: int) -> int:
            self._send("read", gpio)
            if not 0 <= gpio <= PI_MAX_GPIO:
                raise error("GPIO not 0-53")
            return daemon.levels.get(gpio, 0)

        def stop(self) -> None:
            self.connected = False
            if self.sl.s is not None:
                daemon.calls.append(Call(time.monotonic_ns(), "stop", ()))
                daemon.clients_open -= 1
                self.sl.s = None

    return pi


class FakePigpio(types.ModuleType):
    """The module object: pigpio's constants, ``pi``, ``error`` and ``pulse``, plus ``daemon``."""

    INPUT = INPUT
    OUTPUT = OUTPUT
    ALT0 = ALT0
    error = error
    pulse = pulse

    def __init__(self) -> None:
        super().__init__("pigpio")
        self.daemon = FakeDaemon()
        self.pi = _make_pi_class(self.daemon)


def install(monkeypatch: pytest.MonkeyPatch) -> FakePigpio:
    """A fresh fake as ``pigpio`` (its daemon running) for the duration of one test."""
    module = FakePigpio()
    monkeypatch.setitem(sys.modules, "pigpio", module)
    return module
