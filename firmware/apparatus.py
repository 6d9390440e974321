"""The behaviour apparatus on the trigger daemon's clock: named inputs watched, named outputs
pulsed.

Inputs (``inputs:`` in the rig file: a knob's touch sensor, a lever, a beam break) are set up
on the pin backend with their pull and debounce; every accepted edge is stamped on the Pi's
monotonic clock (the camera pulses' clock) and published on the pulse stream as a
:class:`~rigstream.protocol.Pulse`: ``input:<name>`` when the line becomes active (``index``
counts activations from 0) and ``input:<name>-off`` when it is released (the index of the
activation it ends). The recorder writes them to ``pulses.csv`` with the rest; the session
turns them into ``inputs.csv`` with the trigger index each falls in.

Outputs (``outputs:``: a reward valve, an LED, a laser) rest at their inactive level. A
``pulse`` holds one active for ``width_ms``; a ``train`` gives ``count`` pulses at ``rate_hz``,
each rising edge due at ``t0 + i / rate_hz`` from the train's first edge (deadlines never drift)
and each falling edge ``width_ms`` after its own rising edge (a pulse is never shorter).
Each output has a thread of its own that writes its edges when due, so a command is answered
as soon as its first edge is out. Edges are published as ``out:<name>`` and
``out:<name>-fall`` with the pulse's index (counted per output from 0), like the TTL's. A
command for an output that is still running a pulse or train is refused (``busy``): two
programs on one line would make neither.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rigstream.config import ConfigError, InputConfig, OutputConfig, RigConfig

from .pins import PinBackend

logger = logging.getLogger(__name__)

Publish = Callable[..., None]
"""publish(*(line, index, t_ns)): the daemon's pulse publisher."""

MAX_TRAIN_PULSES = 100_000


class ApparatusError(RuntimeError):
    """A command the apparatus cannot carry out (unknown line, busy, bad numbers)."""


@dataclass
class _Input:
    config: InputConfig
    active_level: int
    state: int = 0
    """1 while active."""
    activations: int = 0
    last_t_ns: int = -1


@dataclass
class _Program:
    """What an output line is doing: its pulses' rising edges due, one width."""

    first_index: int
    rises_ns: list[int]
    width_ns: int
    t_command_ns: int
    done: int = 0
    edges: list[tuple[int, int]] = field(default_factory=list)


class _Output:
    def __init__(self, config: OutputConfig, pins: PinBackend, publish: Publish) -> None:
        self.config = config
        self.pins = pins
        self.publish = publish
        self.on = 1 if config.active == "high" else 0
        self.pulses = 0
        self.program: _Program | None = None
        self.cv = threading.Condition()
        self.closing = False
        self.thread = threading.Thread(target=self._run, name=f"out-{config.name}", daemon=True)
        self.thread.start()

    def start(self, count: int, rate_hz: float | None, width_ms: float, t_command_ns: int) -> dict[str, Any]:
        name = self.config.name
        if not 0 < width_ms <= self.config.max_width_ms:
            raise ApparatusError(f"output {name}: width_ms must be in (0, {self.config.max_width_ms:g}], "
                                 f"got {width_ms}")
        if not 1 <= count <= MAX_TRAIN_PULSES:
            raise ApparatusError(f"output {name}: count must be 1..{MAX_TRAIN_PULSES}, got {count}")
        width_ns = round(width_ms * 1e6)
        period_ns = 0
        if count > 1:
            if rate_hz is None or not rate_hz > 0:
                raise ApparatusError(f"output {name}: a train of {count} needs rate_hz > 0")
            period_ns = round(1e9 / rate_hz)
            if width_ns >= period_ns:
                raise ApparatusError(f"output {name}: width_ms {width_ms} must be shorter than the train's "
                                     f"period ({period_ns / 1e6:g} ms at {rate_hz} Hz)")
        with self.cv:
            if self.closing:
                raise ApparatusError(f"output {name}: the daemon is closing")
            if self.program is not None:
                p = self.program
                raise ApparatusError(f"output {name}: busy with pulses {p.first_index}.."
                                     f"{p.first_index + len(p.rises_ns) - 1} ({p.done} done)")
            t_first = self.pins.write(self.config.pin, self.on)
            rises = [t_first + i * period_ns for i in range(count)]
            p = _Program(first_index=self.pulses, rises_ns=rises, width_ns=width_ns,
                         t_command_ns=t_command_ns)
            p.edges.append((1, t_first))
            self.pulses += count
            self.program = p
            self.publish((f"out:{name}", p.first_index, t_first))  # before its fall can be
            self.cv.notify()
        return {"output": name, "index": p.first_index, "count": count, "t_command_ns": t_command_ns,
                "t_edge_ns": t_first, "t_last_fall_due_ns": rises[-1] + width_ns}

    def _run(self) -> None:
        """Write each due edge; a program running at close is finished (a reward's dose, a
        laser's train, is what the experiment asked for)."""
        name, pin, on = self.config.name, self.config.pin, self.on
        cv = self.cv
        while True:
            with cv:
                p = self.program
                if p is None:
                    if self.closing:
                        return
                    cv.wait()
                    continue
                i = p.done
                high = len(p.edges) % 2 == 1  # edges alternate from the first rise
                # a rise is due on the train's grid; its fall, the width after the rise itself
                due = p.edges[-1][1] + p.width_ns if high else p.rises_ns[i]
                wait_ns = due - time.monotonic_ns()
                if wait_ns > 0:
                    cv.wait(wait_ns * 1e-9)
                    continue
                t = self.pins.write(pin, 1 - on if high else on)
                p.edges.append((0 if high else 1, t))
                if high:
                    p.done += 1
                finished = p.done == len(p.rises_ns)
                if finished:
                    self.program = None
            self.publish((f"out:{name}-fall" if high else f"out:{name}", p.first_index + i, t))
            if finished:
                logger.info("apparatus: output %s: pulses %d..%d done, first edge %d ns after the command",
                            name, p.first_index, p.first_index + len(p.rises_ns) - 1,
                            p.edges[0][1] - p.t_command_ns)

    def close(self, timeout_s: float) -> None:
        with self.cv:
            self.closing = True
            self.cv.notify()
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            logger.error("apparatus: output %s did not finish its pulses; the line may be active",
                         self.config.name)


