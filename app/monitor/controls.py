"""The rig controls: what the page's buttons ask of the rig, over ZeroMQ.

"Save clip now" pushes an Event to the ring buffer's events socket; "test TTL" sends a ``ttl``
Command to the trigger daemon and waits for its reply. :class:`RigControls` only carries the
request: how often the page may ask, and what it is answered, is the buttons' business
(:mod:`.buttons`), which call in through a small protocol.
"""

from __future__ import annotations

import time

import zmq

from rigstream import protocol
from rigstream.config import RigConfig
from rigstream.protocol import Command, Event
from rigstream.transport import CurveClientKeys, request


class RigControls:
    """The ring buffer's clip requests and the trigger daemon's test TTL. The clip socket is
    opened and closed by the thread that sends on it (the web server's), with :meth:`open` and
    :meth:`close`; :meth:`fire_ttl` blocks, so run it off the event loop."""

    def __init__(self, rig: RigConfig, run: str, ctx: zmq.Context, curve: CurveClientKeys | None) -> None:
        self.rig = rig
        self.run = run
        self.ctx = ctx
        self.curve = curve
        self._push: zmq.Socket | None = None

    def open(self) -> None:
        """PUSH to the ring buffer's events (used on one thread only)."""
        sock = self.ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.SNDHWM, 100)
        sock.connect(self.rig.address("events", self.run))
        self._push = sock

    def clip_event(self) -> Event:
        """The "save clip now" event: no window of its own, so the ring buffer gives it the
        rig's and merges it into a pending clip of the rig's window that it overlaps (never into
        a rule's clip, whose window stays exact)."""
        return Event(name="monitor", source="monitor", t_host_ns=time.monotonic_ns())

    def save_clip(self) -> Event | None:
        """Ask the ring buffer for a clip now; the event sent, or None when the ring buffer is
        not taking events (its queue is full: is it running?). Never blocks."""
        event = self.clip_event()
        assert self._push is not None, "RigControls.open() first"
        try:
            self._push.send(protocol.encode(event), zmq.NOBLOCK)
        except zmq.Again:
            return None
        return event

    def fire_ttl(self, width_ms: float) -> protocol.Reply:
        """Ask the trigger daemon for a TTL pulse (blocking; run it off the event loop)."""
        return request(self.ctx, self.rig.address("trigger_control", self.run),
                       Command(cmd="ttl", args={"width_ms": width_ms}), timeout_s=2.0, curve=self.curve)

    def close(self) -> None:
        if self._push is not None:
            self._push.close()
            self._push = None
