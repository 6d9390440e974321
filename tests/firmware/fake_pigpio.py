"""A stand-in for the ``pigpio`` module (1.78) and the daemon behind it, recording every call.

It behaves as the real client and ``pigpiod`` do where the driver can tell: ``pi()`` connects
only if the daemon runs (``connected`` false otherwise, and with ``show_errors`` the same
message printed to stdout); bad GPIO numbers, levels and modes raise ``pigpio.error`` with
pigpio's texts; a stopped ``pi`` has no socket, so any command raises the ``AttributeError`` the
real one does. ``write`` makes the pin an output, as pigpiod's ``gpioWrite`` does: writes to a
pin not in OUTPUT mode are allowed but listed in ``implicit_outputs``, so a test can require
that none happens outside setup. The daemon's pin state outlives a client, as pigpiod's does.

Inputs: ``set_pull_up_down``, ``set_glitch_filter``, ``callback`` (with ``cancel``) and
``get_current_tick`` as in pigpio. The daemon's tick is the monotonic clock in microseconds
plus ``tick_offset_us``, unsigned 32-bit (:meth:`FakeDaemon.set_tick` puts it near a wrap, or
jumps it, as drift between the two clocks would). The world outside the header is
:meth:`FakeDaemon.drive` (a sensor changes a pin's level at a tick); pigpiod's glitch filter is
applied as in pigpio.c: a change is reported once the level has held ``steady`` us, at the
tick that confirms it (``steady`` after the change, as pigpio documents), and a change back
sooner is never reported. The fake's daemon learns that time has passed only from a later
``drive`` or from :meth:`FakeDaemon.settle` (the real one samples every 5 us), which keeps the
tests deterministic. Reports reach each client's callbacks on a notification thread of its
own, as pigpio's ``_callback_thread`` does (:meth:`FakeDaemon.hold_notifications` holds them).
pigpio lets a callback watch any user GPIO, an output too (its writes are reported); so does
the fake. ``read`` is not filtered, as in pigpio.

Install it for one test with :func:`install` (``sys.modules["pigpio"]``).
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import pytest

INPUT = 0
OUTPUT = 1
ALT0, ALT1, ALT2, ALT3, ALT4, ALT5 = 4, 5, 6, 7, 3, 2
PUD_OFF, PUD_DOWN, PUD_UP = 0, 1, 2
RISING_EDGE, FALLING_EDGE, EITHER_EDGE = 0, 1, 2
TIMEOUT = 2
PI_MAX_GPIO = 53
PI_MAX_USER_GPIO = 31
PI_MAX_STEADY = 300_000
TICK_MASK = 0xFFFF_FFFF


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


class _Notifier:
    """One client's notification thread: reports in, callbacks called in order."""

    def __init__(self, daemon: FakeDaemon) -> None:
        self.daemon = daemon
        self.callbacks: list[_callback_ADT] = []
        self.queue: collections.deque[tuple[int, int, int]] = collections.deque()
        self.go = True
        self.thread = threading.Thread(target=self._run, name="fake-pigpio-notify", daemon=True)
        self.thread.start()

    def post(self, gpio: int, level: int, tick: int) -> None:
        cond = self.daemon.cond
        with cond:
            self.queue.append((gpio, level, tick))
            cond.notify_all()

    def stop(self) -> None:
        cond = self.daemon.cond
        with cond:
            self.go = False
            cond.notify_all()
        if self.thread is not threading.current_thread():
            self.thread.join(5.0)

    def _run(self) -> None:
        daemon = self.daemon
        cond = daemon.cond
        while True:
            with cond:
                while self.go and (not self.queue or daemon.held):
                    cond.wait()
                if not self.go:
                    return
                gpio, level, tick = self.queue.popleft()
                callbacks = list(self.callbacks)
                daemon.busy += 1
            try:
                for cb in callbacks:
                    # pigpio: a watchdog report goes to every callback on the GPIO; an edge to
                    # those whose edge matches (cb.edge ^ level: RISING_EDGE 0 takes level 1).
                    if cb.gpio == gpio and (level == TIMEOUT or cb.edge ^ level):
                        cb.func(gpio, level, tick)
            finally:
                with cond:
                    daemon.busy -= 1
                    cond.notify_all()


