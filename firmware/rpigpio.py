"""The Raspberry Pi's GPIO header through RPi.GPIO (BCM numbering).

This is the only module that imports RPi.GPIO, and it does so when a backend is made, so
everything else imports on a laptop. Install it on the Pi with ``pip install rigstream[pi]``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .pins import PinBackend, Pull

logger = logging.getLogger(__name__)

_INSTALL_HINT = "install rigstream[pi] on the Raspberry Pi (pip install 'rigstream[pi]')"


def _import_gpio() -> Any:
    try:
        import RPi.GPIO as GPIO
    except ImportError as exc:
        raise ImportError(
            f"the rpigpio trigger backend needs RPi.GPIO, which is not installed ({exc}): "
            f"{_INSTALL_HINT}"
        ) from exc
    except RuntimeError as exc:
        # RPi.GPIO raises RuntimeError on import off a Pi or without access to /dev/gpiomem.
        raise RuntimeError(
            f"RPi.GPIO could not start: {exc} (the rpigpio backend runs only on a Raspberry Pi; "
            f"use trigger.backend: sim elsewhere)"
        ) from exc
    return GPIO


class RPiGPIOPins(PinBackend):
    """Outputs and inputs on the Pi's 40-pin header, addressed by BCM number (0..27).

    Opening sets BCM numbering with warnings off; ``close()`` hands back only the pins this
    backend set up (``GPIO.remove_event_detect`` on each input, then ``GPIO.cleanup([...])``:
    they return to inputs without pulls), so other users of the header are left alone.

    Inputs: ``GPIO.setup(pin, GPIO.IN, pull_up_down=...)`` and
    ``GPIO.add_event_detect(pin, GPIO.BOTH, callback=...)``. RPi.GPIO's callback gets only the
    channel, on RPi.GPIO's one event thread, some time after the edge: the callback here takes
    ``time.monotonic_ns()`` on entry, then reads the level with ``GPIO.input``, and hands both
    to the base's software debounce (a change is confirmed when a later callback, or the timer
    thread re-reading the pin once the hold time has passed, shows the level held; it is
    dropped if the level goes back sooner). What that costs, against pigpio's daemon:

    - An edge's time is when Python got to it, not when the pin changed: later by the kernel's
      interrupt-to-poll wake-up, RPi.GPIO's thread taking the GIL, and Python's call (tens of
      us typically, milliseconds when the process is busy: the GIL is shared with the daemon's
      other threads).
    - Two changes closer together than that latency may be read as one level, or as none: a
      glitch shorter than it is never seen (which is what a debounce wants), and the hold time
      is measured between callback entries, so it is right only to within the latency.
    - RPi.GPIO's own ``bouncetime`` is not used: it drops every edge within ``bouncetime`` ms
      after a reported one, which would also drop a real release that follows a press within
      that time and leave the input stuck at the wrong level; it is not a hold-time filter.
    """

    pin_range = range(0, 28)
    pin_kind = "a BCM GPIO number on the Raspberry Pi header"

    def __init__(self) -> None:
        super().__init__()
        gpio = _import_gpio()
        self._gpio = gpio
        self._output = gpio.output
        self._high = gpio.HIGH
        self._low = gpio.LOW
        gpio.setwarnings(False)
        gpio.setmode(gpio.BCM)
        logger.info("RPi.GPIO %s: BCM numbering", getattr(gpio, "VERSION", "?"))

    def _do_setup_output(self, pin: int, initial: int) -> None:
        gpio = self._gpio
        gpio.setup(pin, gpio.OUT, initial=gpio.HIGH if initial else gpio.LOW)

    def _do_write(self, pin: int, level: int) -> None:
        self._output(pin, self._high if level else self._low)

    def _do_setup_input(self, pin: int, pull: Pull, debounce_us: int) -> int:
        gpio = self._gpio
        pud = {"up": gpio.PUD_UP, "down": gpio.PUD_DOWN, "off": gpio.PUD_OFF}[pull]
        gpio.setup(pin, gpio.IN, pull_up_down=pud)
        try:
            # Edges first, then the level: a change in between is read, not lost.
            gpio.add_event_detect(pin, gpio.BOTH, callback=self._on_event)
            return gpio.input(pin)
        except BaseException:
            gpio.cleanup([pin])
            raise

    def _do_read(self, pin: int) -> int:
        return self._gpio.input(pin)

    def _on_event(self, channel: int) -> None:
        """RPi.GPIO's callback (its event thread): a change, now, to whatever the pin reads."""
        t_ns = time.monotonic_ns()
        if self._closed:
            return
        try:
            level = self._gpio.input(channel)
        except RuntimeError:  # cleaned up meanwhile
            return
        self._observe(channel, 1 if level else 0, t_ns)

    def _do_close(self) -> None:
        gpio = self._gpio
        inputs = list(self._inputs)
        try:
            for pin in inputs:
                gpio.remove_event_detect(pin)
        finally:
            pins = [*self._levels, *inputs]
            if pins:
                gpio.cleanup(pins)
