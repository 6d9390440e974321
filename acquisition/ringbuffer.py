"""Ring buffer of the last seconds of every camera, and clips saved from it on events.

Each camera gets one preallocated block of ``frames_per(pre_s + margin_s)`` images plus a
table of their headers; a frame is copied into slot ``trigger_index % capacity`` and nothing
is allocated per frame. On an Event for trigger index n the clip service writes, for every
camera, the frames of indices [n - pre, n + post]: the history at once, the rest as it
arrives. An event whose ``data["clip"]`` gives ``{"pre_s", "post_s"}`` (a rule's clip action,
the monitor's button) gets a clip of its own with exactly that window; other events use the
rig's ``ring_buffer`` window, and those overlapping a clip still being written extend it (one
clip, all its events). The ring holds the longest history any rule's clip asks for. A clip
folder holds a video per camera, ``frames.csv`` (the session table's rows for those indices,
with the index in the clip's video) and ``event.json``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import queue
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import zmq

from rigstream import protocol
from rigstream.acquisition.recorder import FRAME_COLUMNS, frame_row
from rigstream.acquisition.video import VideoWriter
from rigstream.config import RigConfig
from rigstream.frames import FrameReceiver, StopWait
from rigstream.protocol import FLAG_DROPPED, FLAG_EOS, Event, FrameHeader
from rigstream.transport import ControlListener, StatusReporter, bind_address, received

logger = logging.getLogger(__name__)

WRITE_CHUNK = 8
"""Frames of one camera a clip writer writes before turning to the next camera."""

META = np.dtype([("trigger_index", np.int64), ("frame_id", np.int64), ("t_camera_ns", np.int64),
                 ("t_pi_ns", np.int64), ("t_host_ns", np.int64), ("flags", np.int64)])


class FrameRing:
    """The last ``capacity`` trigger indices of one camera: pixels and headers, preallocated."""

    def __init__(self, capacity: int, shape: tuple[int, ...]) -> None:
        self.capacity = capacity
        self.pixels = np.zeros((capacity, *shape), np.uint8)
        self.meta = np.zeros(capacity, META)
        self.meta["trigger_index"] = -1
        self.latest = -1
        """Highest trigger index stored (a frame or a drop notice)."""

    def put(self, h: FrameHeader, pixels: np.ndarray | None) -> None:
        slot = h.trigger_index % self.capacity
        m = self.meta[slot]
        m["trigger_index"] = -1  # invalid while being overwritten
        if pixels is not None:
            self.pixels[slot] = pixels
        m["frame_id"], m["t_camera_ns"], m["t_pi_ns"] = h.frame_id, h.t_camera_ns, h.t_pi_ns
        m["t_host_ns"], m["flags"] = h.t_host_ns, h.flags
        m["trigger_index"] = h.trigger_index
        self.latest = max(self.latest, h.trigger_index)

    def holds(self, n: int) -> bool:
        return n >= 0 and int(self.meta["trigger_index"][n % self.capacity]) == n

    @property
    def fill(self) -> float:
        """Share of the ring holding frames (1.0 once it has wrapped)."""
        return min(1.0, (self.latest + 1) / self.capacity)


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
    pre: int = 0
    post: int = 0
    exact: bool = False
    """The event asked for its own window: the clip is not merged with others."""


class ClipService:
    """Holds the ring buffers, takes events (PULL) and writes clips in a writer thread."""

    def __init__(self, rig: RigConfig, run: str, out: str | Path, ctx: zmq.Context | None = None,
                 status_address: str | None = None) -> None:
        self.rig = rig
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        ctx = ctx or zmq.Context.instance()
        self.pre = rig.frames_per(rig.ring_buffer.pre_s)
        self.post = rig.frames_per(rig.ring_buffer.post_s)
        max_pre_s, _ = rig.clip_window_max_s()
        capacity = max(rig.frames_per(max_pre_s + rig.ring_buffer.margin_s), 2)
        self.rings: dict[str, FrameRing] = {}
        for cam in rig.cameras:
            shape = (cam.height, cam.width) + ((3,) if cam.channels == 3 else ())
            self.rings[cam.name] = FrameRing(capacity, shape)
        self.frames = FrameReceiver(rig, run, ctx, "ring buffer")
        self.events_sock = ctx.socket(zmq.PULL)
        self.events_sock.setsockopt(zmq.LINGER, 0)
        self.events_sock.bind(bind_address(rig.address("events", run)))
        self.events_malformed = protocol.MalformedCounter("ring buffer events")
        self.status = StatusReporter(ctx, status_address, "ringbuffer")
        self.control = ControlListener(ctx, status_address and rig.address("control", run),
                                       "ring buffer")
        self.clips: list[Clip] = []
        self.saved: list[str] = []
        self._clips_opened = 0
        """Clips numbered so far (a finishing clip is in neither ``clips`` nor ``saved``)."""
        self._lock = threading.Lock()
        self._wake: queue.Queue[bool] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="clip-writer", daemon=True)
        self._stopping = False
        self._events_file = open(self.out / "events.csv", "w", newline="")  # noqa: SIM115
        self._events_csv = csv.writer(self._events_file)
        self._events_csv.writerow(("name", "source", "trigger_index", "t_pi_ns", "t_host_ns",
                                   "clip"))

    # -- main loop: frames and events in -----------------------------------------------------

    def run_forever(self, stop: threading.Event | None = None) -> dict[str, Any]:
        waiting = StopWait(self.control, stop or threading.Event())
        self._writer.start()
        self.status.report("ready", **self.summary())
        poller = zmq.Poller()
        poller.register(self.frames.sock, zmq.POLLIN)
        poller.register(self.events_sock, zmq.POLLIN)
        try:
            while not self.frames.all_ended:
                waiting.poll()
                if waiting.expired:
                    break
                ready = dict(poller.poll(20))
                if self.events_sock in ready:
                    self._take_events()
                while (got := self.frames.recv(timeout_ms=0)) is not None:
                    if not got.header.flags & FLAG_EOS:
                        self.rings[got.header.camera].put(got.header, got.pixels)
                    self._wake.put(True)
                    waiting.progressed()  # still catching up: keep waiting
                self.status.heartbeat(self.summary)
            self._take_events()
            summary = self.close()
            self.status.report("done", **summary)
            return summary
        except Exception as exc:
            logger.exception("ring buffer failed")
            self.status.report("error", error=f"{type(exc).__name__}: {exc}")
            self.close()
            raise
        finally:
            self.status.close()

    def _take_events(self) -> None:
        for event in received(self.events_sock, Event, self.events_malformed):
            self.add_event(event)

    def add_event(self, event: Event) -> Clip:
        """Open a clip for the event, or extend the clip its window overlaps."""
        n = self._resolve_index(event)
        event.trigger_index = n
        window = self._window(event)
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
                    self._wake.put(True)
                    return clip
            self._clips_opened += 1
            number = self._clips_opened
            folder = self.out / "clips" / f"clip_{number:03d}_n{n}"
            clip = Clip(number, start, end, folder, [event], pre=pre, post=post,
                        exact=window is not None)
            self.clips.append(clip)
        self._log_event(event, clip)
        logger.info("event %s at trigger %d: clip %d of [%d, %d]", event.name, n, number,
                    start, end)
        self._wake.put(True)
        return clip

    def _window(self, event: Event) -> tuple[int, int] | None:
        """``data["clip"]``'s window in frames, or None (the rig's window, merging allowed)."""
        clip = event.data.get("clip") if isinstance(event.data, dict) else None
        if clip is None:
            return None
        try:
            pre_s, post_s = float(clip["pre_s"]), float(clip["post_s"])
        except (TypeError, KeyError, ValueError):
            self.events_malformed(protocol.ProtocolError(
                "invalid", f"event {event.name!r}: data.clip must be {{pre_s, post_s}}, got {clip!r}"))
            return None
        if not (pre_s >= 0 and post_s >= 0):  # NaN fails too
            self.events_malformed(protocol.ProtocolError(
                "invalid", f"event {event.name!r}: data.clip pre_s/post_s must be >= 0, got {clip!r}"))
            return None
        pre = self.rig.frames_per(pre_s)
        capacity = next(iter(self.rings.values())).capacity
        if pre >= capacity:
            logger.warning("event %s asks for %d frames of history; the ring holds %d (the clip "
                           "starts where the ring does)", event.name, pre, capacity - 1)
        return pre, self.rig.frames_per(post_s)

    def _resolve_index(self, event: Event) -> int:
        if event.trigger_index is not None:
            return event.trigger_index
        latest = max(r.latest for r in self.rings.values())
        if event.t_pi_ns is None:
            return max(latest, 0)
        # The index whose pulse time is nearest the event's time, from any camera's ring.
        best, best_dt = max(latest, 0), None
        for ring in self.rings.values():
            valid = ring.meta["trigger_index"] >= 0
            if not valid.any():
                continue
            dt = np.abs(ring.meta["t_pi_ns"][valid] - event.t_pi_ns)
            i = int(np.argmin(dt))
            if best_dt is None or dt[i] < best_dt:
                best, best_dt = int(ring.meta["trigger_index"][valid][i]), dt[i]
        return best

    def _log_event(self, event: Event, clip: Clip) -> None:
        self._events_csv.writerow((event.name, event.source, event.trigger_index, event.t_pi_ns,
                                   event.t_host_ns, clip.folder.name))
        self._events_file.flush()

    # -- writer thread -------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with contextlib.suppress(queue.Empty):
                self._wake.get(timeout=0.1)
            with self._lock:
                active = list(self.clips)
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

    def _advance(self, clip: Clip) -> bool:
        """Write what the rings hold of the clip, the cameras in turn a few frames at a time
        (oldest first, so a slow encoder does not let one camera's history be overwritten while
        another's is written); True when every camera reached the clip's end."""
        progressed = True
        while progressed:
            progressed = False
            for cam, ring in self.rings.items():
                before = clip.next_index.get(cam, clip.start)
                progressed |= self._advance_camera(clip, cam, ring, WRITE_CHUNK) != before
        return all(clip.next_index[cam] > clip.end for cam in self.rings)

    def _advance_camera(self, clip: Clip, cam: str, ring: FrameRing, limit: int) -> int:
        """Write up to ``limit`` of ``cam``'s next frames of the clip; returns its next index."""
        n = clip.next_index.setdefault(cam, clip.start)
        cfg = self.rig.camera(cam)
        stop = min(clip.end + 1, n + limit)
        while n < stop:
            if ring.holds(n):
                slot = n % ring.capacity
                meta = ring.meta[slot].copy()
                h = FrameHeader(camera=cam, seq=-1, frame_id=int(meta["frame_id"]),
                                trigger_index=n, t_camera_ns=int(meta["t_camera_ns"]),
                                t_host_ns=int(meta["t_host_ns"]),
                                t_pi_ns=int(meta["t_pi_ns"]), width=cfg.width,
                                height=cfg.height, flags=int(meta["flags"]))
                video_frame = -1
                if not h.flags & FLAG_DROPPED:
                    writer = clip.writers.get(cam)
                    if writer is None:
                        writer = clip.writers[cam] = VideoWriter(
                            clip.folder / f"{cam}.mkv", cfg.width, cfg.height, cfg.channels,
                            self.rig.recording.codec, self.rig.trigger.rate_hz,
                            self.rig.recording.crf)
                    pixels = ring.pixels[slot].copy()
                    if not ring.holds(n):  # overwritten while copying
                        break
                    video_frame = writer.write(pixels)
                clip.rows.append(frame_row(h, video_frame))
            elif ring.latest > n or (self._stopping and ring.latest >= 0):
                # Never arrived, or already overwritten: say so in the clip's table.
                lost = FrameHeader(camera=cam, seq=-1, frame_id=-1, trigger_index=n,
                                   t_camera_ns=-1, t_host_ns=-1, width=cfg.width,
                                   height=cfg.height, flags=FLAG_DROPPED)
                clip.rows.append(frame_row(lost, -1, lost=True))
                clip.missing += 1
            else:
                break  # not yet acquired
            n += 1
        clip.next_index[cam] = n
        return n

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
                "events": [msgspec.to_builtins(e) for e in clip.events],
                "videos": {c: w.path.name for c, w in clip.writers.items()}}
        (clip.folder / "event.json").write_text(json.dumps(info, indent=2))
        self.saved.append(str(clip.folder))
        logger.info("clip %d saved: %s [%d, %d]", clip.number, clip.folder, clip.start, clip.end)

    # -- end -----------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        return {
            "clips": list(self.saved),
            "clips_pending": len(self.clips),
            "ring_fill": {c: round(r.fill, 3) for c, r in self.rings.items()},
            "ring_capacity_frames": next(iter(self.rings.values())).capacity,
            "events_malformed": self.events_malformed.as_dict(),
            **self.frames.stats(),
        }

    def close(self) -> dict[str, Any]:
        if not self._stopping:
            self._stopping = True
            self._wake.put(True)
            if self._writer.is_alive():
                self._writer.join(timeout=60)
            self._events_file.close()
            for part in (self.frames, self.control):
                part.close()
            self.events_sock.close()
        return self.summary()


def send_event(ctx: zmq.Context, address: str, event: Event) -> None:
    """Push one event to the clip service (queued until it connects; waits up to 2 s)."""
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(address)
    sock.send(protocol.encode(event))
    sock.close()


def run_ringbuffer(rig: RigConfig, run: str, out: str | Path,
                   status_address: str | None = None) -> dict[str, Any]:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return ClipService(rig, run, out, status_address=status_address).run_forever(stop)
