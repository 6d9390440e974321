"""The FrameSet assembler: frames of all cameras with the same trigger index -> one FrameSet.

Frames are matched by trigger index only, never by arrival time. A set is emitted as soon as
every camera has either delivered its frame or is known not to (a drop notice, a frame
flagged for timing, or the camera's stream has moved past that index); a set still missing a
camera that has been silent for ``transport.frameset_deadline_ms`` (or lagging for eight
deadlines) is emitted incomplete with the missing cameras named. Output, for latest-wins
consumers such as the pose engine, is one multipart
message: ``[FrameSetHeader, header_0, pixels_0, header_1, pixels_1, ...]`` (pixels forwarded
without a copy).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from rigstream import protocol
from rigstream.config import RigConfig
from rigstream.frames import FrameReceiver, Received, StopWait
from rigstream.protocol import FLAG_DROPPED, FLAG_EOS, FLAG_TIMING, FrameSetHeader
from rigstream.transport import ControlListener, Publisher, StatusReporter

logger = logging.getLogger(__name__)

MAX_WAIT_DEADLINES = 8
"""A set waits at most this many deadlines for a camera that is lagging but not silent."""


@dataclass
class _Pending:
    first_arrival: float
    frames: dict[str, Received] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    t_pi_ns: int = -1


class Assembler:
    def __init__(self, rig: RigConfig, run: str, ctx: zmq.Context | None = None,
                 status_address: str | None = None) -> None:
        self.rig = rig
        ctx = ctx or zmq.Context.instance()
        self.cameras = [c.name for c in rig.cameras]
        self.frames = FrameReceiver(rig, run, ctx, "assembler")
        self.pub = Publisher(ctx, rig.address("framesets", run), hwm=64)
        self.status = StatusReporter(ctx, status_address, "assembler")
        self.control = ControlListener(ctx, status_address and rig.address("control", run),
                                       "assembler")
        self.deadline_s = rig.transport.frameset_deadline_ms / 1000
        self.pending: dict[int, _Pending] = {}
        self.latest: dict[str, int] = dict.fromkeys(self.cameras, -1)
        self.last_arrival: dict[str, float] = dict.fromkeys(self.cameras, float("-inf"))
        self.seq = 0
        self.complete = 0
        self.incomplete = 0
        self.mixed = 0
        """Sets whose frames were really exposed on different pulses (simulation truth)."""
        self.missing: dict[str, list[int]] = {c: [] for c in self.cameras}
        self.flagged: dict[str, int] = dict.fromkeys(self.cameras, 0)
        self.last_emitted = -1

    def run_forever(self, stop: threading.Event | None = None) -> dict[str, Any]:
        waiting = StopWait(self.control, stop or threading.Event())
        self.status.report("ready", **self.summary())
        try:
            while not self.frames.all_ended:
                waiting.poll()
                if waiting.expired:
                    break
                got = self.frames.recv(timeout_ms=10)
                if got is not None:
                    self.add(got)
                    waiting.progressed()  # still catching up: keep waiting
                self.pub.poll_subscriptions()
                self.emit_due(time.monotonic())
                self.status.heartbeat(self.summary)
            self.emit_due(float("inf"))
            summary = self.summary()
            self.status.report("done", **summary)
            return summary
        except Exception as exc:
            logger.exception("assembler failed")
            self.status.report("error", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self.close()

    def add(self, got: Received) -> None:
        h = got.header
        self.last_arrival[h.camera] = time.monotonic()
        if h.flags & FLAG_EOS:
            self.latest[h.camera] = max(self.latest[h.camera], h.trigger_index)
            return
        n = h.trigger_index
        if n <= self.last_emitted and n not in self.pending:
            logger.warning("assembler: %s frame for trigger %d came after its set was emitted",
                           h.camera, n)
            return
        p = self.pending.get(n)
        if p is None:
            p = self.pending[n] = _Pending(time.monotonic())
        if p.t_pi_ns < 0:
            p.t_pi_ns = h.t_pi_ns
        self.latest[h.camera] = max(self.latest[h.camera], n)
        if h.flags & FLAG_TIMING:
            self.flagged[h.camera] += 1
            p.missing.add(h.camera)
        elif h.flags & FLAG_DROPPED or got.pixels is None:
            p.missing.add(h.camera)
        else:
            p.frames[h.camera] = got

    def emit_due(self, now: float) -> None:
        """Emit every set whose cameras are all accounted for: delivered, known missing, moved
        past its index, or silent for the deadline. A camera that is alive but lagging (a busy
        host) is waited for, up to ``MAX_WAIT_DEADLINES`` deadlines."""
        for n in sorted(self.pending):
            p = self.pending[n]
            settled = all(c in p.frames or c in p.missing or self.latest[c] > n
                          or now - max(self.last_arrival[c], p.first_arrival) > self.deadline_s
                          for c in self.cameras)
            if settled or now - p.first_arrival > MAX_WAIT_DEADLINES * self.deadline_s:
                self._emit(n, self.pending.pop(n))

    def _emit(self, n: int, p: _Pending) -> None:
        present = [c for c in self.cameras if c in p.frames]
        missing = [c for c in self.cameras if c not in p.frames]
        for c in missing:
            self.missing[c].append(n)
        if missing:
            self.incomplete += 1
        else:
            self.complete += 1
        truths = {p.frames[c].header.truth_index for c in present} - {-1}
        if truths and truths != {n}:
            self.mixed += 1
            logger.error("assembler: set %d holds frames of pulses %s", n, sorted(truths))
        self.last_emitted = max(self.last_emitted, n)
        head = FrameSetHeader(seq=self.seq, trigger_index=n, t_pi_ns=p.t_pi_ns, cameras=present,
                              missing=missing)
        parts: list[Any] = [protocol.encode(head)]
        for c in present:
            parts.extend(p.frames[c].parts)
        self.pub.sock.send_multipart(parts, copy=False)
        self.seq += 1

    def summary(self) -> dict[str, Any]:
        return {
            "framesets_complete": self.complete,
            "framesets_incomplete": self.incomplete,
            "framesets_mixed": self.mixed,
            "missing": {c: len(v) for c, v in self.missing.items()},
            "missing_indices": {c: v[-1000:] for c, v in self.missing.items()},
            "flagged": dict(self.flagged),
            "pending": len(self.pending),
            **self.frames.stats(),
        }

    def close(self) -> None:
        for part in (self.frames, self.pub, self.status, self.control):
            part.close()


def decode_frameset(parts: list[Any]) -> tuple[FrameSetHeader, list[tuple[protocol.FrameHeader, Any]]]:
    """Decode a FrameSet message into its header and (FrameHeader, pixels) per camera."""
    if not parts:
        raise protocol.ProtocolError("truncated", "empty frame set")
    head = protocol.decode(parts[0].buffer if hasattr(parts[0], "buffer") else parts[0],
                           FrameSetHeader)
    if len(parts) != 1 + 2 * len(head.cameras):
        raise protocol.ProtocolError(
            "truncated", f"frame set {head.trigger_index}: {len(parts)} parts for "
            f"{len(head.cameras)} cameras")
    views = []
    for i in range(len(head.cameras)):
        h, px = protocol.decode_frame_parts(parts[1 + 2 * i: 3 + 2 * i])
        if h.trigger_index != head.trigger_index:
            raise protocol.ProtocolError(
                "invalid", f"frame set {head.trigger_index} holds {h.camera} frame of trigger "
                f"{h.trigger_index}")
        views.append((h, px))
    return head, views


def run_assembler(rig: RigConfig, run: str, status_address: str | None = None) -> dict[str, Any]:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ctx = zmq.Context()
    try:
        return Assembler(rig, run, ctx, status_address=status_address).run_forever(stop)
    finally:
        ctx.destroy(linger=2000)  # forwarded frames may still be in flight
