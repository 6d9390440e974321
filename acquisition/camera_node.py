"""The camera node: one per camera. Grabs, stamps, indexes and stores every frame.

Each frame is copied once into the camera's shared-memory frame store (slot
``trigger_index % capacity``, :mod:`rigstream.framestore`) and its header is published on
ZeroMQ; on one host the pixels never travel (consumers read the store in place). A camera
whose frame address is reachable from other hosts (tcp) sends the pixels with each header there,
for a bridge on another host to fill that host's store, and the headers alone on
``transport.local_headers`` for this host's consumers (the store names where its headers go).
The store is created when the node starts and unlinked when it closes; its ``end`` word is the
end of stream that cannot be lost.

Each frame gets its trigger index from its FrameID (``n = frame_id - first_frame_id``) and
is checked against the pulse of that index on the Pi's clock through a running fit of camera
time to pulse time. A frame more than half a period off its pulse is flagged ``FLAG_TIMING``
(a skipped trigger or a miscount), never silently re-indexed. Gaps in FrameID and incomplete
images are published as drop notices naming their trigger index, so every pulse is accounted
for downstream: frames + drops == pulses.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
import zmq

from rigstream import protocol
from rigstream.acquisition.backends import make_camera
from rigstream.acquisition.camera import Frame
from rigstream.clock import LinearClockFit
from rigstream.component import Component
from rigstream.config import RigConfig
from rigstream.framestore import FrameStore, StoreLayout, store_name
from rigstream.protocol import FLAG_DROPPED, FLAG_EOS, FLAG_INCOMPLETE, FLAG_TIMING, FrameHeader
from rigstream.transport import (
    ControlListener,
    Publisher,
    SignalStop,
    StatusReporter,
    is_local_address,
    subscriber,
)

logger = logging.getLogger(__name__)

PULSE_TABLE = 1 << 16
"""Recent pulses kept for stamping (655 s at 100 Hz): pulse n lives at n % PULSE_TABLE."""


class PulseTable:
    """Pulse times by index, filled from the trigger daemon's pulse stream."""

    def __init__(self, ctx: zmq.Context, address: str, where: str) -> None:
        self.sock = subscriber(ctx, address, hwm=100_000)
        self.t_pi_ns = np.full(PULSE_TABLE, -1, np.int64)
        self.index = np.full(PULSE_TABLE, -1, np.int64)
        self.count = 0
        """Highest camera pulse index seen + 1."""
        self.malformed = protocol.MalformedCounter(f"{where} pulses")

    def drain(self, wait_ms: int = 0) -> None:
        while self.sock.poll(wait_ms, zmq.POLLIN):
            wait_ms = 0
            try:
                pulse = protocol.decode(self.sock.recv(), protocol.Pulse)
            except protocol.ProtocolError as err:
                self.malformed(err)
                continue
            if pulse.line != "camera" or pulse.index < 0:
                continue
            slot = pulse.index % PULSE_TABLE
            self.t_pi_ns[slot] = pulse.t_pi_ns
            self.index[slot] = pulse.index
            self.count = max(self.count, pulse.index + 1)

    def get(self, n: int) -> int:
        """Pi time of pulse n, or -1 if it has not been received (or was overwritten)."""
        slot = n % PULSE_TABLE
        return int(self.t_pi_ns[slot]) if self.index[slot] == n else -1

    def wait_for(self, n: int, timeout_ms: int) -> int:
        t = self.get(n)
        deadline = time.monotonic() + timeout_ms / 1000
        while t < 0 and (left := deadline - time.monotonic()) > 0:
            self.drain(wait_ms=max(1, int(left * 1000)))
            t = self.get(n)
        return t

    def close(self) -> None:
        self.sock.close()


