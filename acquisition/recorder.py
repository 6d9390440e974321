"""The recorder: every trigger index of every camera into the session's tables, and every frame
into a video per camera (unless ``recording.video`` is off).

Session folder::

    frames.csv      one row per (camera, trigger_index): frame_id, the three clocks, the frame's
                    index in its video (-1 if none) and why a row has no frame (dropped by the
                    camera, incomplete, lost in transport, overrun)
    pulses.csv      every pulse of the camera trigger and the sync line (index, t_pi_ns, line)
    video/<camera>.mkv   (not with ``recording.video: off``: frames.csv and pulses.csv only)
    recording.json  written at the end: frames, drops and overruns per camera, codec, files

Frames come from each camera's shared-memory frame store (:class:`~rigstream.frames.CameraStores`).
One thread per camera reads its store in order through its own
:class:`~rigstream.framestore.StoreCursor`, copies each frame into one preallocated buffer,
encodes it and appends its row; the rows of all cameras go to one csv writer under a lock. The
main thread wakes on the camera nodes' header messages, drains the pulses, flushes, reports and
handles the stop.

The recorder never makes a camera wait: a camera thread that falls more than its store behind
gets ``overrun`` records for the indices overwritten before it read them and writes them as
rows (dropped, ``overrun`` = 1, no times), with their exact indices in the summary. A camera is
finished when its stream ended and every index was read, or when its writer died and every
index it wrote was read; pulses no record ever came for (a camera node that died) get rows
marked ``lost_in_transport`` at the end.

The tables are flushed every ``recording.flush_interval_s`` and the videos are Matroska, so a
session killed mid-way leaves everything up to the last flush readable.
"""

from __future__ import annotations

import csv
import json
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from rigstream import protocol
from rigstream.acquisition.video import LOSSLESS, VideoWriter
from rigstream.component import Component
from rigstream.config import RigConfig
from rigstream.frames import FRAME_COLUMNS, CameraStores, no_frame_row
from rigstream.framestore import FrameStore, Record, StoreCursor
from rigstream.protocol import FLAG_INCOMPLETE, FLAG_TIMING
from rigstream.transport import ControlListener, SignalStop, StatusReporter, received, subscriber

logger = logging.getLogger(__name__)

WAIT_MS = 20
"""How long the main thread blocks for header messages per turn."""
IDLE_WAIT_S = 0.05
"""How long a camera thread with nothing to read waits for a wake-up before it looks again
(headers are only a wake-up: a lost one must not stall it, and a dead writer sends none)."""
JOIN_TIMEOUT_S = 10.0
RECENT = 1000
"""Indices kept per camera for the summary (dropped, overrun): the last this many."""
OVERRUN_LOG_FIRST = 5
"""Overrun ranges of a camera logged one by one; after them, one summary line per interval."""
OVERRUN_LOG_EVERY_S = 5.0


