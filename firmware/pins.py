"""Pin backends: the one interface the trigger daemon drives outputs through.

In the spirit of gpiozero's pin factories, the daemon never calls a GPIO library: it is handed a
:class:`PinBackend` and only sets pins up as outputs and writes levels. :class:`SimPins` is the
simulated twin: it records every write as ``(t_ns, pin, level)`` and publishes every level
change as a :class:`rigstream.protocol.Edge` on a simulated electrical line that simulated
cameras subscribe to. The real drivers, :class:`rigstream.firmware.rpigpio.RPiGPIOPins` and
:class:`rigstream.firmware.pigpio_pins.PigpioPins`, live in their own modules and are imported
only by :func:`rigstream.firmware.backends.make_pins` when a rig file asks for one.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import TracebackType
from typing import TypeVar

import numpy as np
import zmq

from rigstream.config import ConfigError, RigConfig
from rigstream.protocol import Edge
from rigstream.transport import Publisher

logger = logging.getLogger(__name__)

LINE_HWM = 100_000
"""Edges queued per subscriber of a simulated line before ZeroMQ drops."""


_B = TypeVar("_B", bound="PinBackend")


class PinError(RuntimeError):
    """A pin used in a state that does not allow it (not set up, backend closed)."""


class PinBackend(ABC):
    """Digital outputs addressed by number (BCM numbers on a Raspberry Pi).

    Public methods check state and log, then call the ``_do_*`` methods a driver writes.
    ``write`` is on the trigger's hot path: it checks only what it must and does not log.
    A backend is a context manager; ``close()`` is idempotent.
    """

    pin_range: range | None = None
    """Pin numbers this backend accepts (None: any non-negative integer)."""
    pin_kind: str | None = None
    """What a pin number means to this backend, for the out-of-range message."""

    def __init__(self) -> None:
        self._levels: dict[int, int] = {}
        self._closed = False

    # -- interface -----------------------------------------------------------------------

    def setup_output(self, pin: int, initial: int = 0) -> None:
        """Make ``pin`` an output driven to ``initial`` (0 or 1)."""
        self._check_open()
        self._check_pin(pin)
        if initial not in (0, 1):
            raise ValueError(f"pin {pin}: initial level must be 0 or 1, got {initial!r}")
        if pin in self._levels:
            logger.debug("%s: pin %d set up again", type(self).__name__, pin)
        self._do_setup_output(pin, int(initial))
        self._levels[pin] = int(initial)
        logger.debug("%s: pin %d is an output, initial level %d", type(self).__name__, pin, initial)

    def write(self, pin: int, level: int) -> int:
        """Drive ``pin`` to ``level`` (truthy: high); returns ``time.monotonic_ns()`` taken right
        after the write, the edge's timestamp."""
        levels = self._levels
        if self._closed or pin not in levels:
            self._raise_unwritable(pin)
        level = 1 if level else 0
        self._do_write(pin, level)
        t_ns = time.monotonic_ns()
        previous = levels[pin]
        levels[pin] = level
        self._on_write(pin, level, previous, t_ns)
        return t_ns

    def level(self, pin: int) -> int:
        """The level last written to ``pin`` (or its initial level)."""
        if pin not in self._levels:
            self._raise_unwritable(pin)
        return self._levels[pin]

    @property
    def outputs(self) -> tuple[int, ...]:
        """Pins set up as outputs, in setup order."""
        return tuple(self._levels)

    @property
    def closed(self) -> bool:
        return self._closed

    def subscribers(self) -> dict[str, int]:
        """Subscribers per simulated line; a real backend has no lines and answers ``{}``."""
        return {}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._do_close()
        finally:
            logger.debug("%s: closed (outputs %s)", type(self).__name__, list(self._levels))

    def __enter__(self: _B) -> _B:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"outputs={list(self._levels)}"
        return f"<{type(self).__name__} {state}>"

    # -- what a driver writes ------------------------------------------------------------

    @abstractmethod
    def _do_setup_output(self, pin: int, initial: int) -> None:
        """Configure the hardware pin as an output at ``initial``."""

    @abstractmethod
    def _do_write(self, pin: int, level: int) -> None:
        """Set the hardware pin; ``level`` is 0 or 1. Called on the hot path."""

    def _do_close(self) -> None:  # noqa: B027 (optional hook)
        """Release the hardware (pins back to a safe state)."""

    def _on_write(self, pin: int, level: int, previous: int, t_ns: int) -> None:  # noqa: B027
        """Called after every write with its timestamp (the simulated twin records here)."""

    # -- checks --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PinError(f"{type(self).__name__} is closed")

    def _check_pin(self, pin: int) -> None:
        if isinstance(pin, bool) or not isinstance(pin, (int, np.integer)):
            raise ValueError(f"pin number: expected an integer >= 0, got {pin!r}")
        if self.pin_range is not None and pin not in self.pin_range:
            span = f"{self.pin_range.start}..{self.pin_range.stop - 1}"
            if self.pin_kind is not None:
                raise ValueError(f"pin {pin}: expected {self.pin_kind}, {span}")
            raise ValueError(f"pin {pin}: {type(self).__name__} accepts pins {span}")
        if pin < 0:
            raise ValueError(f"pin number: expected an integer >= 0, got {pin!r}")

    def _raise_unwritable(self, pin: int) -> None:
        self._check_open()
        set_up = ", ".join(str(p) for p in self._levels) or "none"
        raise PinError(f"pin {pin} is not set up as an output (outputs set up: {set_up})")


