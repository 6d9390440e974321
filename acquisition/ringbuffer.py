"""Clips of every camera saved on events, written straight from the camera frame stores.

The cameras' shared-memory frame stores (:mod:`rigstream.framestore`) are the pre-trigger
ring: each holds the last ``rig.store_frames()`` trigger indices of its camera (the longest
clip ``pre_s`` any rule or the rig asks for, plus ``ring_buffer.margin_s``), so this service
keeps no copy of its own and never touches a frame's pixels except to write a clip. It opens
the stores read-only (:class:`~rigstream.frames.CameraStores`, whose header messages only wake
it) and takes events on a PULL socket.

On an Event for trigger index n the clip writer thread writes, for every camera, the frames of
indices [n - pre, n + post], each read by index from the camera's store into one preallocated
buffer per camera: the history at once, the rest as the store reaches it. An event whose
``data["clip"]`` gives ``{"pre_s", "post_s"}`` (a rule's clip action, the monitor's button) gets
a clip of its own with exactly that window (a ``pre_s`` longer than the store's history, or a
``post_s`` over :data:`MAX_POST_S`, is clamped, logged and noted in ``event.json``); other
events use the rig's ``ring_buffer`` window, and those overlapping a clip still being written
extend it (one clip, all its events); the monitor's "save clip now" is such an event. A rule's
clip never takes in another event, so its window stays exactly the rule's. At most
:data:`MAX_MERGING_CLIPS` clips of the rig's window and :data:`MAX_PENDING_CLIPS` clips in all
are pending at once: an event that would open one more is refused (logged, counted in
``clips_refused``), so a flood of requests cannot make the writer fall behind a rule's clip,
which it writes first. An event given by ``t_pi_ns`` gets the index whose pulse time is nearest
in any store; one without index or time gets the newest index stored. An event whose index or
time is negative or does not fit int64, or whose time no stored frame is near, is logged,
counted (``events_malformed``) and ignored.

Nothing is lost silently: an index a clip needs that its store had already overwritten (the
writer fell behind, or the event came too late) is an ``overrun`` row, one that never came (the
stream ended first, or the service was stopped) a ``lost`` row; both are counted in the clip's
``missing_rows``. A clip folder holds a video per camera, ``frames.csv`` (the session table's
rows for those indices, with the index in the clip's video) and ``event.json``. The service
ends when every camera's stream has ended and no clip is pending, or when a stop's wait runs out.
"""

from __future__ import annotations

import collections
import csv
import json
import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import zmq

from rigstream import protocol
from rigstream.acquisition.video import VideoWriter
from rigstream.component import Component
from rigstream.config import RigConfig
from rigstream.frames import FRAME_COLUMNS, CameraStores, frame_row
from rigstream.framestore import FIELDS, FrameStore, StoreLayout, frame_header
from rigstream.protocol import INT64_MAX, Event
from rigstream.transport import ControlListener, SignalStop, StatusReporter, bind_address, received

logger = logging.getLogger(__name__)

WRITE_CHUNK = 8
"""Frames of one camera a clip writer writes before turning to the next camera."""

MAX_POST_S = 60.0
"""The longest ``post_s`` an event's own clip window may ask for (longer ones are clamped)."""

MAX_MERGING_CLIPS = 2
"""Clips of the rig's window (events without a window of their own: the monitor's button, the
session's schedule) pending at once, at most. Such an event overlapping none of them is refused
rather than opening another: a flood of requests then costs the writer this many clips."""

MAX_PENDING_CLIPS = 16
"""Clips pending at once, at most, whatever their window. The writer takes them in turn, so each
one more delays all others until their history is overwritten: past this, an event is refused
(and counted) instead of making every pending clip lose rows."""

CLIPS_LISTED = 50
"""Saved clip paths the status lists (the newest; ``clips_saved`` counts them all), so a status
message stays small however long the session runs."""

_T_PI = FIELDS.index("t_pi_ns")

MISSING_REASONS = ("overrun", "after_end", "writer_gone", "no_store", "stopped")
"""Why a clip row has no frame: its store had overwritten the index before the clip writer read
it; the camera's stream ended before it; the camera node died before it; the camera's store
never opened; the service stopped before it came."""


