"""The Raspberry Pi's GPIO header through RPi.GPIO (BCM numbering).

This is the only module that imports RPi.GPIO, and it does so when a backend is made, so
everything else imports on a laptop. Install it on the Pi with ``pip install rigstream[pi]``.
"""

from __future__ import annotations

import logging
from typing import Any

from .pins import PinBackend

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
    """Outputs on the Pi's 40-pin header, addressed by BCM number (0..27).

    Opening sets BCM numbering with warnings off; ``close()`` hands back only the pins this
    backend set up (``GPIO.cleanup([...])``: they return to inputs), so other users of the
    header are left alone.
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

    def _do_close(self) -> None:
        pins = list(self._levels)
        if pins:
            self._gpio.cleanup(pins)
