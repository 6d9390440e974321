"""The recorder: every frame of every camera to a video per camera, plus the timestamp tables.

Session folder::

    frames.csv      one row per (camera, trigger_index): frame_id, the three clocks,
                    the frame's index in its video (-1 if dropped) and the flags
    pulses.csv      every pulse of the camera trigger and the sync line (index, t_pi_ns, line)
    video/<camera>.mkv
    recording.json  written at the end: frames and drops per camera, codec, files

The tables are flushed every ``recording.flush_interval_s`` and the videos are Matroska, so a
session killed mid-way leaves everything up to the last flush readable. Encoding runs in one
thread per camera behind a bounded queue; if it cannot keep up, ZeroMQ's queue fills and the
loss shows up as sequence gaps (logged, counted, and written as dropped rows), never silently.
"""

from __future__ import annotations

import csv
import json
import logging
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from rigstream import protocol
from rigstream.acquisition.video import LOSSLESS, VideoWriter
from rigstream.config import RigConfig
from rigstream.frames import FrameReceiver, Received, StopWait
from rigstream.protocol import FLAG_DROPPED, FLAG_EOS, FLAG_INCOMPLETE, FLAG_TIMING, FrameHeader
from rigstream.transport import ControlListener, StatusReporter, received, subscriber

logger = logging.getLogger(__name__)

FRAME_COLUMNS = ("camera", "frame_id", "trigger_index", "t_camera_ns", "t_pi_ns", "t_host_ns",
                 "video_frame", "dropped", "incomplete", "timing_flag", "lost_in_transport")


def frame_row(h: FrameHeader, video_frame: int, lost: bool = False) -> tuple[Any, ...]:
    return (h.camera, h.frame_id, h.trigger_index, h.t_camera_ns, h.t_pi_ns, h.t_host_ns,
            video_frame, int(bool(h.flags & FLAG_DROPPED) or lost),
            int(bool(h.flags & FLAG_INCOMPLETE)), int(bool(h.flags & FLAG_TIMING)), int(lost))