class Apparatus:
    """The rig's inputs and outputs on one pin backend (which it does not own)."""

    def __init__(self, rig: RigConfig, pins: PinBackend, publish: Publish) -> None:
        self.pins = pins
        self.publish = publish
        self.inputs: dict[str, _Input] = {}
        self.outputs: dict[str, _Output] = {}
        self._by_pin: dict[int, _Input] = {}
        self._lock = threading.Lock()
        try:
            for out in rig.outputs:
                try:
                    pins.setup_output(out.pin, 0 if out.active == "high" else 1, name=f"output {out.name}")
                except ValueError as exc:
                    raise ConfigError(f"outputs {out.name!r}: {exc}") from None
                self.outputs[out.name] = _Output(out, pins, publish)
            for cfg in rig.inputs:
                line = _Input(cfg, active_level=1 if cfg.active == "high" else 0)
                self.inputs[cfg.name] = line
                self._by_pin[cfg.pin] = line
                try:
                    level = pins.setup_input(cfg.pin, cfg.pull, self._edge, cfg.debounce_us,
                                             name=f"input {cfg.name}")
                except ValueError as exc:
                    raise ConfigError(f"inputs {cfg.name!r}: {exc}") from None
                line.state = int(level == line.active_level)
                if line.state:
                    logger.warning("apparatus: input %s is active at start (pin %d %s)", cfg.name, cfg.pin,
                                   "high" if level else "low")
        except BaseException:
            self.close()
            raise

    def _edge(self, pin: int, level: int, t_ns: int) -> None:
        """An accepted edge from the backend (its thread)."""
        line = self._by_pin.get(pin)
        if line is None:
            return
        with self._lock:
            state = int(level == line.active_level)
            if state == line.state:
                return
            line.state = state
            line.last_t_ns = t_ns
            if state:
                index = line.activations
                line.activations += 1
            else:
                index = max(line.activations - 1, 0)
        name = line.config.name
        self.publish((f"input:{name}" if state else f"input:{name}-off", index, t_ns))

    def output(self, name: str, width_ms: float, count: int = 1, rate_hz: float | None = None,
               t_command_ns: int | None = None) -> dict[str, Any]:
        out = self.outputs.get(name)
        if out is None:
            raise ApparatusError(f"no output {name!r} (the rig has {sorted(self.outputs) or 'none'})")
        return out.start(count, rate_hz, width_ms, t_command_ns if t_command_ns is not None
                         else time.monotonic_ns())

    def status(self) -> dict[str, Any]:
        return {"inputs": {n: {"state": i.state, "activations": i.activations}
                           for n, i in self.inputs.items()},
                "outputs": {n: {"pulses": o.pulses, "busy": o.program is not None}
                            for n, o in self.outputs.items()}}

    def close(self, timeout_s: float = 5.0) -> None:
        """Finish every output's pulses (each rests at its inactive level after)."""
        for out in self.outputs.values():
            out.close(timeout_s)
