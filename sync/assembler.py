"""The FrameSet assembler: frames of all cameras with the same trigger index -> one FrameSet.

It reads every camera's frame store (:mod:`rigstream.framestore`) with one
:class:`~rigstream.framestore.StoreCursor` per camera, so it sees every trigger index of every
camera exactly once, in order, whatever a message queue would have dropped; the cameras'
header messages only wake it (:class:`~rigstream.frames.CameraStores`). It never touches the
pixels.

Frames are matched by trigger index only, never by arrival time. A set is emitted as soon as
every camera has either delivered its frame or is known not to: a drop notice, a frame flagged
for timing, an index overwritten before the assembler read it (``overrun``: the assembler fell
more than the store's ring behind), an index its camera went past without writing, or the
camera's stream has ended. A set still missing a camera that has been silent for
``transport.frameset_deadline_ms`` (or lagging for eight deadlines) is emitted incomplete. The
missing cameras are named with their reasons.

Output, for latest-wins consumers such as the pose engine, is one single-part message per set:
a :class:`~rigstream.protocol.FrameSetHeader` carrying each present camera's FrameHeader (its
``slot`` says where the pixels are; the consumer reads them in place and checks that the slot
still holds the index afterwards).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import zmq

from rigstream import protocol
from rigstream.component import Component
from rigstream.config import RigConfig
from rigstream.frames import CameraStores
from rigstream.framestore import FIELDS, FrameStore, Record, StoreCursor, frame_header
from rigstream.protocol import FLAG_DROPPED, FLAG_INCOMPLETE, FLAG_TIMING, FrameHeader, FrameSetHeader
from rigstream.transport import ControlListener, Publisher, SignalStop, StatusReporter

logger = logging.getLogger(__name__)

MAX_WAIT_DEADLINES = 8
"""A set waits at most this many deadlines for a camera that is lagging but not silent."""
RECORDS_PER_TURN = 1000
"""Records read per camera and turn at most (a far-behind assembler still reports and emits)."""
WAKE_MS = 10
"""Longest wait for a camera's header between two turns (the deadline check's resolution)."""

MISSING_KEPT = 1000
"""Indices per camera the assembler's summary lists as missing (the newest; all are counted)."""


@dataclass
class _Pending:
    first_arrival: float
    frames: dict[str, FrameHeader] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    """Camera -> why it has no frame in this set."""
    t_pi_ns: int = -1


