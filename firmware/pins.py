"""Pin backends: the one interface the trigger daemon drives outputs and watches inputs through.

In the spirit of gpiozero's pin factories, the daemon never calls a GPIO library: it is handed a
:class:`PinBackend`, sets pins up as outputs and writes levels, and sets pins up as inputs whose
accepted edges come back through a callback. :class:`SimPins` is the simulated twin: it records
every write as ``(t_ns, pin, level)`` and publishes every level change as a
:class:`rigstream.protocol.Edge` on a simulated electrical line that simulated cameras subscribe
to, and its inputs are driven with :meth:`SimPins.inject`. The real drivers,
:class:`rigstream.firmware.rpigpio.RPiGPIOPins` and
:class:`rigstream.firmware.pigpio_pins.PigpioPins`, live in their own modules and are imported
only by :func:`rigstream.firmware.backends.make_pins` when a rig file asks for one.

Inputs, the same in every backend
---------------------------------
``setup_input(pin, pull, callback, debounce_us)`` watches a pin. A change of level is accepted
only once the new level has held for ``debounce_us`` (pigpio's glitch-filter rule: a change
shorter than that is ignored), and its time is when the level first changed, not when it was
confirmed. Accepted edges alternate in level; a callback never reports a non-change. Each
accepted edge calls ``callback(pin, level, t_ns)`` with ``t_ns`` on ``time.monotonic_ns``'s
clock, the one output edges are stamped on. Callbacks of one backend run one at a time, in
order, from a backend thread (:class:`SimPins`: also the thread that injects), with the
backend's input lock held: keep them short (hand work to a queue); they may call ``read`` or
even ``close`` but must not wait for another thread that uses this backend's inputs. After
``close()`` returns no callback runs.

Where the debounce happens and what a timestamp is worth differ per backend (see each driver's
docstring and ``firmware/README.md``): :class:`SimPins` and the RPi.GPIO backend filter in
software here (:meth:`PinBackend._observe`, with a timer thread that confirms a change once its
hold time has passed); pigpio filters in its daemon and stamps edges with its microsecond tick.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, TypeVar

import numpy as np
import zmq

from rigstream.config import ConfigError, RigConfig
from rigstream.protocol import Edge
from rigstream.transport import Publisher

logger = logging.getLogger(__name__)

LINE_HWM = 100_000
"""Edges queued per subscriber of a simulated line before ZeroMQ drops."""


_B = TypeVar("_B", bound="PinBackend")

EdgeCallback = Callable[[int, int, int], None]
"""callback(pin, level 0/1, t_ns): one accepted edge of an input, t_ns on time.monotonic_ns's
clock (the Pi's clock, the same one output edges are stamped on)."""

Pull = Literal["up", "down", "off"]
PULLS: tuple[Pull, ...] = ("up", "down", "off")
"""The internal pull resistor of an input: to 3V3, to ground, or none."""

LINE_ROLES = {"trigger": "camera trigger", "sync": "sync line", "ttl": "TTL output"}
"""What the trigger's line names (:func:`rig_lines`) stand for, in messages."""


class PinError(RuntimeError):
    """A pin used in a state that does not allow it (not set up, used otherwise, backend closed)."""


@dataclass(eq=False)
class _Input:
    """One watched input and its debounce state (guarded by the backend's input lock)."""

    pin: int
    pull: Pull
    callback: EdgeCallback
    debounce_ns: int
    level: int = -1
    """The last accepted level; -1 until setup_input has read the pin (edges are dropped)."""
    pending: int = -1
    """The level of a change not yet held for debounce_ns; -1: none pending."""
    pending_t_ns: int = 0
    """When the pending change began."""
    due_ns: int | None = None
    """Monotonic time at which the timer confirms the pending change (None: only a later
    observation or settle confirms it)."""
    glitches: int = 0
    """Changes dropped because the level went back within debounce_ns."""


class PinBackend(ABC):
    """Digital outputs and inputs addressed by number (BCM numbers on a Raspberry Pi).

    Public methods check state and log, then call the ``_do_*`` methods a driver writes.
    ``write`` is on the trigger's hot path: it checks only what it must and does not log.
    A backend is a context manager; ``close()`` is idempotent.

    The base owns the inputs' state, their callbacks and the debounce timer thread: a driver
    sets an input up (``_do_setup_input``), reads it (``_do_read``) and reports what its library
    tells it, either raw level changes to be debounced here (``_observe``) or edges its
    library has already filtered (``_accept``). See the module docstring for the semantics.
    """

    pin_range: range | None = None
    """Pin numbers this backend accepts (None: any non-negative integer)."""
    pin_kind: str | None = None
    """What a pin number means to this backend, for the out-of-range message."""
    max_debounce_us: int | None = None
    """The longest debounce this backend accepts (None: no limit)."""

    def __init__(self) -> None:
        self._levels: dict[int, int] = {}
        self._closed = False
        self._names: dict[int, str] = {}
        self._inputs: dict[int, _Input] = {}
        # One re-entrant lock guards the inputs' state and runs their callbacks, so edges are
        # delivered one at a time and in order, and close() can wait out a callback in flight.
        self._input_lock = threading.RLock()
        self._timer_wake = threading.Condition(self._input_lock)
        self._timer: threading.Thread | None = None
        self._emitting: int | None = None
        """The thread running an input callback now (it holds the input lock)."""

    # -- interface -----------------------------------------------------------------------

    def setup_output(self, pin: int, initial: int = 0, *, name: str | None = None) -> None:
        """Make ``pin`` an output driven to ``initial`` (0 or 1); ``name`` (e.g. the line's
        role) is used in messages. PinError if ``pin`` is an input of this backend."""
        self._check_open()
        self._check_pin(pin)
        if initial not in (0, 1):
            raise ValueError(f"pin {pin}: initial level must be 0 or 1, got {initial!r}")
        if pin in self._inputs:
            raise PinError(f"pin {pin} is already an input{self._role(pin)}: it cannot also be an output")
        if pin in self._levels:
            logger.debug("%s: pin %d set up again", type(self).__name__, pin)
        self._do_setup_output(pin, int(initial))
        self._levels[pin] = int(initial)
        if name is not None:
            self._names[pin] = name
        logger.debug("%s: pin %d is an output, initial level %d", type(self).__name__, pin, initial)

    def setup_input(
        self,
        pin: int,
        pull: Pull,
        callback: EdgeCallback,
        debounce_us: int = 0,
        *,
        name: str | None = None,
    ) -> int:
        """Watch an input: every change of level that lasts at least ``debounce_us`` calls
        ``callback(pin, level, t_ns)`` (from a backend thread), ``t_ns`` being when the level
        first changed; returns the level now.

        ``pull`` sets the pin's internal resistor (``"up"``, ``"down"``, ``"off"``); ``name``
        (the apparatus line, e.g. ``"lever"``) is used in messages. An edge that happens while
        the input is being set up is not called back: the level returned already shows it.
        PinError if the pin is already an output or input of this backend, or the backend is
        closed; ValueError for a pin out of range or a bad ``pull`` or ``debounce_us``.
        """
        self._check_open()
        self._check_pin(pin)
        pin = int(pin)
        if pull not in PULLS:
            raise ValueError(f"pin {pin}: pull: expected 'up', 'down' or 'off', got {pull!r}")
        if not callable(callback):
            raise TypeError(f"pin {pin}: callback: expected a callable (pin, level, t_ns), got {callback!r}")
        if isinstance(debounce_us, bool) or not isinstance(debounce_us, (int, np.integer)) or debounce_us < 0:
            raise ValueError(f"pin {pin}: debounce_us: expected an integer >= 0, got {debounce_us!r}")
        debounce_us = int(debounce_us)
        if self.max_debounce_us is not None and debounce_us > self.max_debounce_us:
            raise ValueError(
                f"pin {pin}: debounce_us: {type(self).__name__} accepts at most {self.max_debounce_us} "
                f"us, got {debounce_us}"
            )
        if pin in self._levels:
            raise PinError(f"pin {pin} is already an output{self._role(pin)}: it cannot also be an input")
        if pin in self._inputs:
            raise PinError(f"pin {pin} is already an input{self._role(pin)}")
        record = _Input(pin, pull, callback, debounce_us * 1000)
        with self._input_lock:
            self._inputs[pin] = record  # a driver's callback may come before setup returns
        try:
            level = 1 if self._do_setup_input(pin, pull, debounce_us) else 0
        except BaseException:
            with self._input_lock:
                del self._inputs[pin]
            raise
        with self._input_lock:
            record.level = level
        if name is not None:
            self._names[pin] = name
        logger.debug(
            "%s: pin %d%s is an input, pull %s, debounce %d us, level %d",
            type(self).__name__, pin, self._role(pin), pull, debounce_us, level,
        )
        return level

    def read(self, pin: int) -> int:
        """An input's level now, as the hardware shows it (not debounced)."""
        self._check_open()
        if pin not in self._inputs:
            if pin in self._levels:
                raise PinError(
                    f"pin {pin} is an output{self._role(pin)}, not an input (level() gives the level "
                    f"written to it)"
                )
            set_up = ", ".join(str(p) for p in self._inputs) or "none"
            raise PinError(f"pin {pin} is not set up as an input (inputs set up: {set_up})")
        return 1 if self._do_read(pin) else 0

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
    def inputs(self) -> tuple[int, ...]:
        """Pins set up as inputs, in setup order."""
        return tuple(self._inputs)

    def glitches(self, pin: int) -> int:
        """Changes of an input dropped by the software debounce because the level went back
        too soon (0 where the driver's library filters, as pigpio's daemon does)."""
        record = self._inputs.get(pin)
        if record is None:
            raise PinError(f"pin {pin} is not set up as an input")
        return record.glitches

    @property
    def closed(self) -> bool:
        return self._closed

    def subscribers(self) -> dict[str, int]:
        """Subscribers per simulated line; a real backend has no lines and answers ``{}``."""
        return {}

    def close(self) -> None:
        """Stop the inputs' callbacks (none runs after this returns; one in flight in another
        thread is waited for), then release the hardware. Idempotent."""
        if self._closed:
            return
        with self._timer_wake:  # waits for a callback in flight, as it holds this lock
            self._closed = True
            self._timer_wake.notify_all()
        timer = self._timer
        # From inside a callback this thread still holds the input lock the timer needs to
        # wake up: it ends by itself once the callback returns.
        if timer is not None and timer is not threading.current_thread() and (
            self._emitting != threading.get_ident()
        ):
            timer.join()
        try:
            self._do_close()
        finally:
            logger.debug(
                "%s: closed (outputs %s, inputs %s)",
                type(self).__name__, list(self._levels), list(self._inputs),
            )

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
        if self._inputs and not self._closed:
            state += f" inputs={list(self._inputs)}"
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

    def _do_setup_input(self, pin: int, pull: Pull, debounce_us: int) -> int:
        """Configure the hardware pin as an input with ``pull``, start reporting its changes
        (``_observe`` or ``_accept``), and return its level now. ``debounce_us`` is for a
        driver whose library filters (pigpio); the others leave it to ``_observe``."""
        raise NotImplementedError(f"{type(self).__name__} has no inputs")

    def _do_read(self, pin: int) -> int:
        """The input's level now (0 or 1). Also called by the debounce timer, under the input
        lock, to check that a pending change still holds."""
        raise NotImplementedError(f"{type(self).__name__} has no inputs")

    # -- inputs: what a driver reports, and the debounce -----------------------------------

    def _observe(self, pin: int, level: int, t_ns: int, *, timed: bool = True) -> None:
        """A raw change of an input seen at ``t_ns`` (the level is ``level`` from then on):
        debounce it in software and call back accepted edges.

        A change becomes pending; it is accepted, at its own time, once a later observation
        or ``_settle`` shows that it held for the debounce time, or (``timed``: ``t_ns`` is
        now on the real clock) when the timer thread finds it still holding at
        ``t_ns + debounce``; it is dropped if the level goes back sooner. With no debounce a
        change is accepted at once.
        """
        with self._input_lock:
            record = self._inputs.get(pin)
            if record is None or record.level < 0 or self._closed:
                return
            if record.pending >= 0:
                if t_ns - record.pending_t_ns >= record.debounce_ns:
                    self._confirm(record)  # it held until now: accepted, then see this one
                elif level != record.pending:
                    self._drop(record, t_ns)  # back to the accepted level too soon: a glitch
                    return
                else:
                    return  # the same level again: still pending
            if level == record.level:
                return
            if record.debounce_ns == 0:
                self._emit(record, level, t_ns)
                return
            record.pending = level
            record.pending_t_ns = t_ns
            if timed:
                record.due_ns = t_ns + record.debounce_ns
                self._wake_timer()

    def _accept(self, pin: int, level: int, t_ns: int) -> None:
        """An edge the driver's library has already debounced: call it back (a non-change is
        dropped, so accepted edges alternate)."""
        with self._input_lock:
            record = self._inputs.get(pin)
            if record is None or record.level < 0:
                return
            self._emit(record, level, t_ns)

    def _settle(self, t_ns: int) -> int:
        """Accept every pending change that has held until ``t_ns``; returns how many."""
        confirmed = 0
        with self._input_lock:
            if self._closed:
                return 0
            for record in list(self._inputs.values()):
                if record.pending >= 0 and t_ns - record.pending_t_ns >= record.debounce_ns:
                    self._confirm(record)
                    confirmed += 1
        return confirmed

    def _confirm(self, record: _Input) -> None:
        level, t_ns = record.pending, record.pending_t_ns
        record.pending = -1
        record.due_ns = None
        self._emit(record, level, t_ns)

    def _drop(self, record: _Input, t_ns: int) -> None:
        record.glitches += 1
        logger.debug(
            "%s: pin %d: a change to %d lasted %d us, under the %d us debounce: dropped",
            type(self).__name__, record.pin, record.pending, (t_ns - record.pending_t_ns) // 1000,
            record.debounce_ns // 1000,
        )
        record.pending = -1
        record.due_ns = None

    def _emit(self, record: _Input, level: int, t_ns: int) -> None:
        """Call back one accepted edge (the input lock is held)."""
        if self._closed or level == record.level:
            return
        record.level = level
        outer, self._emitting = self._emitting, threading.get_ident()
        try:
            record.callback(record.pin, level, t_ns)
        except Exception:
            logger.exception(
                "%s: pin %d%s: the input callback raised", type(self).__name__, record.pin,
                self._role(record.pin),
            )
        finally:
            self._emitting = outer

    def _wake_timer(self) -> None:
        """Start the debounce timer thread, or wake it for a new due time (lock held)."""
        if self._timer is None:
            self._timer = threading.Thread(
                target=self._run_timer, name=f"{type(self).__name__}-debounce", daemon=True
            )
            self._timer.start()
        else:
            self._timer_wake.notify()

    def _run_timer(self) -> None:
        """Confirm pending changes whose hold time has passed on the real clock, after checking
        that the pin still shows the pending level (a change back may not have been reported
        yet); sleeps until the next due time, or until woken."""
        with self._timer_wake:
            while not self._closed:
                now = time.monotonic_ns()
                next_due: int | None = None
                fired = False
                for record in list(self._inputs.values()):
                    due = record.due_ns
                    if record.pending < 0 or due is None:
                        continue
                    if due > now:
                        next_due = due if next_due is None else min(next_due, due)
                        continue
                    fired = True
                    try:
                        still = 1 if self._do_read(record.pin) else 0
                    except Exception:
                        logger.exception("%s: pin %d: reading the input failed", type(self).__name__,
                                         record.pin)
                        still = -1
                    if still == record.pending:
                        self._confirm(record)
                    else:
                        self._drop(record, now)
                    if self._closed:
                        return
                if fired:
                    continue  # callbacks took time: look at the clock again
                self._timer_wake.wait(None if next_due is None else (next_due - now) / 1e9)

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
        if pin in self._inputs:
            raise PinError(f"pin {pin} is an input{self._role(pin)}, not an output (read() gives its level)")
        set_up = ", ".join(str(p) for p in self._levels) or "none"
        raise PinError(f"pin {pin} is not set up as an output (outputs set up: {set_up})")

    def _role(self, pin: int) -> str:
        """`` (camera trigger)``: what the pin is used for, where a name is known, for messages."""
        name = self._names.get(pin)
        return "" if name is None else f" ({LINE_ROLES.get(name, name)})"


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

    Inputs are driven from outside with :meth:`inject` (the simulated apparatus, or a test). A
    simulated input rests high with ``pull="up"`` and low otherwise (a floating pin reads low
    here) until a level is injected. The debounce is the base's software rule, made
    deterministic: a change injected with an explicit ``t_ns`` is confirmed by a later
    :meth:`inject` whose ``t_ns`` shows it held (``>= change + debounce``), or by
    :meth:`settle`, and dropped if the level goes back sooner; a change injected without
    ``t_ns`` (stamped now) is also confirmed in real time by the base's timer thread.
    Callbacks run in the injecting thread (or the timer's).
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
        self._watchers: dict[int, list[Callable[[int, int], None]]] = {}
        self._log_limit = log_limit
        self._names.update(self.lines)
        self._raw: dict[int, int] = {}
        """Input pin -> the level injected last (what read() shows)."""
        self._inject_t: dict[int, int] = {}
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

    def inject(self, pin: int, level: int, t_ns: int | None = None) -> None:
        """Drive a simulated input to ``level`` from outside at ``t_ns`` (default: now), as a
        sensor would; the change then goes through the debounce to the callback.

        Injections on one pin come in time order (ValueError otherwise). With an explicit
        ``t_ns`` a pending change is confirmed only by a later injection or :meth:`settle`
        (deterministic); without, the timer thread also confirms it once it has held.
        """
        if isinstance(level, bool):
            level = int(level)
        if level not in (0, 1):
            raise ValueError(f"pin {pin}: level must be 0 or 1, got {level!r}")
        with self._input_lock:
            self._check_open()
            if pin not in self._inputs:
                set_up = ", ".join(str(p) for p in self._inputs) or "none"
                raise PinError(f"pin {pin} is not set up as an input (inputs set up: {set_up})")
            timed = t_ns is None
            t = time.monotonic_ns() if t_ns is None else int(t_ns)
            last = self._inject_t.get(pin)
            if last is not None and t < last:
                raise ValueError(
                    f"pin {pin}: injected at t_ns {t}, before the previous injection at {last}: "
                    f"injections on a pin must come in time order"
                )
            self._inject_t[pin] = t
            self._raw[pin] = level
            self._observe(pin, level, t, timed=timed)

    def watch(self, pin: int, callback: Callable[[int, int], None]) -> None:
        """Call ``callback(level, t_ns)`` on every level change this backend writes to output
        ``pin``, in the writing thread (the pulse thread for the camera line: hand the work on,
        do none there). The simulated apparatus watches the camera line this way, as a sensor
        read at each exposure would."""
        self._watchers.setdefault(pin, []).append(callback)

    def settle(self, t_ns: int | None = None) -> int:
        """Accept every pending input change that has held until ``t_ns`` (default: now), as
        time passing with no further change would; returns how many were accepted."""
        return self._settle(time.monotonic_ns() if t_ns is None else int(t_ns))

    def _do_setup_input(self, pin: int, pull: Pull, debounce_us: int) -> int:
        level = 1 if pull == "up" else 0
        self._raw[pin] = level
        return level

    def _do_read(self, pin: int) -> int:
        return self._raw[pin]

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
        for watcher in self._watchers.get(pin, ()):
            watcher(level, t_ns)
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