class FakeDaemon:
    """pigpiod's state: pin modes, pulls, levels and glitch filters, its tick, and every command
    in order with its time."""

    def __init__(self) -> None:
        self.running = True
        self.calls: list[Call] = []
        self.modes: dict[int, int] = {}
        self.levels: dict[int, int] = {}
        """GPIO -> its level (what read() returns: not filtered)."""
        self.edges: list[tuple[int, int, int]] = []
        """``(t_ns, pin, level)`` for every write, in order."""
        self.implicit_outputs: list[tuple[int, int]] = []
        """``(index into edges, pin)`` of writes to a pin that was not in OUTPUT mode."""
        self.clients_open = 0
        self.pulls: dict[int, int] = {}
        self.filters: dict[int, int] = {}
        """GPIO -> glitch filter steady time (us) where one is set."""
        self.driven: dict[int, int] = {}
        """GPIO -> the level a signal outside drives it to."""
        self.reports: list[tuple[int, int, int]] = []
        """``(gpio, level, tick)`` of every level change reported to callbacks, in order."""
        self.tick_offset_us = 0
        self.cond = threading.Condition(threading.RLock())
        self.held = False
        self.busy = 0
        self.notifiers: list[_Notifier] = []
        self._reported: dict[int, int] = {}
        self._changed_tick: dict[int, int] = {}
        self._last_tick: dict[int, int] = {}

    def sequence(self) -> list[tuple[str, tuple[Any, ...]]]:
        """The commands without their times, for exact comparison."""
        return [(c.name, c.args) for c in self.calls]

    def history(self, pin: int) -> list[tuple[int, int]]:
        return [(t, level) for t, p, level in self.edges if p == pin]

    # -- the tick ---------------------------------------------------------------------------

    def current_tick(self) -> int:
        return (time.monotonic_ns() // 1000 + self.tick_offset_us) & TICK_MASK

    def set_tick(self, tick: int) -> None:
        """Make the tick read ``tick`` now (near a wrap, or a jump as drift would make)."""
        self.tick_offset_us = tick - time.monotonic_ns() // 1000

    def tick_time_ns(self, tick: int) -> int:
        """When (on time.monotonic_ns's clock) the tick read ``tick``, the nearest such time."""
        now_us = time.monotonic_ns() // 1000  # one reading: the tick now is computed from it
        diff = (tick - (now_us + self.tick_offset_us)) & TICK_MASK
        if diff >= 1 << 31:
            diff -= 1 << 32
        return (now_us + diff) * 1000

    # -- the world outside, and pigpiod's alerts --------------------------------------------

    def drive(self, gpio: int, level: int, tick: int | None = None) -> int:
        """A signal outside drives ``gpio`` to ``level`` at ``tick`` (default: now); returns
        the tick. Ticks on one GPIO must not go backwards."""
        if not 0 <= gpio <= PI_MAX_GPIO:
            raise error("GPIO not 0-53")
        if level not in (0, 1):
            raise error("level not 0-1")
        with self.cond:
            if self.modes.get(gpio, INPUT) == OUTPUT:
                raise ValueError(f"GPIO {gpio} is an output: driving it from outside would short it")
            tick = self.current_tick() if tick is None else tick & TICK_MASK
            self.driven[gpio] = level
            self._change(gpio, level, tick)
        return tick

    def settle(self, tick: int | None = None) -> None:
        """Time passes until ``tick`` (default: now): filtered changes that have held until then
        are reported."""
        with self.cond:
            tick = self.current_tick() if tick is None else tick & TICK_MASK
            for gpio in list(self.filters):
                self._advance(gpio, tick)

    def watchdog(self, gpio: int, tick: int | None = None) -> None:
        """A watchdog timeout report for ``gpio`` (level 2, TIMEOUT), as set_watchdog makes."""
        with self.cond:
            tick = self.current_tick() if tick is None else tick & TICK_MASK
            for notifier in self.notifiers:
                notifier.post(gpio, TIMEOUT, tick)

    @contextlib.contextmanager
    def hold_notifications(self) -> Iterator[None]:
        """Hold every client's notification thread: reports queue up until the block ends."""
        with self.cond:
            self.held = True
        try:
            yield
        finally:
            with self.cond:
                self.held = False
                self.cond.notify_all()

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until every report posted so far has been through its client's callbacks."""
        with self.cond:
            return self.cond.wait_for(
                lambda: self.held or (not self.busy and not any(n.queue for n in self.notifiers)),
                timeout_s,
            )

    def _set_filter(self, gpio: int, steady: int) -> None:
        with self.cond:
            if steady:
                self.filters[gpio] = steady
            else:
                self.filters.pop(gpio, None)
            self._reported[gpio] = self.levels.get(gpio, 0)
            self._changed_tick[gpio] = self.current_tick()

    def _change(self, gpio: int, level: int, tick: int) -> None:
        """The pin's level becomes ``level`` at ``tick`` (a write, a pull, a signal outside)."""
        last = self._last_tick.get(gpio)
        if last is not None and (tick - last) & TICK_MASK >= 1 << 31:
            raise ValueError(f"GPIO {gpio}: tick {tick} is before the last change's ({last})")
        self._last_tick[gpio] = tick
        self._advance(gpio, tick)
        if self.levels.get(gpio, 0) == level:
            self.levels[gpio] = level
            return
        self.levels[gpio] = level
        self._changed_tick[gpio] = tick  # pigpio.c: a change restarts the steady timer
        if not self.filters.get(gpio):
            self._report(gpio, level, tick)

    def _advance(self, gpio: int, tick: int) -> None:
        """pigpio.c's alertGlitchFilter up to ``tick``: a level that differs from the reported
        one and has held ``steady`` us is reported, at the tick where it had."""
        steady = self.filters.get(gpio)
        if not steady:
            return
        level = self.levels.get(gpio, 0)
        if level == self._reported.get(gpio, level):
            return
        changed = self._changed_tick.get(gpio, tick)
        if (tick - changed) & TICK_MASK >= steady:
            self._report(gpio, level, (changed + steady) & TICK_MASK)

    def _report(self, gpio: int, level: int, tick: int) -> None:
        self._reported[gpio] = level
        self.reports.append((gpio, level, tick))
        for notifier in self.notifiers:
            notifier.post(gpio, level, tick)


class _SockLock:
    def __init__(self) -> None:
        self.s: object | None = None


class _callback_ADT:
    def __init__(self, gpio: int, edge: int, func: Callable[[int, int, int], Any]) -> None:
        self.gpio = gpio
        self.edge = edge
        self.func = func


class _callback:
    """What pi.callback returns: ``cancel()``, and a tally when no function was given."""

    def __init__(self, pi: Any, notifier: _Notifier, gpio: int, edge: int, func: Any) -> None:
        self._pi = pi
        self._notifier = notifier
        self.count = 0
        self.callb = _callback_ADT(gpio, edge, self._tally if func is None else func)
        with notifier.daemon.cond:
            notifier.callbacks.append(self.callb)

    def cancel(self) -> None:
        """Removes the callback; pigpio then tells pigpiod the new monitor bits (a command on
        the control socket: after ``stop()`` it fails as a command does)."""
        with self._notifier.daemon.cond:
            if self.callb not in self._notifier.callbacks:
                return
            self._notifier.callbacks.remove(self.callb)
        self._pi._send("cancel", self.callb.gpio)

    def _tally(self, gpio: int, level: int, tick: int) -> None:
        self.count += 1

    def tally(self) -> int:
        return self.count


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
            self._notifier: _Notifier | None = None
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
            if daemon.notifiers:  # a callback may watch an output: its writes are reported
                with daemon.cond:
                    daemon._change(gpio, int(level), daemon.current_tick())
            daemon.levels[gpio] = int(level)
            daemon.edges.append((t_ns, gpio, int(level)))
            return 0

        def read(self, gpio: int) -> int:
            self._send("read", gpio)
            if not 0 <= gpio <= PI_MAX_GPIO:
                raise error("GPIO not 0-53")
            return daemon.levels.get(gpio, 0)

        def set_pull_up_down(self, gpio: int, pud: int) -> int:
            self._send("set_pull_up_down", gpio, pud)
            if not 0 <= gpio <= PI_MAX_GPIO:
                raise error("GPIO not 0-53")
            if pud not in (PUD_OFF, PUD_DOWN, PUD_UP):
                raise error("pud not 0-2")
            with daemon.cond:
                daemon.pulls[gpio] = pud
                # An input nothing drives follows its pull (a floating one keeps its level).
                if gpio not in daemon.driven and daemon.modes.get(gpio, INPUT) != OUTPUT and pud != PUD_OFF:
                    daemon._change(gpio, 1 if pud == PUD_UP else 0, daemon.current_tick())
            return 0

        def set_glitch_filter(self, user_gpio: int, steady: int) -> int:
            self._send("set_glitch_filter", user_gpio, steady)
            if not 0 <= user_gpio <= PI_MAX_USER_GPIO:
                raise error("GPIO not 0-31")
            if not 0 <= steady <= PI_MAX_STEADY:
                raise error("bad filter parameter")
            daemon._set_filter(user_gpio, steady)
            return 0

        def get_current_tick(self) -> int:
            self._send("get_current_tick")
            return daemon.current_tick()

        def callback(self, user_gpio: int, edge: int = RISING_EDGE, func: Any = None) -> _callback:
            self._send("callback", user_gpio, edge)
            if not 0 <= user_gpio <= PI_MAX_USER_GPIO:
                raise error("GPIO not 0-31")  # pigpio's monitor bits are one 32-bit word
            if func is not None and not callable(func):
                raise TypeError(f"func must be callable, got {func!r}")
            if self._notifier is None:
                self._notifier = _Notifier(daemon)
                with daemon.cond:
                    daemon.notifiers.append(self._notifier)
            return _callback(self, self._notifier, user_gpio, edge, func)

        def stop(self) -> None:
            self.connected = False
            if self.sl.s is not None:
                daemon.calls.append(Call(time.monotonic_ns(), "stop", ()))
                daemon.clients_open -= 1
                self.sl.s = None
            notifier, self._notifier = self._notifier, None
            if notifier is not None:
                with daemon.cond:
                    daemon.notifiers.remove(notifier)
                notifier.stop()

    return pi


class FakePigpio(types.ModuleType):
    """The module object: pigpio's constants, ``pi``, ``error`` and ``pulse``, plus ``daemon``."""

    INPUT = INPUT
    OUTPUT = OUTPUT
    ALT0 = ALT0
    PUD_OFF = PUD_OFF
    PUD_DOWN = PUD_DOWN
    PUD_UP = PUD_UP
    RISING_EDGE = RISING_EDGE
    FALLING_EDGE = FALLING_EDGE
    EITHER_EDGE = EITHER_EDGE
    TIMEOUT = TIMEOUT
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
