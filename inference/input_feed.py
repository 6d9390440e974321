"""The apparatus's input edges, live, for the rules: from the trigger daemon's pulse stream to
(input, on, t_ns, trigger_index); and the sync line's edges, for the live neural clock.

The daemon publishes each accepted input edge as ``input:<name>`` / ``input:<name>-off`` on the
same stream as the camera pulses, both stamped on the Pi's clock (see
:mod:`rigstream.firmware.apparatus`). An edge belongs to the frame of the last camera pulse at or
before it. The two come from different threads of the daemon, so an edge can arrive just before
the pulse it follows: an edge is held until a camera pulse at or after its time has been seen (or
``HOLD_S`` has passed, when the train has stopped), so its trigger index is the one ``inputs.csv``
gets after the session.
"""

from __future__ import annotations

import bisect
import collections
import logging
import time
from collections.abc import Callable

import zmq

from rigstream import protocol
from rigstream.protocol import Pulse

logger = logging.getLogger(__name__)

HOLD_S = 0.2
"""How long an edge waits for a later camera pulse before it is placed with the last one seen."""
KEEP_PULSES = 4096
"""Camera pulse times kept (an edge older than these gets the oldest: seconds at any rate)."""


class InputFeed:
    """A subscriber to the pulse stream; :meth:`poll` returns the input edges ready, in order."""

    def __init__(self, ctx: zmq.Context, address: str,
                 on_sync: Callable[[int], None] | None = None) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(address)
        self._pulse_t: collections.deque[int] = collections.deque(maxlen=KEEP_PULSES)
        self._pulse_n: collections.deque[int] = collections.deque(maxlen=KEEP_PULSES)
        self._held: list[tuple[int, str, bool, float]] = []  # (t_ns, input, on, held since)
        self.on_sync = on_sync
        """Called with each sync-line rising edge's time (the live neural clock's Pi side)."""
        self.malformed = protocol.MalformedCounter("pose engine: pulses")
        self.edges = 0

    def poll(self) -> list[tuple[str, bool, int, int]]:
        """Take what has arrived; the edges whose frame is known: (input, on, t_ns, trigger_index)."""
        while True:
            try:
                msg = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                p = protocol.decode(msg, Pulse)
            except protocol.ProtocolError as err:
                self.malformed(err)
                continue
            if p.line == "camera":
                if self._pulse_t and p.t_pi_ns < self._pulse_t[-1]:  # a new train: indices restart
                    self._pulse_t.clear()
                    self._pulse_n.clear()
                self._pulse_t.append(p.t_pi_ns)
                self._pulse_n.append(p.index)
            elif p.line == "sync":
                if self.on_sync is not None:
                    self.on_sync(p.t_pi_ns)
            elif p.line.startswith("input:"):
                name = p.line[len("input:"):]
                off = name.endswith("-off")
                self._held.append((p.t_pi_ns, name[:-4] if off else name, not off, time.monotonic()))
        if not self._held:
            return []
        self._held.sort()
        ready = []
        now = time.monotonic()
        newest = self._pulse_t[-1] if self._pulse_t else -1
        while self._held and (self._held[0][0] <= newest or now - self._held[0][3] > HOLD_S):
            t, name, on, _ = self._held.pop(0)
            at = bisect.bisect_right(self._pulse_t, t) - 1  # deques support bisect by index
            n = self._pulse_n[at] if at >= 0 else -1
            ready.append((name, on, t, n))
            self.edges += 1
        return ready

    def close(self) -> None:
        self.sock.close()
