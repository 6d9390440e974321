"""The Raspberry Pi's GPIO header through the pigpio daemon (BCM numbering).

This is the only module that imports ``pigpio``, and it does so when a backend is made, so
everything else imports on a laptop. pigpio is a client of ``pigpiod``, a daemon that owns the
GPIO hardware: start it with ``sudo systemctl enable --now pigpiod``.

Each ``write`` here is one command to pigpiod over its socket, so an edge's timestamp (taken
right after the write returns) includes that round trip. pigpio's hardware-timed waves
(``wave_add_generic`` / ``wave_send_repeat``), which put edges out with DMA at microsecond
accuracy, are not used yet: see ``firmware/README.md``.

Inputs are timed by pigpiod, not by Python: it samples the GPIOs every 5 us (its default
sample rate), applies the glitch filter (``set_glitch_filter(pin, debounce_us)``: a change is
reported only once the level has held that long) and stamps each reported edge with its tick,
a microsecond counter (unsigned 32-bit, wrapping every ~71.6 minutes). pigpio documents that a
filtered edge is stamped ``steady`` us after it was first detected (its filter reports the
change at the sample that confirms it), so ``debounce_us`` is subtracted here to give the time
the level first changed, to within the sample period. Ticks become ``time.monotonic_ns()``
through a pairing: ``get_current_tick()`` read between two ``monotonic_ns()`` calls, the tick
taken to be at the midpoint, right to within half the round trip (kept as
:attr:`PigpioPins.pairing`). A tick is unwrapped relative to the pairing's (a signed 32-bit
difference: unambiguous within ±35 minutes, and a pairing is never older than ``repair_s``
when used). The two clocks drift apart by their rate difference (the Pi's timer against NTP's
slewing of the monotonic clock: typically tens of ppm, at most 500), so the pairing is renewed
from the callback thread when it is older than ``repair_s`` (10 s: at 50 ppm, at most 0.5 ms of
drift), which costs one ``get_current_tick`` round trip on the shared command socket.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple

from .pins import PinBackend, Pull

logger = logging.getLogger(__name__)

TICK_WRAP = 1 << 32
"""pigpiod's tick is an unsigned 32-bit count of microseconds."""
REPAIR_S = 10.0
"""Default age (s) after which the tick-to-monotonic pairing is renewed."""
PAIRING_TRIES = 3
"""Round trips tried when pairing the clocks at setup; the shortest is kept."""
MAX_GLITCH_FILTER_US = 300_000
"""pigpio's limit for set_glitch_filter's steady time."""


class TickPairing(NamedTuple):
    """One reading of pigpiod's tick against the monotonic clock."""

    tick: int
    """pigpiod's tick (us, unsigned 32-bit)."""
    t_ns: int
    """``time.monotonic_ns()`` taken to be at that tick: the midpoint of the round trip."""
    round_trip_ns: int
    """The round trip around ``get_current_tick()``: ``t_ns`` is right to within half of it."""

_INSTALL_HINT = (
    "install pigpio on the Raspberry Pi (the daemon: sudo apt install pigpiod; the module in the "
    "venv: pip install 'rigstream[pigpio]')"
)
_START_HINT = "start it with sudo systemctl start pigpiod"


def _import_pigpio() -> Any:
    try:
        import pigpio
    except ImportError as exc:
        raise ImportError(
            f"the pigpio trigger backend needs the pigpio module, which is not installed ({exc}): "
            f"{_INSTALL_HINT}"
        ) from exc
    return pigpio