class _Rows:
    """frames.csv, written by every camera thread under one lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self._file = open(path, "w", newline="")  # noqa: SIM115 (closed in close())
        self._csv = csv.writer(self._file)
        self._csv.writerow(FRAME_COLUMNS)
        self.closed = False

    def write(self, row: tuple[Any, ...]) -> None:
        with self.lock:
            if self.closed:
                raise ValueError(f"{self.path}: row for trigger index {row[2]} of camera {row[0]} "
                                 f"after the table was closed")
            self._csv.writerow(row)

    def write_many(self, rows: list[tuple[Any, ...]]) -> None:
        with self.lock:
            self._csv.writerows(rows)

    def flush(self) -> None:
        with self.lock:
            if not self.closed:
                self._file.flush()

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self._file.close()


class _CameraTrack:
    """One camera: its cursor, its pixel buffer and its video, read and written by its own thread
    (started once the camera's store is open)."""

    def __init__(self, camera: str, rig: RigConfig, rows: _Rows, video: Path | None) -> None:
        cfg = rig.camera(camera)
        self.camera = camera
        self.rows = rows
        self.writer: VideoWriter | None = None
        if video is not None:
            self.writer = VideoWriter(video, cfg.width, cfg.height, cfg.channels,
                                      rig.recording.codec, rig.trigger.rate_hz, rig.recording.crf)
        self.cursor: StoreCursor | None = None
        self.buf: np.ndarray | None = None
        """(height, width[, channels]) pixels of the frame being encoded; one per camera."""
        self.frames = 0
        """Frame records read (with pixels), whether or not a video is written."""
        self.dropped = 0
        """Drop notices of the camera (incomplete images included)."""
        self.overruns = 0
        self.lost = 0
        self.taken = 0
        """Records read, of every state (the main thread's measure of progress)."""
        self.next_row = 0
        """The trigger index after the last row this camera's thread wrote."""
        self.error: str | None = None
        """Why the video stopped (the tables go on)."""
        self.failure: str | None = None
        """Why the thread stopped (the recording cannot go on for this camera)."""
        self.finished = False
        self.wake = threading.Event()
        self.quit = threading.Event()
        self.thread: threading.Thread | None = None
        self._recent_lock = threading.Lock()
        self._dropped_recent: deque[int] = deque(maxlen=RECENT)
        self._overrun_recent: deque[int] = deque(maxlen=RECENT)
        self._range = (-1, -1)
        self.overrun_ranges = 0
        self._quiet = [0, 0]  # overrun ranges and indices not logged yet
        self._last_log = 0.0

    def start(self, store: FrameStore, copy_pixels: bool) -> None:
        self.cursor = StoreCursor(store)
        if copy_pixels:
            self.buf = np.empty(store.layout.frame_shape, store.layout.dtype)
        self.thread = threading.Thread(target=self._run, name=f"rec-{self.camera}", daemon=True)
        self.thread.start()

    @property
    def backlog(self) -> int:
        """Indices written to the store and not read yet (head - cursor)."""
        return self.cursor.backlog if self.cursor is not None else 0

    def recent(self) -> tuple[list[int], list[int]]:
        """The last dropped and overrun indices (oldest first)."""
        with self._recent_lock:
            return list(self._dropped_recent), list(self._overrun_recent)

    # -- the camera's thread -----------------------------------------------------------------------

    def _run(self) -> None:
        cursor, buf = self.cursor, self.buf
        assert cursor is not None
        try:
            while not self.quit.is_set():
                rec = cursor.take(out=buf)
                if rec is None:
                    self.wake.clear()  # then look once more, so a wake-up between is not missed
                    rec = cursor.take(out=buf)
                    if rec is None:
                        if self._stream_over(cursor):
                            self.finished = True
                            break
                        self.wake.wait(IDLE_WAIT_S)
                        continue
                self._record(rec)
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            logger.exception("recorder: camera %s stopped at trigger index %d", self.camera,
                             self.next_row)
        finally:
            self._close_range()
            self._log_quiet(force=True)

    @staticmethod
    def _stream_over(cursor: StoreCursor) -> bool:
        """Every index of an ended stream read, or its writer died and all it wrote was read."""
        store = cursor.store
        return cursor.done or (store.ended and cursor.next >= store.head)

    def _record(self, rec: Record) -> None:
        n = rec.index
        video_frame = -1
        if rec.state == "frame":
            self.frames += 1
            if self.writer is not None and self.error is None:
                written = self._encode(n, rec.pixels)
                if written is None:  # overwritten while the raw writer copied it from the slot
                    self.frames -= 1
                    rec = Record(n, "overrun", None, None)
                else:
                    video_frame = written
        if rec.state == "overrun":
            self._overrun(n)
            row = no_frame_row(self.camera, n, lost=False)
        else:
            if self._range[0] >= 0:
                self._close_range()
            assert rec.fields is not None
            _, frame_id, t_camera_ns, t_pi_ns, t_host_ns, flags = rec.fields[:6].tolist()
            if rec.state == "notice":
                self.dropped += 1
                with self._recent_lock:
                    self._dropped_recent.append(n)
            row = (self.camera, frame_id, n, t_camera_ns, t_pi_ns, t_host_ns, video_frame,
                   int(rec.state == "notice"), int(bool(flags & FLAG_INCOMPLETE)),
                   int(bool(flags & FLAG_TIMING)), 0, 0)
        self.rows.write(row)
        self.next_row = n + 1
        self.taken += 1

    def _encode(self, n: int, pixels: np.ndarray | None) -> int | None:
        """The frame's index in the video (-1 if the video failed: the tables go on); None if
        the raw writer, copying straight from the slot, found it overwritten."""
        assert self.writer is not None and pixels is not None and self.cursor is not None
        store = self.cursor.store
        try:
            if self.buf is None:  # pixels is the slot itself
                k = self.writer.write(pixels, lambda: store.holds(n))
                return None if k < 0 else k
            return self.writer.write(pixels)
        except Exception as exc:  # keep the tables going even if a video fails
            self.error = f"{type(exc).__name__}: {exc}"
            logger.exception("recorder: video %s failed at frame %d", self.writer.path,
                             self.writer.frames_written)
            return -1

    def _overrun(self, n: int) -> None:
        self.overruns += 1
        with self._recent_lock:
            self._overrun_recent.append(n)
            self._dropped_recent.append(n)
        start, end = self._range
        if start >= 0 and n == end + 1:
            self._range = (start, n)
        else:
            self._close_range()
            self._range = (n, n)

    def _close_range(self) -> None:
        """Log the range of overrun indices that just ended (the first few, then rate-limited)."""
        start, end = self._range
        if start < 0:
            return
        self._range = (-1, -1)
        self.overrun_ranges += 1
        if self.overrun_ranges <= OVERRUN_LOG_FIRST:
            assert self.cursor is not None
            logger.warning("recorder: camera %s fell more than its store (%d frames) behind: trigger "
                           "indices %d..%d (%d) were overwritten before they were recorded (overrun "
                           "rows)%s", self.camera, self.cursor.store.capacity, start, end,
                           end - start + 1, "; further overruns are logged every "
                           f"{OVERRUN_LOG_EVERY_S:g} s" if self.overrun_ranges == OVERRUN_LOG_FIRST
                           else "")
            self._last_log = time.monotonic()
            return
        self._quiet[0] += 1
        self._quiet[1] += end - start + 1
        self._log_quiet()

    def _log_quiet(self, force: bool = False) -> None:
        ranges, indices = self._quiet
        if ranges and (force or time.monotonic() - self._last_log >= OVERRUN_LOG_EVERY_S):
            logger.warning("recorder: camera %s: %d more overrun range(s), %d trigger indices, up "
                           "to index %d (%d overruns in all)", self.camera, ranges, indices,
                           self.next_row - 1, self.overruns)
            self._quiet = [0, 0]
            self._last_log = time.monotonic()

    # -- end ---------------------------------------------------------------------------------------

    def stop(self) -> bool:
        """Stop the thread (after the record it is on); False if it did not stop in time."""
        self.quit.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join(JOIN_TIMEOUT_S)
            if self.thread.is_alive():
                logger.error("recorder: camera %s's thread did not stop within %g s (stuck in its "
                             "video writer?); its video is left open", self.camera, JOIN_TIMEOUT_S)
                return False
        return True

    def lost_rows(self, pulses: int) -> list[tuple[Any, ...]]:
        """Rows for the pulses after this camera's last row that no record came for."""
        rows = [no_frame_row(self.camera, n, lost=True) for n in range(self.next_row, pulses)]
        if rows:
            self.lost += len(rows)
            with self._recent_lock:
                self._dropped_recent.extend(range(max(self.next_row, pulses - RECENT), pulses))
            logger.warning("recorder: camera %s: no record for trigger indices %d..%d (%d pulses): "
                           "written as lost_in_transport", self.camera, self.next_row, pulses - 1,
                           len(rows))
            self.next_row = pulses
        return rows


class Recorder(Component):
    name = "recorder"

    def __init__(self, rig: RigConfig, run: str, out: str | Path, ctx: zmq.Context | None = None,
                 status_address: str | None = None) -> None:
        self.rig = rig
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.video = rig.recording.video == "on"
        ctx = ctx or zmq.Context.instance()
        self.pulse_sock = subscriber(ctx, rig.address("pulses", run), hwm=100_000)
        self.pulse_malformed = protocol.MalformedCounter("recorder pulses")
        self.status = StatusReporter(ctx, status_address, "recorder")
        self.control = ControlListener(ctx, status_address and rig.address("control", run),
                                       "recorder")
        self._rows = _Rows(self.out / "frames.csv")
        self._pulses_file = open(self.out / "pulses.csv", "w", newline="")  # noqa: SIM115
        self._pulses_csv = csv.writer(self._pulses_file)
        self._pulses_csv.writerow(("index", "t_pi_ns", "line"))
        self.pulses = {"camera": 0, "sync": 0}
        self.tracks = {c.name: _CameraTrack(c.name, rig, self._rows,
                                            self.out / "video" / f"{c.name}.mkv" if self.video else None)
                       for c in rig.cameras}
        # Last: opening a store subscribes to its camera node, which may then start acquiring.
        self.stores = CameraStores(rig, run, ctx, "recorder")
        self._start_opened()
        self._last_flush = time.monotonic()
        self._taken = 0
        self._final: dict[str, Any] | None = None

    def _start_opened(self) -> None:
        for cam, store in self.stores.stores.items():
            track = self.tracks[cam]
            if track.cursor is None:
                track.start(store, copy_pixels=track.writer is not None and not track.writer.in_place)

    # -- the loop (rigstream.component) ----------------------------------------------------

    def finished(self) -> bool:
        return all(t.finished for t in self.tracks.values())

    def turn(self) -> bool:
        if self.stores.wait(timeout_ms=WAIT_MS):
            for track in self.tracks.values():
                track.wake.set()
        self._start_opened()
        taken = sum(t.taken for t in self.tracks.values())
        progressed, self._taken = taken != self._taken, taken
        failed = {c: t.failure for c, t in self.tracks.items() if t.failure}
        if failed:
            raise RuntimeError(f"recorder: camera thread(s) failed: {failed}")
        self._drain_pulses()
        if time.monotonic() - self._last_flush > self.rig.recording.flush_interval_s:
            self._flush()
        return progressed

    def gave_up(self) -> None:
        logger.warning("recorder: cameras %s did not finish their streams within %g s of the stop "
                       "or their last frame", sorted(c for c, t in self.tracks.items() if not t.finished),
                       self.idle_s)

    def finish(self) -> dict[str, Any]:
        return self.close()

    def _drain_pulses(self) -> None:
        for pulse in received(self.pulse_sock, protocol.Pulse, self.pulse_malformed):
            self._pulses_csv.writerow((pulse.index, pulse.t_pi_ns, pulse.line))
            self.pulses[pulse.line] = self.pulses.get(pulse.line, 0) + 1

    def _flush(self) -> None:
        self._rows.flush()
        self._pulses_file.flush()
        self._last_flush = time.monotonic()

    def summary(self) -> dict[str, Any]:
        """Per camera counts and the last indices, the stores' state, the pulses."""
        if self._final is not None:
            return self._final
        recent = {c: t.recent() for c, t in self.tracks.items()}
        return {
            "frames": {c: t.frames for c, t in self.tracks.items()},
            "frames_dropped": {c: t.dropped + t.overruns + t.lost for c, t in self.tracks.items()},
            "dropped_indices": {c: r[0] for c, r in recent.items()},
            "overruns": {c: t.overruns for c, t in self.tracks.items()},
            "overrun_indices": {c: r[1] for c, r in recent.items()},
            "lost_in_transport": {c: t.lost for c, t in self.tracks.items()},
            "encode_backlog": {c: t.backlog for c, t in self.tracks.items()},
            "pulses": dict(self.pulses),
            "video": "on" if self.video else "off",
            "video_errors": {c: t.error for c, t in self.tracks.items() if t.error},
            **self.stores.stats(),
            "malformed_pulses": self.pulse_malformed.as_dict(),
        }

    def close(self) -> dict[str, Any]:
        """Finish the videos and tables; idempotent. Returns the recording's summary."""
        if self._final is not None:
            return self._final
        stopped = {c: t.stop() for c, t in self.tracks.items()}
        self._drain_pulses()
        for track in self.tracks.values():
            # Pulses no frame or notice ever came for (a camera node that died): say so.
            self._rows.write_many(track.lost_rows(self.pulses.get("camera", 0)))
        for cam, track in self.tracks.items():
            if track.writer is not None and stopped[cam]:
                track.writer.close()
        summary = self.summary()
        self._flush()
        self._rows.close()
        self._pulses_file.close()
        summary.update(codec=self.rig.recording.codec if self.video else None,
                       lossless=self.rig.recording.codec in LOSSLESS if self.video else None,
                       videos={c: str(t.writer.path.relative_to(self.out))
                               for c, t in self.tracks.items() if t.writer is not None})
        (self.out / "recording.json").write_text(json.dumps(summary, indent=2))
        self._final = summary
        for part in (self.stores, self.control):
            part.close()
        self.pulse_sock.close()
        return summary


def run_recorder(rig: RigConfig, run: str, out: str | Path,
                 status_address: str | None = None) -> dict[str, Any]:
    stop = SignalStop().on_signals()
    return Recorder(rig, run, out, status_address=status_address).run_forever(stop)