class SimPins(PinBackend):
    """The simulated twin: records every write and publishes edges on simulated lines.

    ``lines`` names pins (``{18: "trigger", 23: "sync", 24: "ttl"}``); a named pin whose name has
    an address in ``addresses`` gets a :class:`rigstream.transport.Publisher` there, and every
    level change on it is published as ``Edge(line=name, level, t_ns, truth_index=k)``, where
    ``k`` counts rising edges on the pin from 0 (a falling edge carries the index of the rising
    edge it ends). A write that does not change the level is logged but not published: no edge
    travels on a wire whose level stays put.

    ``log`` holds ``(t_ns, pin, level)`` for every write, in order. With ``log_limit`` the oldest
    half of the log is dropped whenever it grows past the limit (long simulated sessions).
    """

    def __init__(
        self,
        lines: Mapping[int, str] | None = None,
        ctx: zmq.Context | None = None,
        addresses: Mapping[str, str] | None = None,
        *,
        log_limit: int | None = None,
    ) -> None:
        super().__init__()
        self.lines: dict[int, str] = dict(lines or {})
        addresses = dict(addresses or {})
        names = set(self.lines.values())
        if len(names) != len(self.lines):
            raise ValueError(f"SimPins: line names must be unique, got {self.lines}")
        unknown = sorted(set(addresses) - names)
        if unknown:
            raise ValueError(
                f"SimPins: addresses given for lines {unknown} that no pin carries "
                f"(lines: {self.lines})"
            )
        if addresses and ctx is None:
            raise ValueError("SimPins: publishing lines needs a zmq.Context (ctx)")
        if log_limit is not None and log_limit < 2:
            raise ValueError(f"SimPins: log_limit must be >= 2, got {log_limit}")
        self.log: list[tuple[int, int, int]] = []
        self._log_limit = log_limit
        self._rising: dict[int, int] = {}
        self._publishers: dict[int, Publisher] = {}
        self._pub_locks: dict[int, threading.Lock] = {}
        self._edges: dict[int, Edge] = {}
        try:
            for pin, name in self.lines.items():
                if name in addresses:
                    assert ctx is not None
                    self._pub_locks[pin] = threading.Lock()
                    self._publishers[pin] = Publisher(ctx, addresses[name], hwm=LINE_HWM)
                    self._edges[pin] = Edge(line=name, level=0, t_ns=0)
                    logger.debug(
                        "SimPins: pin %d publishes line %s at %s", pin, name, addresses[name]
                    )
        except BaseException:
            self._close_publishers()
            raise

    def edges(self, pin: int) -> np.ndarray:
        """Every write to ``pin`` still in the log: ``(E, 2)`` int64 ``[t_ns, level]``."""
        rows = [(t, level) for t, p, level in list(self.log) if p == pin]
        return np.array(rows, dtype=np.int64).reshape(len(rows), 2)

    def subscribers(self) -> dict[str, int]:
        counts = {}
        for pin, pub in self._publishers.items():
            with self._pub_locks[pin]:
                counts[self.lines[pin]] = pub.poll_subscriptions()
        return counts

    def rising_edges(self, pin: int) -> int:
        """Rising edges written to ``pin`` so far."""
        return self._rising.get(pin, 0)

    def _do_setup_output(self, pin: int, initial: int) -> None:
        self._rising.setdefault(pin, 0)

    def _do_write(self, pin: int, level: int) -> None:
        pass

    def _on_write(self, pin: int, level: int, previous: int, t_ns: int) -> None:
        log = self.log
        log.append((t_ns, pin, level))
        if self._log_limit is not None and len(log) > self._log_limit:
            del log[: len(log) // 2]
        if level == previous:
            return
        if level:
            self._rising[pin] += 1
        pub = self._publishers.get(pin)
        if pub is None:
            return
        edge = self._edges[pin]
        edge.level = level
        edge.t_ns = t_ns
        edge.truth_index = self._rising[pin] - 1
        with self._pub_locks[pin]:
            pub.send(edge)

    def _do_close(self) -> None:
        self._close_publishers()

    def _close_publishers(self) -> None:
        for pin, pub in self._publishers.items():
            with self._pub_locks[pin]:
                pub.close()
        self._publishers.clear()


def rig_lines(rig: RigConfig) -> dict[int, str]:
    """The rig's output pins and their line names; two roles on one pin is an error.

    The sync line's pin is included only when the sync line is enabled.
    """
    roles = [("trigger.camera_pin", rig.trigger.camera_pin, "trigger")]
    if rig.sync_line.enabled:
        roles.append(("sync_line.pin", rig.sync_line.pin, "sync"))
    roles.append(("trigger.ttl_pin", rig.trigger.ttl_pin, "ttl"))
    lines: dict[int, str] = {}
    keys: dict[int, str] = {}
    for key, pin, name in roles:
        if pin in lines:
            raise ConfigError(f"{key}: pin {pin} is already used as {keys[pin]}")
        lines[pin] = name
        keys[pin] = key
    return lines