class CameraNode(Component):
    drains = False  # a source: it stops at once, then accounts for every pulse

    def __init__(self, rig: RigConfig, camera: str, run: str, ctx: zmq.Context | None = None,
                 status_address: str | None = None, expect_subscribers: int = 0) -> None:
        self.rig = rig
        self.config = rig.camera(camera)
        self.name = f"camera {camera}"
        self.run = run
        self.ctx = ctx or zmq.Context.instance()
        self.expect_subscribers = expect_subscribers
        self.period_ns = rig.trigger.period_ns
        self.camera = make_camera(self.config, rig, run, self.ctx)
        address = rig.frames_address(camera, run)
        self.pub = Publisher(self.ctx, address, hwm=rig.transport.frame_hwm)
        self.send_pixels = not is_local_address(address)
        """Pixels go on the wire too (a consumer host's bridge needs them)."""
        self.local: Publisher | None = None
        """With pixels on the wire: the headers alone for this host's consumers."""
        if self.send_pixels:
            self.local = Publisher(self.ctx, rig.address("local_headers", run, camera=camera),
                                   hwm=rig.transport.frame_hwm)
        self.pulses = PulseTable(self.ctx, rig.address("pulses", run), f"camera {camera}")
        self.status = StatusReporter(self.ctx, status_address, f"camera:{camera}")
        self.control = ControlListener(self.ctx, status_address and rig.address("control", run),
                                       f"camera {camera}")
        self.fit = LinearClockFit()
        """Camera clock -> Pi clock, from each frame's timestamp and its pulse's time."""
        self.host_fit = LinearClockFit()
        """Camera clock -> host clock, from clock latches bracketed by host time."""
        self.latches = 0
        self.latch_uncertainty_ns = 0
        self._next_latch_ns = 0
        self.seq = 0
        self.first_frame_id = 0
        """FrameID of pulse 0: cameras reset their frame counter when acquisition starts."""
        self.last_frame_id = -1
        self.last_index = -1
        self.frames = 0
        self.dropped: list[int] = []
        self.flagged: list[int] = []
        self.no_pulse = 0
        self.max_offset_ns = 0
        self.out_of_order: list[int] = []
        """Trigger indices of frames whose FrameID went backwards (a counter reset): reported,
        not stored."""
        self._header = FrameHeader(camera=camera, seq=0, frame_id=0, trigger_index=0,
                                   t_camera_ns=0, t_host_ns=0, width=self.config.width,
                                   height=self.config.height, channels=self.config.channels)
        cfg = self.config  # the store last: nothing after it can fail and leave it behind
        wake = (self.local or self.pub).address
        self.store = FrameStore.create(store_name(run, camera), StoreLayout(
            rig.store_frames(), cfg.height, cfg.width, cfg.channels), wake_address=wake)

    # -- the loop (rigstream.component): acquire until a stop, then account for every pulse
    # and publish end of stream ---------------------------------------------------------------

    def start(self) -> None:
        self.camera.open()
        self.camera.configure()
        self.camera.start()
        self._wait_ready(self.waiting.stop)

    def turn(self) -> bool:
        frame = self.camera.get_frame(0.05)
        self.pulses.drain()
        if frame is not None:
            self._handle(frame)
        self._latch_clock()
        return frame is not None

    def finish(self) -> dict[str, Any]:
        cmd = self.waiting.command
        self._finish(cmd.args.get("pulses") if cmd is not None else None)
        return self.summary()

    def _latch_clock(self) -> None:
        """Every LATCH_INTERVAL_NS, latch the camera clock against the host's (the midpoint of
        the host readings; their spread bounds the latch's uncertainty)."""
        now = time.monotonic_ns()
        if now < self._next_latch_ns:
            return
        self._next_latch_ns = now + LATCH_INTERVAL_NS
        latch = self.camera.latch_clock()
        if latch is None:
            return
        before, camera_ns, after = latch
        self.host_fit.add(camera_ns, (before + after) // 2)
        self.latches += 1
        self.latch_uncertainty_ns = max(self.latch_uncertainty_ns, after - before)

    def _wait_ready(self, stop: threading.Event) -> None:
        """Wait until the expected consumers (and, for a simulated primary, the secondaries on
        its strobe) have subscribed, so no frame is published into the void."""
        secondaries = sum(1 for c in self.rig.cameras if c.role == "secondary"
                          and c.backend == "sim")
        want_strobe = secondaries if (self.config.role == "primary"
                                      and self.config.backend == "sim") else 0
        deadline = time.monotonic() + 30
        subs = 0
        while not stop.is_set() and time.monotonic() < deadline:
            subs = self.pub.poll_subscriptions(50 if self.local is None else 25)
            if self.local is not None:  # consumers here and bridges elsewhere
                subs += self.local.poll_subscriptions(25)
            strobe = getattr(self.camera, "strobe_subscribers", 0)
            if subs >= self.expect_subscribers and strobe >= want_strobe:
                return
        if not stop.is_set():
            logger.warning("camera %s: started with %d of %d consumers subscribed",
                           self.config.name, subs, self.expect_subscribers)

    def _finish(self, final_pulses: int | None) -> None:
        """Drain what the camera still holds, report the pulses no frame came for, end."""
        self.pulses.drain(wait_ms=20)
        total = final_pulses if final_pulses is not None else self.pulses.count
        stall = self.config.faults.stall_s if self.config.faults.stall_at_s is not None else 0
        # Wait while frames keep coming (a loaded host may be seconds behind), not longer.
        deadline = time.monotonic() + 2.0 + stall
        while self.last_index < total - 1 and time.monotonic() < deadline:
            frame = self.camera.get_frame(0.05)
            if frame is not None:
                self._handle(frame)
                deadline = time.monotonic() + 2.0
        for n in range(self.last_index + 1, total):
            self._notice(n, frame_id=self.first_frame_id + n, flags=FLAG_DROPPED)
        self.store.finish(self.store.head)
        self._notice(max(total - 1, self.last_index), frame_id=self.last_frame_id, flags=FLAG_EOS)

    def close(self) -> None:
        self.camera.close()
        for part in (self.pub, self.local, self.pulses, self.status, self.control):
            if part is not None:
                part.close()
        self.store.close()

    # -- per frame ---------------------------------------------------------------------------

    def _handle(self, frame: Frame) -> None:
        if frame.frame_id <= self.last_frame_id:
            self.out_of_order.append(frame.frame_id - self.first_frame_id)
            logger.error("camera %s: FrameID %d after %d (counter reset?): not stored",
                         self.config.name, frame.frame_id, self.last_frame_id)
            frame.release()
            return
        for missing_id in range(max(self.last_frame_id + 1, self.first_frame_id), frame.frame_id):
            self._notice(missing_id - self.first_frame_id, missing_id, FLAG_DROPPED)
        self.last_frame_id = frame.frame_id
        n = frame.frame_id - self.first_frame_id
        self.last_index = n
        if frame.incomplete or frame.pixels is None:
            self._notice(n, frame.frame_id, FLAG_DROPPED | FLAG_INCOMPLETE,
                         t_camera_ns=frame.t_camera_ns, truth_index=frame.truth_index)
            frame.release()
            return
        t_host_ns = time.monotonic_ns()
        flags = 0
        t_pi_ns = self.pulses.wait_for(n, timeout_ms=20)
        if t_pi_ns < 0:
            self.no_pulse += 1
        elif self.fit.n == 0:
            self.fit.add(frame.t_camera_ns, t_pi_ns)
        else:
            t_frame = self.fit.predict(frame.t_camera_ns)
            offset = t_frame - t_pi_ns
            # Late pulses come bunched closer than a period: a frame nearer a neighbouring
            # pulse than its own belongs to that one, however small its offset.
            t_prev, t_next = self.pulses.get(n - 1) if n > 0 else -1, self.pulses.get(n + 1)
            nearer = ((t_prev >= 0 and abs(t_frame - t_prev) < abs(offset))
                      or (t_next >= 0 and abs(t_frame - t_next) < abs(offset)))
            if abs(offset) > self.period_ns // 2 or nearer:
                flags |= FLAG_TIMING
                self.flagged.append(n)
                if len(self.flagged) <= 5:
                    logger.warning(
                        "camera %s: frame %d (trigger %d) is %.2f ms off its pulse "
                        "(half a period is %.2f ms%s): flagged", self.config.name,
                        frame.frame_id, n, offset / 1e6, self.period_ns / 2e6,
                        ", and nearer another pulse" if nearer else "")
            else:
                self.max_offset_ns = max(self.max_offset_ns, abs(offset))
                self.fit.add(frame.t_camera_ns, t_pi_ns)
        assert frame.pixels is not None
        h = self._header
        h.slot = self.store.write(n, frame.pixels, frame_id=frame.frame_id,
                                  t_camera_ns=frame.t_camera_ns, t_pi_ns=t_pi_ns, t_host_ns=t_host_ns,
                                  flags=flags, truth_index=frame.truth_index,
                                  exposure_ns=round(frame.exposure_us * 1e3))
        h.seq, h.frame_id, h.trigger_index = self.seq, frame.frame_id, n
        h.t_camera_ns, h.t_host_ns, h.t_pi_ns = frame.t_camera_ns, t_host_ns, t_pi_ns
        h.exposure_us, h.flags, h.truth_index = frame.exposure_us, flags, frame.truth_index
        if self.local is not None:
            tracker = protocol.send_frame(self.pub.sock, h, frame.pixels, track=True)
            protocol.send_frame(self.local.sock, h, None)
            frame.release(tracker)
        else:
            protocol.send_frame(self.pub.sock, h, None)
            frame.release()
        self.seq += 1
        self.frames += 1

    def _notice(self, n: int, frame_id: int, flags: int, t_camera_ns: int = -1,
                truth_index: int = -1) -> None:
        if flags & FLAG_DROPPED:
            self.dropped.append(n)
        h = FrameHeader(camera=self.config.name, seq=self.seq, frame_id=frame_id,
                        trigger_index=n, t_camera_ns=t_camera_ns,
                        t_host_ns=time.monotonic_ns(), t_pi_ns=self.pulses.get(n) if n >= 0 else -1,
                        width=self.config.width, height=self.config.height,
                        channels=self.config.channels, flags=flags, truth_index=truth_index)
        if not flags & FLAG_EOS:
            h.slot = self.store.write(n, None, frame_id=frame_id, t_camera_ns=t_camera_ns,
                                      t_pi_ns=h.t_pi_ns, t_host_ns=h.t_host_ns, flags=flags,
                                      truth_index=truth_index)
        protocol.send_frame(self.pub.sock, h, None)
        if self.local is not None:
            protocol.send_frame(self.local.sock, h, None)
        self.seq += 1

    def summary(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "dropped": len(self.dropped),
            "dropped_indices": self.dropped[-1000:],
            "flagged": len(self.flagged),
            "no_pulse": self.no_pulse,
            "pulses_seen": self.pulses.count,
            "last_index": self.last_index,
            "clock_drift_ppm": round(self.fit.drift_ppm, 3),
            "clock_residual_us": round(self.fit.residual_rms_ns / 1e3, 3),
            "host_clock": {"latches": self.latches, "drift_ppm": round(self.host_fit.drift_ppm, 3),
                           "residual_us": round(self.host_fit.residual_rms_ns / 1e3, 3),
                           "latch_window_us": round(self.latch_uncertainty_ns / 1e3, 3)},
            "max_offset_us": round(self.max_offset_ns / 1e3, 3),
            "malformed_pulses": self.pulses.malformed.total,
            "out_of_order": len(self.out_of_order),
            "store": {"name": self.store.name, "slots": self.store.capacity,
                      "mib": round(self.store.layout.total_bytes / 2**20, 1)},
            "camera": self.camera.stats(),
        }


LATCH_INTERVAL_NS = 1_000_000_000
"""How often the camera node latches the camera's clock against the host's."""


def run_camera(rig: RigConfig, camera: str, run: str, status_address: str | None = None,
               expect_subscribers: int = 0) -> dict[str, Any]:
    """Run one camera node until stopped (SIGINT/SIGTERM or the supervisor's stop)."""
    stop = SignalStop().on_signals()
    ctx = zmq.Context()
    try:
        node = CameraNode(rig, camera, run, ctx, status_address=status_address,
                          expect_subscribers=expect_subscribers)
        return node.run_forever(stop)
    finally:
        # Frames sent without a copy may still be in flight: let ZeroMQ finish them (up to
        # the sockets' linger) before the interpreter frees the buffers they point into.
        ctx.destroy(linger=2000)
