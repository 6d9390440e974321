"""The Raspberry Pi's GPIO header through the pigpio daemon (BCM numbering).

This is the only module that imports ``pigpio``, and it does so when a backend is made, so
everything else imports on a laptop. pigpio is a client of ``pigpiod``, a daemon that owns the
GPIO hardware: start it with ``sudo systemctl enable --now pigpiod``.

Each ``write`` here is one command to pigpiod over its socket, so an edge's timestamp (taken
right after the write returns) includes that round trip. pigpio's hardware-timed waves
(``wave_add_generic`` / ``wave_send_repeat``), which put edges out with DMA at microsecond
accuracy, are not used yet: see ``firmware/README.md``.
"""

from __future__ import annotations

import logging
from typing import Any

from .pins import PinBackend

logger = logging.getLogger(__name__)

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
    """Outputs on the Pi's 40-pin header through pigpiod, addressed by BCM number (0..27).

    ``host`` and ``port`` name the pigpio daemon (default: pigpio's own, ``PIGPIO_ADDR`` /
    ``PIGPIO_PORT`` or ``localhost:8888``). Opening fails with a clear error if the daemon does
    not answer. ``close()`` returns the pins this backend set up to inputs, as the RPi.GPIO
    backend's cleanup does, and releases the connection (``pi.stop()``).
    """

    pin_range = range(0, 28)
    pin_kind = "a BCM GPIO number on the Raspberry Pi header"

    def __init__(self, host: str | None = None, port: int | None = None) -> None:
        super().__init__()
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

    def _do_close(self) -> None:
        pi = self._pi
        try:
            for pin in self._levels:
                pi.set_mode(pin, self._pigpio.INPUT)
        finally:
            pi.stop()