@dataclass
class Clip:
    number: int
    start: int
    end: int
    folder: Path
    events: list[Event] = field(default_factory=list)
    next_index: dict[str, int] = field(default_factory=dict)
    writers: dict[str, VideoWriter] = field(default_factory=dict)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    missing: int = 0
    missing_by: dict[str, dict[str, int]] = field(default_factory=dict)
    """Missing rows per reason (:data:`MISSING_REASONS`) per camera."""
    pre: int = 0
    post: int = 0
    exact: bool = False
    """The event asked for its own window: the clip is not merged with others."""
    clamped: dict[str, Any] = field(default_factory=dict)
    """The asked window where it was clamped (``pre_s``/``post_s``: asked and used)."""


class ClipService(Component):
    """Reads the camera stores, takes events (PULL) and writes clips in a writer thread."""

    name = "clip service"

    def __init__(self, rig: RigConfig, run: str, out: str | Path, ctx: zmq.Context | None = None,
                 status_address: str | None = None) -> None:
        self.rig = rig
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        ctx = ctx or zmq.Context.instance()
        self.pre = rig.frames_per(rig.ring_buffer.pre_s)
        self.post = rig.frames_per(rig.ring_buffer.post_s)
        self.capacity = rig.store_frames()
        """Slots of each camera's store (its stores are made with this many)."""
        self.cameras = [c.name for c in rig.cameras]
        self._layouts = {c.name: StoreLayout(self.capacity, c.height, c.width, c.channels)
                         for c in rig.cameras}
        """What each camera's store holds (the rig's word, for rows of a store never opened)."""
        self.stores = CameraStores(rig, run, ctx, "clip service")
        self._buffers: dict[str, np.ndarray] = {}
        """One frame buffer per camera, made when its store is first read."""
        self.events_sock = ctx.socket(zmq.PULL)
        self.events_sock.setsockopt(zmq.LINGER, 0)
        self.events_sock.bind(bind_address(rig.address("events", run)))
        self.events_malformed = protocol.MalformedCounter("clip service events")
        self.windows_clamped = 0
        self.status = StatusReporter(ctx, status_address, "ringbuffer")
        self.control = ControlListener(ctx, status_address and rig.address("control", run),
                                       "clip service")
        self.clips: list[Clip] = []
        self.saved: collections.deque[str] = collections.deque(maxlen=CLIPS_LISTED)
        """The newest saved clip folders."""
        self.clips_saved = 0
        self.refused: collections.Counter[str] = collections.Counter()
        """Events refused a clip, by reason (``merging-limit``, ``pending-limit``)."""
        self._clips_opened = 0
        """Clips numbered so far (a finishing clip is in neither ``clips`` nor ``saved``)."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="clip-writer", daemon=True)
        self._writer_error: str | None = None
        self._stopping = False
        self._final: dict[str, Any] | None = None
        """The summary as of ``close()``."""
        self._events_file = open(self.out / "events.csv", "w", newline="")  # noqa: SIM115
        self._events_csv = csv.writer(self._events_file)
        self._events_csv.writerow(("name", "source", "trigger_index", "t_pi_ns", "t_host_ns",
                                   "clip"))

    # -- the loop (rigstream.component): wake-ups and events in ----------------------------------

    def start(self) -> None:
        self._writer.start()
        self._poller = zmq.Poller()
        self._poller.register(self.stores.sock, zmq.POLLIN)
        self._poller.register(self.events_sock, zmq.POLLIN)

    def turn(self) -> bool:
        if self._writer_error is not None:
            raise RuntimeError(f"clip writer failed: {self._writer_error}")
        ready = dict(self._poller.poll(50))
        if self.events_sock in ready:
            self._take_events()
        if self.stores.wait(0):
            self._wake.set()
            return True
        return False

    def gave_up(self) -> None:
        logger.warning("clip service: stopped without the end of every stream (ended: %s)",
                       sorted(c for c, s in self.stores.stores.items() if s.ended))

    def finish(self) -> dict[str, Any]:
        self._take_events()
        return self.close()

    def finished(self) -> bool:
        """Every camera's stream has ended and no clip is pending."""
        if not self.stores.all_open or not all(s.ended for s in self.stores.stores.values()):
            return False
        with self._lock:
            return not self.clips

    def _take_events(self) -> None:
        for event in received(self.events_sock, Event, self.events_malformed):
            self.add_event(event)

    def add_event(self, event: Event) -> Clip | None:
        """Open a clip for the event, or extend the clip its window overlaps; None for an event
        whose index cannot be known (logged, counted in ``events_malformed``) or that would open
        a clip past :data:`MAX_MERGING_CLIPS` or :data:`MAX_PENDING_CLIPS` (logged, counted in
        ``clips_refused``)."""
        n = self._resolve_index(event)
        if n is None:
            return None
        event.trigger_index = n
        clamped: dict[str, Any] = {}
        window = self._window(event, clamped)
        pre, post = window or (self.pre, self.post)
        start, end = max(0, n - pre), n + post
        with self._lock:
            for clip in [] if window else self.clips:
                if clip.exact:
                    continue
                if start <= clip.end + 1 and end >= clip.start - 1:
                    written = any(v != clip.start for v in clip.next_index.values())
                    if not written:  # the start may still move back
                        clip.start = min(clip.start, start)
                    clip.end = max(clip.end, end)
                    clip.events.append(event)
                    self._log_event(event, clip)
                    logger.info("event %s at trigger %d merged into clip %d [%d, %d]",
                                event.name, n, clip.number, clip.start, clip.end)
                    self._wake.set()
                    return clip
            if len(self.clips) >= MAX_PENDING_CLIPS:
                self._refuse(event, n, "pending-limit", f"{len(self.clips)} clips pending")
                return None
            merging = sum(not c.exact for c in self.clips)
            if not window and merging >= MAX_MERGING_CLIPS:
                self._refuse(event, n, "merging-limit",
                             f"{merging} clips of the rig's window pending, none overlapping it")
                return None
            self._clips_opened += 1
            number = self._clips_opened
            folder = self.out / "clips" / f"clip_{number:03d}_n{n}"
            clip = Clip(number, start, end, folder, [event], pre=pre, post=post,
                        exact=window is not None, clamped=clamped)
            self.clips.append(clip)
            self._log_event(event, clip)
        logger.info("event %s at trigger %d: clip %d of [%d, %d]", event.name, n, number,
                    start, end)
        self._wake.set()
        return clip

    def _refuse(self, event: Event, n: int, reason: str, detail: str) -> None:
        """Count (and log the first few and every 100th of) an event refused a clip."""
        self.refused[reason] += 1
        count = self.refused[reason]
        if count <= 5 or count % 100 == 0:
            logger.warning("event %s at trigger %d refused a clip (%s #%d): %s", event.name, n,
                           reason, count, detail)

    def _reject(self, event: Event, reason: str, detail: str) -> None:
        self.events_malformed(protocol.ProtocolError(reason, f"event {event.name!r}: {detail}"))

    def _window(self, event: Event, clamped: dict[str, Any]) -> tuple[int, int] | None:
        """``data["clip"]``'s window in frames, or None (the rig's window, merging allowed).
        A window longer than the store holds (or ``post_s`` > :data:`MAX_POST_S`) is clamped
        and what was asked goes into ``clamped``."""
        clip = event.data.get("clip") if isinstance(event.data, dict) else None
        if clip is None:
            return None
        try:
            pre_s, post_s = float(clip["pre_s"]), float(clip["post_s"])
        except (TypeError, KeyError, ValueError, OverflowError):
            self._reject(event, "invalid", f"data.clip must be {{pre_s, post_s}}, got {clip!r}")
            return None
        if not (pre_s >= 0 and post_s >= 0):  # NaN fails too
            self._reject(event, "invalid", f"data.clip pre_s/post_s must be >= 0, got {clip!r}")
            return None
        history = self._capacity() - 1
        history_s = history / self.rig.trigger.rate_hz
        if pre_s > history_s:
            clamped["pre_s"] = {"asked": _json_float(pre_s), "used": history_s}
            logger.warning("event %s asks for pre_s=%g s of history; the stores hold %.3f s "
                           "(%d frames): clamped", event.name, pre_s, history_s, history)
            pre_s = history_s
        if post_s > MAX_POST_S:
            clamped["post_s"] = {"asked": _json_float(post_s), "used": MAX_POST_S}
            logger.warning("event %s asks for post_s=%g s; clips take at most %g s after the "
                           "event: clamped", event.name, post_s, MAX_POST_S)
            post_s = MAX_POST_S
        if clamped:
            self.windows_clamped += 1
        return min(self.rig.frames_per(pre_s), history), self.rig.frames_per(post_s)

    def _capacity(self) -> int:
        """History the stores hold, in trigger indices (the smallest open store's)."""
        return min((s.capacity for s in self.stores.stores.values()), default=self.capacity)

    def _resolve_index(self, event: Event) -> int | None:
        for name in ("trigger_index", "t_pi_ns"):
            value = getattr(event, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or not 0 <= value <= INT64_MAX):
                self._reject(event, "out-of-range",
                             f"{name} must be an integer in [0, 2**63), got {value!r}")
                return None
        if event.trigger_index is not None:
            return event.trigger_index
        stores = list(self.stores.stores.values())
        latest = max((s.head for s in stores), default=0) - 1
        if event.t_pi_ns is None:
            return max(latest, 0)
        best, best_dt = None, 0
        for store in stores:
            i = store.latest_time_index(event.t_pi_ns)
            fields = None if i is None else store.header(i)
            if i is None or fields is None:  # nothing held, or overwritten meanwhile
                continue
            dt = abs(int(fields[_T_PI]) - event.t_pi_ns)
            if best is None or dt < best_dt:
                best, best_dt = i, dt
        if best is None:
            logger.warning("event %s at t_pi_ns %d: no stored frame has a pulse time yet; "
                           "using the newest index, %d", event.name, event.t_pi_ns, max(latest, 0))
            return max(latest, 0)
        span_ns = self._capacity() * self.rig.trigger.period_ns
        if best_dt > span_ns:
            self._reject(event, "out-of-range",
                         f"t_pi_ns {event.t_pi_ns} is {best_dt / 1e9:.3f} s from the nearest "
                         f"stored frame (index {best}); the stores hold {span_ns / 1e9:.3f} s")
            return None
        return best

    def _log_event(self, event: Event, clip: Clip) -> None:
        self._events_csv.writerow((event.name, event.source, event.trigger_index, event.t_pi_ns,
                                   event.t_host_ns, clip.folder.name))
        self._events_file.flush()

    # -- writer thread -------------------------------------------------------------------------

    def _write_loop(self) -> None:
        try:
            while True:
                self._wake.wait(0.1)
                self._wake.clear()
                with self._lock:  # clips of their own window (a rule's) first: requests never delay them
                    active = sorted(self.clips, key=lambda c: not c.exact)
                for clip in active:
                    if not self._advance(clip):
                        continue
                    with self._lock:  # an event may have extended the clip meanwhile
                        done = all(n > clip.end for n in clip.next_index.values())
                        if done:
                            self.clips.remove(clip)
                    if done:
                        self._finish(clip)
                if self._stopping:
                    with self._lock:
                        if not self.clips:
                            return
        except Exception as exc:
            self._writer_error = f"{type(exc).__name__}: {exc}"
            logger.exception("clip writer failed")

    def _advance(self, clip: Clip) -> bool:
        """Write what the stores hold of the clip, the cameras in turn a few frames at a time
        (oldest first, so a slow encoder does not let one camera's history be overwritten while
        another's is written); True when every camera reached the clip's end."""
        progressed = True
        while progressed:
            progressed = False
            for cam in self.cameras:
                before = clip.next_index.get(cam, clip.start)
                progressed |= self._advance_camera(clip, cam, WRITE_CHUNK) != before
        return all(clip.next_index[cam] > clip.end for cam in self.cameras)

    def _advance_camera(self, clip: Clip, cam: str, limit: int) -> int:
        """Write up to ``limit`` of ``cam``'s next indices of the clip; returns its next index."""
        n = clip.next_index.setdefault(cam, clip.start)
        stop = min(clip.end + 1, n + limit)
        store = self.stores.stores.get(cam)
        while n < stop:
            if store is None:
                if not self._stopping:
                    break  # its camera node has not made it yet
                self._missing(clip, cam, n, None, "no_store")
                n += 1
                continue
            rec = store.read(n, out=self._buffer(cam, store))
            if rec is None:  # not written yet: wait, unless it never will be
                reason = self._never_written(store, n)
                if reason is None:
                    break
                self._missing(clip, cam, n, store, reason)
            elif rec.state == "overrun":
                if clip.missing_by.get(cam, {}).get("overrun", 0) == 0:
                    behind = store.head - 1 - n
                    logger.warning("clip %d: %s index %d was overwritten before it was written "
                                   "(%d indices behind the newest; the store holds %d)",
                                   clip.number, cam, n, behind, store.capacity)
                self._missing(clip, cam, n, store, "overrun")
            else:
                h = frame_header(cam, store.layout, n, rec.fields)
                video_frame = -1
                if rec.state == "frame":
                    assert rec.pixels is not None
                    video_frame = self._video(clip, cam).write(rec.pixels)
                clip.rows.append(frame_row(h, video_frame))
            n += 1
        clip.next_index[cam] = n
        return n

    def _never_written(self, store: FrameStore, n: int) -> str | None:
        """Why index ``n`` (not in the store yet) will never be, or None if it still may."""
        end = store.end
        if end >= 0:
            return "after_end" if n >= end else None
        if not store.writer_alive():
            return "writer_gone" if n >= store.head else None
        return "stopped" if self._stopping else None

    def _missing(self, clip: Clip, cam: str, n: int, store: FrameStore | None, reason: str) -> None:
        """A row for index ``n`` whose frame the clip cannot have."""
        h = frame_header(cam, store.layout if store is not None else self._layouts[cam], n, None)
        if reason == "overrun":
            clip.rows.append(frame_row(h, -1, overrun=True))
        else:
            clip.rows.append(frame_row(h, -1, lost=True))
        clip.missing += 1
        by = clip.missing_by.setdefault(cam, {})
        by[reason] = by.get(reason, 0) + 1

    def _buffer(self, cam: str, store: FrameStore) -> np.ndarray:
        buf = self._buffers.get(cam)
        if buf is None:
            buf = self._buffers[cam] = np.empty(store.layout.frame_shape, store.layout.dtype)
        return buf

    def _video(self, clip: Clip, cam: str) -> VideoWriter:
        writer = clip.writers.get(cam)
        if writer is None:
            cfg = self.rig.camera(cam)
            writer = clip.writers[cam] = VideoWriter(
                clip.folder / f"{cam}.mkv", cfg.width, cfg.height, cfg.channels,
                self.rig.recording.codec, self.rig.trigger.rate_hz, self.rig.recording.crf)
        return writer

    def _finish(self, clip: Clip) -> None:
        clip.folder.mkdir(parents=True, exist_ok=True)
        for writer in clip.writers.values():
            writer.close()
        clip.rows.sort(key=lambda r: (r[0], r[2]))
        with open(clip.folder / "frames.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(FRAME_COLUMNS)
            w.writerows(clip.rows)
        info = {"clip": clip.number, "start_index": clip.start, "end_index": clip.end,
                "pre_frames": clip.pre, "post_frames": clip.post, "missing_rows": clip.missing,
                "missing_by_camera": clip.missing_by, "window_clamped": clip.clamped,
                "events": [msgspec.to_builtins(e) for e in clip.events],
                "videos": {c: w.path.name for c, w in clip.writers.items()}}
        (clip.folder / "event.json").write_text(json.dumps(info, indent=2))
        self.saved.append(str(clip.folder))
        self.clips_saved += 1
        if clip.missing:
            logger.warning("clip %d saved with %d missing row(s) %s: %s", clip.number,
                           clip.missing, clip.missing_by, clip.folder)
        logger.info("clip %d saved: %s [%d, %d]", clip.number, clip.folder, clip.start, clip.end)

    # -- end -----------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        stores = dict(self.stores.stores)
        fill = {c: round(min(1.0, s.head / s.capacity), 3) if (s := stores.get(c)) else 0.0
                for c in self.cameras}
        return {
            "clips": list(self.saved),
            "clips_saved": self.clips_saved,
            "clips_pending": len(self.clips),
            "clips_refused": dict(self.refused),
            "ring_fill": fill,
            "ring_capacity_frames": self._capacity(),
            "events_malformed": self.events_malformed.as_dict(),
            "clip_windows_clamped": self.windows_clamped,
            **self.stores.stats(),
        }

    def close(self) -> dict[str, Any]:
        """Finish the pending clips (what has not come by now is missing), then let go of the
        stores and sockets; idempotent, returns the summary as of the close."""
        if self._final is None:
            self._stopping = True
            self._wake.set()
            if self._writer.is_alive():
                self._writer.join(timeout=60)
            self._events_file.close()
            self.control.close()
            self.events_sock.close()
            self._final = self.summary()
            if self._writer.is_alive():  # it may still read the stores: leave them mapped
                logger.error("clip writer still busy after 60 s; %d clip(s) unfinished",
                             len(self.clips))
            else:
                self.stores.close()
        return self._final


def _json_float(x: float) -> float | str:
    """``x`` as JSON can hold it (``inf`` as a string)."""
    return x if math.isfinite(x) else str(x)


def send_event(ctx: zmq.Context, address: str, event: Event) -> None:
    """Push one event to the clip service (queued until it connects; waits up to 2 s)."""
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(address)
    sock.send(protocol.encode(event))
    sock.close()


def run_ringbuffer(rig: RigConfig, run: str, out: str | Path,
                   status_address: str | None = None) -> dict[str, Any]:
    stop = SignalStop().on_signals()
    return ClipService(rig, run, out, status_address=status_address).run_forever(stop)