class _CameraTrack:
    """One camera's video, written by its own thread."""

    def __init__(self, path: Path, rig: RigConfig, camera: str) -> None:
        cfg = rig.camera(camera)
        self.writer = VideoWriter(path, cfg.width, cfg.height, cfg.channels, rig.recording.codec,
                                  rig.trigger.rate_hz, rig.recording.crf)
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=256)
        self.frames = 0
        self.dropped: list[int] = []
        self.last_index = -1
        self.error: str | None = None
        self.thread = threading.Thread(target=self._encode, name=f"rec-{camera}", daemon=True)
        self.thread.start()

    def _encode(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                break
            if self.error is None:
                try:
                    self.writer.write(item.pixels)
                except Exception as exc:  # keep the tables going even if a video fails
                    self.error = f"{type(exc).__name__}: {exc}"
                    logger.exception("recorder: video %s failed", self.writer.path)
        self.writer.close()

    def finish(self) -> None:
        self.queue.put(None)
        self.thread.join()


class Recorder:
    def __init__(self, rig: RigConfig, run: str, out: str | Path, ctx: zmq.Context | None = None,
                 status_address: str | None = None) -> None:
        self.rig = rig
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        ctx = ctx or zmq.Context.instance()
        self.frames = FrameReceiver(rig, run, ctx, "recorder")
        self.pulse_sock = subscriber(ctx, rig.address("pulses", run), hwm=100_000)
        self.pulse_malformed = protocol.MalformedCounter("recorder pulses")
        self.status = StatusReporter(ctx, status_address, "recorder")
        self.control = ControlListener(ctx, status_address and rig.address("control", run),
                                       "recorder")
        self.tracks = {c.name: _CameraTrack(self.out / "video" / f"{c.name}.mkv", rig, c.name)
                       for c in rig.cameras}
        self._frames_file = open(self.out / "frames.csv", "w", newline="")  # noqa: SIM115
        self._frames_csv = csv.writer(self._frames_file)
        self._frames_csv.writerow(FRAME_COLUMNS)
        self._pulses_file = open(self.out / "pulses.csv", "w", newline="")  # noqa: SIM115
        self._pulses_csv = csv.writer(self._pulses_file)
        self._pulses_csv.writerow(("index", "t_pi_ns", "line"))
        self.pulses = {"camera": 0, "sync": 0}
        self._last_flush = time.monotonic()
        self._closed = False

    def run_forever(self, stop: threading.Event | None = None) -> dict[str, Any]:
        waiting = StopWait(self.control, stop or threading.Event())
        self.status.report("ready", **self.summary())
        try:
            while not self.frames.all_ended:
                waiting.poll()
                if waiting.expired:
                    logger.warning("recorder: cameras %s never ended their streams",
                                   sorted(set(self.frames.cameras) - self.frames.ended))
                    break
                got = self.frames.recv(timeout_ms=20)
                if got is not None:
                    self._record(got)
                    waiting.progressed()  # still catching up: keep waiting
                self._drain_pulses()
                if time.monotonic() - self._last_flush > self.rig.recording.flush_interval_s:
                    self._flush()
                self.status.heartbeat(self.summary)
            self._drain_pulses()
            summary = self.close()
            self.status.report("done", **summary)
            return summary
        except Exception as exc:
            logger.exception("recorder failed")
            self.status.report("error", error=f"{type(exc).__name__}: {exc}")
            self.close()
            raise
        finally:
            self.status.close()

    def _record(self, got: Received) -> None:
        h = got.header
        eos = bool(h.flags & FLAG_EOS)
        track = self.tracks[h.camera]
        # Trigger indices skipped without a notice were lost between node and recorder; the
        # end-of-stream notice names the stream's last index, so losses just before it count.
        self._write_lost(h.camera, track, h.trigger_index + 1 if eos else h.trigger_index)
        track.last_index = max(track.last_index, h.trigger_index)
        if eos:
            return
        if got.pixels is None:
            track.dropped.append(h.trigger_index)
            self._frames_csv.writerow(frame_row(h, -1))
            return
        self._frames_csv.writerow(frame_row(h, track.frames))
        track.frames += 1
        track.queue.put(got)

    def _write_lost(self, camera: str, track: _CameraTrack, upto: int) -> None:
        """Rows for trigger indices after the camera's last one and before ``upto``."""
        for n in range(track.last_index + 1, upto):
            lost = FrameHeader(camera=camera, seq=-1, frame_id=-1, trigger_index=n,
                               t_camera_ns=-1, t_host_ns=-1, width=0, height=0,
                               flags=FLAG_DROPPED)
            track.dropped.append(n)
            self._frames_csv.writerow(frame_row(lost, -1, lost=True))
        track.last_index = max(track.last_index, upto - 1)

    def _drain_pulses(self) -> None:
        for pulse in received(self.pulse_sock, protocol.Pulse, self.pulse_malformed):
            self._pulses_csv.writerow((pulse.index, pulse.t_pi_ns, pulse.line))
            self.pulses[pulse.line] = self.pulses.get(pulse.line, 0) + 1

    def _flush(self) -> None:
        self._frames_file.flush()
        self._pulses_file.flush()
        self._last_flush = time.monotonic()

    def summary(self) -> dict[str, Any]:
        return {
            "frames": {c: t.frames for c, t in self.tracks.items()},
            "frames_dropped": {c: len(t.dropped) for c, t in self.tracks.items()},
            "dropped_indices": {c: t.dropped[-1000:] for c, t in self.tracks.items()},
            "pulses": dict(self.pulses),
            "video_errors": {c: t.error for c, t in self.tracks.items() if t.error},
            "encode_backlog": {c: t.queue.qsize() for c, t in self.tracks.items()},
            **self.frames.stats(),
            "malformed_pulses": self.pulse_malformed.as_dict(),
        }

    def close(self) -> dict[str, Any]:
        """Finish the videos and tables; idempotent. Returns the recording's summary."""
        if self._closed:
            return self.summary()
        self._closed = True
        self._drain_pulses()
        for camera, track in self.tracks.items():
            # Pulses no frame or notice ever came for (a stream that never ended): say so.
            self._write_lost(camera, track, self.pulses.get("camera", 0))
            track.finish()
        self._flush()
        self._frames_file.close()
        self._pulses_file.close()
        summary = self.summary()
        summary.update(codec=self.rig.recording.codec,
                       lossless=self.rig.recording.codec in LOSSLESS,
                       videos={c: str(t.writer.path.relative_to(self.out))
                               for c, t in self.tracks.items()})
        (self.out / "recording.json").write_text(json.dumps(summary, indent=2))
        for part in (self.frames, self.control):
            part.close()
        self.pulse_sock.close()
        return summary


def run_recorder(rig: RigConfig, run: str, out: str | Path,
                 status_address: str | None = None) -> dict[str, Any]:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return Recorder(rig, run, out, status_address=status_address).run_forever(stop)