class Assembler(Component):
    name = "assembler"

    def __init__(self, rig: RigConfig, run: str, ctx: zmq.Context | None = None,
                 status_address: str | None = None, sets_hwm: int = 64) -> None:
        """``sets_hwm``: frame sets queued per subscriber before more are dropped (its
        latest-wins consumers want the newest; 0: none dropped, for a reader of every set)."""
        self.rig = rig
        ctx = ctx or zmq.Context.instance()
        self.cameras = [c.name for c in rig.cameras]
        self.frames = CameraStores(rig, run, ctx, "assembler")
        self.cursors: dict[str, StoreCursor] = {}
        self.pub = Publisher(ctx, rig.address("framesets", run), hwm=sets_hwm)
        self.status = StatusReporter(ctx, status_address, "assembler")
        self.control = ControlListener(ctx, status_address and rig.address("control", run),
                                       "assembler")
        self.deadline_s = rig.transport.frameset_deadline_ms / 1000
        self.pending: dict[int, _Pending] = {}
        self.ended: dict[str, bool] = dict.fromkeys(self.cameras, False)
        """The camera's stream ended and every index it wrote has been read."""
        self.last_arrival: dict[str, float] = dict.fromkeys(self.cameras, float("-inf"))
        self.seq = 0
        self.complete = 0
        self.incomplete = 0
        self.mixed = 0
        """Sets whose frames were really exposed on different pulses (simulation truth)."""
        self.missing: dict[str, int] = dict.fromkeys(self.cameras, 0)
        self.missing_indices: dict[str, deque[int]] = {c: deque(maxlen=MISSING_KEPT) for c in self.cameras}
        """The newest MISSING_KEPT indices each camera was missing from (memory bounded for any
        session length; the recorder's tables hold every one)."""
        self.reasons: dict[str, Counter[str]] = {c: Counter() for c in self.cameras}
        self.flagged: dict[str, int] = dict.fromkeys(self.cameras, 0)
        self.late: dict[str, int] = dict.fromkeys(self.cameras, 0)
        """Records read after their set had been emitted (the deadline gave up on them)."""
        self.last_emitted = -1
        self._overrun_run: dict[str, tuple[int, int]] = {}
        """Per camera, the first and last index of overrun records not logged yet."""
        self._overrun_logged = 0.0
        self._late_logged = 0.0
        self._backlog = False

    @property
    def all_ended(self) -> bool:
        return all(self.ended.values())

    # -- the loop (rigstream.component) ----------------------------------------------------

    def finished(self) -> bool:
        return self.all_ended

    def turn(self) -> bool:
        self.frames.wait(0 if self._backlog else WAKE_MS)
        got, self._backlog = self.read_stores()
        self.pub.poll_subscriptions()
        self.emit_due(time.monotonic())
        return got > 0

    def finish(self) -> dict[str, Any]:
        self.emit_due(float("inf"))
        self._log_overruns(force=True)
        return self.summary()

    def read_stores(self) -> tuple[int, bool]:
        """Read what every open store holds past its cursor; returns (records read, whether
        some camera has more than RECORDS_PER_TURN waiting)."""
        got = 0
        backlog = False
        for cam, store in self.frames.stores.items():
            cursor = self.cursors.get(cam)
            if cursor is None:
                cursor = self.cursors[cam] = StoreCursor(store)
            ended = store.ended  # before reading: what was written before the end is read now
            for _ in range(RECORDS_PER_TURN):
                rec = cursor.take()
                if rec is None:  # caught up with the writer
                    self.ended[cam] = ended
                    break
                self.add(cam, rec)
                got += 1
            else:
                backlog = backlog or cursor.backlog > 0
        self._log_overruns()
        return got, backlog

    def add(self, camera: str, rec: Record) -> None:
        """One record of ``camera``'s store: a frame, a notice or an overrun."""
        self.last_arrival[camera] = time.monotonic()
        n = rec.index
        if n <= self.last_emitted and n not in self.pending:
            self.late[camera] += 1
            now = time.monotonic()
            if self.late[camera] <= 5 or now - self._late_logged > 10:
                self._late_logged = now
                logger.warning("assembler: %s %s for trigger %d came after its set was emitted "
                               "(%d so far)", camera, rec.state, n, self.late[camera])
            return
        p = self.pending.get(n)
        if p is None:
            p = self.pending[n] = _Pending(time.monotonic())
        if rec.state == "overrun":
            p.missing[camera] = self._overrun_reason(camera, n)
            return
        h = rec.header(camera, self.frames.stores[camera].layout)
        if p.t_pi_ns < 0:
            p.t_pi_ns = h.t_pi_ns
        if rec.state == "notice":
            p.missing[camera] = "incomplete" if h.flags & FLAG_INCOMPLETE else "dropped"
        elif h.flags & FLAG_TIMING:
            self.flagged[camera] += 1
            p.missing[camera] = "timing"
        else:
            p.frames[camera] = h

    def _overrun_reason(self, camera: str, n: int) -> str:
        """An index whose slot did not hold it: overwritten by a later lap of the ring
        (``overrun``), or skipped by its writer (``not-written``)."""
        store = self.frames.stores[camera]
        if store.head - n < store.capacity:
            return "not-written"
        first, _ = self._overrun_run.get(camera, (n, n))
        self._overrun_run[camera] = (first, n)
        return "overrun"

    def _log_overruns(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._overrun_run or (not force and now - self._overrun_logged < 1.0):
            return
        self._overrun_logged = now
        for cam, (first, last) in self._overrun_run.items():
            logger.warning("assembler: camera %s trigger indices %d..%d were overwritten in its store "
                           "before the assembler read them (it fell %d slots behind); their sets "
                           "go out without %s", cam, first, last, self.frames.stores[cam].capacity, cam)
        self._overrun_run.clear()

    def emit_due(self, now: float) -> None:
        """Emit every set whose cameras are all accounted for: delivered, known missing, ended,
        or silent for the deadline. A camera that is alive but lagging (a busy host) is waited
        for, up to ``MAX_WAIT_DEADLINES`` deadlines."""
        for n in sorted(self.pending):
            p = self.pending[n]
            settled = all(c in p.frames or c in p.missing or self.ended[c]
                          or now - max(self.last_arrival[c], p.first_arrival) > self.deadline_s
                          for c in self.cameras)
            if settled or now - p.first_arrival > MAX_WAIT_DEADLINES * self.deadline_s:
                self._emit(n, self.pending.pop(n), now)

    def _why_missing(self, camera: str, p: _Pending, now: float) -> str:
        if camera in p.missing:
            return p.missing[camera]
        if self.ended[camera]:
            return "ended"
        if now - max(self.last_arrival[camera], p.first_arrival) > self.deadline_s:
            return "silent"
        return "late"

    def _emit(self, n: int, p: _Pending, now: float) -> None:
        present = [c for c in self.cameras if c in p.frames]
        missing = [c for c in self.cameras if c not in p.frames]
        reasons = [self._why_missing(c, p, now) for c in missing]
        for c, why in zip(missing, reasons, strict=True):
            self.missing[c] += 1
            self.missing_indices[c].append(n)
            self.reasons[c][why] += 1
        if missing:
            self.incomplete += 1
        else:
            self.complete += 1
        frames = [p.frames[c] for c in present]
        truths = {h.truth_index for h in frames} - {-1}
        if truths and truths != {n}:
            self.mixed += 1
            logger.error("assembler: set %d holds frames of pulses %s", n, sorted(truths))
        self.last_emitted = max(self.last_emitted, n)
        head = FrameSetHeader(seq=self.seq, trigger_index=n, t_pi_ns=p.t_pi_ns, cameras=present,
                              missing=missing, frames=frames, reasons=reasons)
        self.pub.sock.send(protocol.encode(head))
        self.seq += 1

    def summary(self) -> dict[str, Any]:
        return {
            "framesets_complete": self.complete,
            "framesets_incomplete": self.incomplete,
            "framesets_mixed": self.mixed,
            "missing": dict(self.missing),
            "missing_indices": {c: list(v) for c, v in self.missing_indices.items()},
            "missing_reasons": {c: dict(v) for c, v in self.reasons.items()},
            "flagged": dict(self.flagged),
            "late": dict(self.late),
            "overruns": {c: self.cursors[c].overruns if c in self.cursors else 0 for c in self.cameras},
            "backlog": {c: cur.backlog for c, cur in self.cursors.items()},
            "pending": len(self.pending),
            **self.frames.stats(),
        }

    def close(self) -> None:
        for part in (self.frames, self.pub, self.status, self.control):
            part.close()


class NewestSet:
    """The newest frame set found in the camera stores themselves, for a latest-wins reader in
    the same process (the pose engine with ``pose.sets: direct``): the newest trigger index
    that every live camera has written, each view's header read from its slot. No process hop
    and no message: what the assembler costs the closed loop (a wake-up, a set message, another
    wake-up) is gone. The assembler still runs for the lossless per-set accounting.

    A camera is live while its store's head moved within ``deadline_s``, or while no camera has
    written past it (so a camera that died or stalls holds the sets of the others back for no
    longer than that, and the last sets of the cameras that wrote on are posed even when they
    stop too); a live camera whose slot no longer holds the index (``overrun``), or that wrote
    a drop notice for it, is missing from the set with that reason."""

    def __init__(self, stores: CameraStores, cameras: list[str], deadline_s: float) -> None:
        self.stores = stores
        self.cameras = cameras
        self.deadline_s = deadline_s
        self._heads: dict[str, int] = {}
        self._moved: dict[str, float] = {}

    def take(self, after: int) -> tuple[FrameSetHeader, list[FrameHeader]] | None:
        """The newest set with a trigger index above ``after``, or None if there is none yet."""
        now = time.monotonic()
        stores = self.stores.stores
        if len(stores) < len(self.cameras):
            self.stores.open_pending()
        for cam in self.cameras:
            store = stores.get(cam)
            if store is None:
                continue
            head = store.head
            if cam not in self._heads:
                self._heads[cam], self._moved[cam] = head, self._written_at(store, head, now)
            elif head != self._heads[cam]:
                self._heads[cam], self._moved[cam] = head, now
        live = self._live(now)
        if not live:
            return None
        n = min(self._heads[c] for c in live) - 1
        if n <= after:
            return None
        frames: list[FrameHeader] = []
        missing: list[str] = []
        reasons: list[str] = []
        t_pi_ns = -1
        for cam in self.cameras:
            store = stores.get(cam)
            why = "silent" if cam not in live else None
            if store is not None and why is None:
                fields = store.header(n)
                if fields is None:
                    why = "overrun"
                else:
                    h = frame_header(cam, store.layout, n, fields)
                    t_pi_ns = h.t_pi_ns if t_pi_ns < 0 else t_pi_ns
                    if h.flags & FLAG_DROPPED:
                        why = "incomplete" if h.flags & FLAG_INCOMPLETE else "dropped"
                    elif h.flags & FLAG_TIMING:
                        why = "timing"
                    else:
                        frames.append(h)
            if why is not None:
                missing.append(cam)
                reasons.append(why if store is not None else "no_store")
        head = FrameSetHeader(seq=n, trigger_index=n, t_pi_ns=t_pi_ns,
                              cameras=[h.camera for h in frames], missing=missing, frames=frames,
                              reasons=reasons)
        return head, frames

    def wait(self, after: int, timeout_s: float) -> tuple[FrameSetHeader, list[FrameHeader]] | None:
        """:meth:`take`, sleeping until a set above ``after`` is there (at most ``timeout_s``):
        on the store of the live camera furthest behind, woken by that camera's own write (a
        futex), or where the host cannot do that, on the cameras' headers."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.take(after)
            left = deadline - time.monotonic()
            if found is not None or left <= 0:
                return found
            behind = self._furthest_behind()
            moved = None if behind is None else behind[0].wait_head(behind[1], min(left, self.deadline_s))
            if moved is None:  # no store to sleep on: the headers wake us
                if self.stores.wait(max(1, round(left * 1e3))):
                    return self.take(after)
                return None

    @staticmethod
    def _written_at(store: FrameStore, head: int, now: float) -> float:
        """When the store's newest frame was written (its host time, this host's monotonic clock),
        for a store seen for the first time: a camera that died before this reader started (a
        restarted pose engine) is not live, so its last index does not hold the sets back."""
        fields = store.header(head - 1) if head > 0 else None
        t_s = fields[FIELDS.index("t_host_ns")] / 1e9 if fields is not None else now
        return t_s if 0 < t_s <= now else now

    def _live(self, now: float) -> list[str]:
        """The cameras whose heads (as :meth:`take` last saw them) moved within the deadline or
        are the furthest ahead."""
        heads = {c: h for c, h in self._heads.items() if c in self.stores.stores and h > 0}
        top = max(heads.values(), default=0)
        return [c for c in self.cameras if c in heads
                and (heads[c] == top or now - self._moved[c] <= self.deadline_s)]

    def _furthest_behind(self) -> tuple[FrameStore, int] | None:
        """The live camera's store with the lowest head (as :meth:`take` last saw it), and that head."""
        stores = self.stores.stores
        if len(stores) < len(self.cameras):
            return None
        live = self._live(time.monotonic())
        if not live:
            return None
        cam = min(live, key=self._heads.__getitem__)
        if stores[cam].end >= 0:  # ended: its head will not move again
            return None
        return stores[cam], self._heads[cam]


def run_assembler(rig: RigConfig, run: str, status_address: str | None = None) -> dict[str, Any]:
    stop = SignalStop().on_signals()
    ctx = zmq.Context()
    try:
        return Assembler(rig, run, ctx, status_address=status_address).run_forever(stop)
    finally:
        ctx.destroy(linger=2000)  # the last frame sets may still be in flight
