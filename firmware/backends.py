"""The pin backends by name: the table the rig file's ``trigger.backend`` chooses from.

The base module (:mod:`~rigstream.firmware.pins`) defines the interface and the simulated twin
and knows no driver; each driver module imports the base. Choosing one happens here, above all
of them, as gpiozero's pin factories are chosen by name: adding a backend is one module and one
row below (and its name in ``TriggerConfig.backend``). A driver is imported only when chosen, so
a host without RPi.GPIO or pigpio runs the simulated rig.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import zmq

from rigstream.config import ConfigError, RigConfig

from .pins import PinBackend, SimPins, rig_lines

logger = logging.getLogger(__name__)


def _sim(rig: RigConfig, run: str, ctx: zmq.Context, sim_log: int) -> PinBackend:
    lines = rig_lines(rig)
    addresses = {name: rig.address("sim_lines", run, line=name) for name in lines.values()}
    logger.info("pins: simulated lines %s", addresses)
    return SimPins(lines, ctx, addresses, log_limit=sim_log)


def _rpigpio(rig: RigConfig, run: str, ctx: zmq.Context, sim_log: int) -> PinBackend:
    from .rpigpio import RPiGPIOPins

    return RPiGPIOPins()


def _pigpio(rig: RigConfig, run: str, ctx: zmq.Context, sim_log: int) -> PinBackend:
    from .pigpio_pins import PigpioPins

    return PigpioPins()


PIN_BACKENDS: dict[str, Callable[[RigConfig, str, zmq.Context, int], PinBackend]] = {
    "sim": _sim,  # SimPins publishing each line at rig.address("sim_lines", run, line=name)
    "rpigpio": _rpigpio,  # the Raspberry Pi's GPIO header through RPi.GPIO
    "pigpio": _pigpio,  # the same header through the pigpio daemon (hardware-timed)
}
"""Pin backend name -> maker (rig, run, context, sim_log)."""


def make_pins(rig: RigConfig, run: str, ctx: zmq.Context, sim_log: int = 20_000) -> PinBackend:
    """The pin backend named by ``rig.trigger.backend`` (``sim_log``: writes a simulated one
    keeps in its log, the last ~20 s at 226 Hz by default: a bounded debugging aid)."""
    maker = PIN_BACKENDS.get(rig.trigger.backend)
    if maker is None:
        raise ConfigError(f"trigger.backend: expected one of {', '.join(PIN_BACKENDS)}, "
                          f"got {rig.trigger.backend!r}")
    return maker(rig, run, ctx, sim_log)