class PigpioPins(PinBackend):
    """Outputs and inputs on the Pi's 40-pin header through pigpiod, addressed by BCM number
    (0..27).

    ``host`` and ``port`` name the pigpio daemon (default: pigpio's own, ``PIGPIO_ADDR`` /
    ``PIGPIO_PORT`` or ``localhost:8888``). Opening fails with a clear error if the daemon does
    not answer. ``repair_s``: how old the tick pairing may get before an edge renews it (see
    the module docstring).

    Inputs: ``set_mode(INPUT)``, ``set_pull_up_down``, ``set_glitch_filter(pin, debounce_us)``
    (at most 300 000 us; 0 clears a filter a previous client may have left, since pigpiod's
    state outlives its clients), then ``callback(pin, EITHER_EDGE, ...)`` and ``read``. The
    callbacks come from pigpio's notification thread; watchdog reports (level 2) are ignored.
    ``close()`` cancels the callbacks, sets each input's glitch filter to 0 and its pull off,
    returns the outputs to inputs (all as the RPi.GPIO backend's cleanup does), and releases
    the connection (``pi.stop()``).
    """

    pin_range = range(0, 28)
    pin_kind = "a BCM GPIO number on the Raspberry Pi header"
    max_debounce_us = MAX_GLITCH_FILTER_US

    def __init__(
        self, host: str | None = None, port: int | None = None, *, repair_s: float = REPAIR_S
    ) -> None:
        super().__init__()
        if not repair_s >= 0:
            raise ValueError(f"PigpioPins: repair_s must be >= 0, got {repair_s!r}")
        self._repair_ns = round(repair_s * 1e9)
        self._pairing: TickPairing | None = None
        self._callbacks: dict[int, Any] = {}
        self._steady_us: dict[int, int] = {}
        pigpio = _import_pigpio()
        kwargs: dict[str, Any] = {"show_errors": False}  # pigpio would print to stdout
        if host is not None:
            kwargs["host"] = host
        if port is not None:
            kwargs["port"] = port
        pi = pigpio.pi(**kwargs)
        if not pi.connected:
            pi.stop()
            raise RuntimeError(
                f"the pigpio daemon is not running or does not answer ({pi!r}: connected is "
                f"false): {_START_HINT} (or use trigger.backend: rpigpio or sim)"
            )
        self._pigpio = pigpio
        self._pi = pi
        self._write = pi.write
        logger.info("pigpio: connected to pigpiod (%r), BCM numbering", pi)

    def _do_setup_output(self, pin: int, initial: int) -> None:
        # Level first, then mode, as pigpiod's own gpioWrite does to avoid a glitch: the write
        # makes the pin an output at ``initial`` (pigpiod switches a written pin to output);
        # set_mode states it explicitly.
        self._pi.write(pin, initial)
        self._pi.set_mode(pin, self._pigpio.OUTPUT)

    def _do_write(self, pin: int, level: int) -> None:
        self._write(pin, level)

    @property
    def pairing(self) -> TickPairing | None:
        """The tick-to-monotonic pairing in use (None before the first input)."""
        return self._pairing

    def tick_to_ns(self, tick: int) -> int:
        """A pigpiod tick (within ±35 minutes of the pairing) on ``time.monotonic_ns``'s clock."""
        pairing = self._pairing
        if pairing is None:
            raise RuntimeError("PigpioPins: no tick pairing yet (it is made with the first input)")
        diff = (tick - pairing.tick) % TICK_WRAP
        if diff >= TICK_WRAP // 2:
            diff -= TICK_WRAP
        return pairing.t_ns + diff * 1000

    def _pair(self, tries: int = 1) -> TickPairing:
        best: TickPairing | None = None
        get_tick = self._pi.get_current_tick
        for _ in range(tries):
            t0 = time.monotonic_ns()
            tick = get_tick()
            t1 = time.monotonic_ns()
            if best is None or t1 - t0 < best.round_trip_ns:
                best = TickPairing(tick % TICK_WRAP, (t0 + t1) // 2, t1 - t0)
        assert best is not None
        self._pairing = best
        logger.debug("pigpio: tick %d is monotonic %d ns (round trip %d ns)", *best)
        return best

    def _do_setup_input(self, pin: int, pull: Pull, debounce_us: int) -> int:
        pigpio, pi = self._pigpio, self._pi
        pi.set_mode(pin, pigpio.INPUT)
        pi.set_pull_up_down(pin, {"up": pigpio.PUD_UP, "down": pigpio.PUD_DOWN, "off": pigpio.PUD_OFF}[pull])
        pi.set_glitch_filter(pin, debounce_us)
        self._steady_us[pin] = debounce_us
        try:
            if self._pairing is None:
                self._pair(PAIRING_TRIES)
            self._callbacks[pin] = pi.callback(pin, pigpio.EITHER_EDGE, self._on_edge)
            return pi.read(pin)
        except BaseException:
            callback = self._callbacks.pop(pin, None)
            if callback is not None:
                callback.cancel()
            pi.set_glitch_filter(pin, 0)
            raise

    def _do_read(self, pin: int) -> int:
        return self._pi.read(pin)

    def _on_edge(self, gpio: int, level: int, tick: int) -> None:
        """pigpio's callback (its notification thread): a filtered edge at ``tick``."""
        if level > 1 or self._closed:  # 2: a watchdog timeout, not an edge
            return
        pairing = self._pairing
        if pairing is None or time.monotonic_ns() - pairing.t_ns >= self._repair_ns:
            try:
                self._pair()
            except Exception as exc:  # pigpiod gone: keep the old pairing, say so
                logger.warning("pigpio: renewing the tick pairing failed (%s); using the last one", exc)
        # pigpiod stamps a filtered edge when the filter confirms it, steady us after it began.
        t_ns = self.tick_to_ns(tick - self._steady_us.get(gpio, 0))
        self._accept(gpio, level, t_ns)

    def _do_close(self) -> None:
        pigpio, pi = self._pigpio, self._pi
        try:
            for callback in self._callbacks.values():
                callback.cancel()
            for pin in self._inputs:
                pi.set_glitch_filter(pin, 0)
                pi.set_pull_up_down(pin, pigpio.PUD_OFF)
            for pin in self._levels:
                pi.set_mode(pin, pigpio.INPUT)
        finally:
            pi.stop()
