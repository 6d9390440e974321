"""The simulated camera: the twin of a hardware-triggered FLIR camera.

It listens to a simulated electrical line (the Pi's trigger for the primary, the primary's
strobe for secondaries), exposes one frame per rising edge, drives its own strobe line, and
renders the simulated animal at the pulse's time through its calibrated virtual camera. A
thread plays the camera's hardware (exposure, strobe, stream buffers); ``get_frame`` is the
host taking the oldest buffered image, as Spinnaker's OldestFirst mode does.

Pre-rendered mode (``CameraConfig.prerender_s``): the camera renders a loop of that many
seconds once when configured and hands over each frame as a read-only view of its slot in
the loop, so it costs the host what a real camera's driver does (a buffer handed over; the
camera node makes the one copy), not a render. The animal then replays the loop:
:func:`sim_pose_time_s` is the one mapping from a trigger index to the time its pose is taken,
used by the cameras and by every check against the simulation's truth.

Fault injection (``CameraConfig.faults``): frames lost in transport (FrameID advances),
incomplete frames, missed triggers, timestamp jitter, and a transport stall during which
frames queue in the stream buffers (overflow is dropped).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from rigstream import protocol
from rigstream.acquisition import sim_world
from rigstream.acquisition.camera import BufferPool, Camera, CameraError, Frame
from rigstream.calibration import CalibratedCamera, Calibration
from rigstream.config import CameraConfig, RigConfig
from rigstream.transport import Publisher, subscriber

logger = logging.getLogger(__name__)

STROBE_LATENCY_NS = 1_000
"""Delay from the primary's trigger edge to its strobe edge (exposure start)."""
TRIGGER_LATENCY_NS = 2_000
"""Delay from a trigger edge to exposure start."""


def sim_loop_frames(rig: RigConfig) -> int | None:
    """Frames in the loop the rig's simulated cameras pre-render (``prerender_s`` at the
    trigger rate; the rig file makes every simulated camera's the same), or None where they
    render every frame at its pulse."""
    for cam in rig.cameras:
        if cam.backend == "sim" and cam.prerender_s is not None:
            return max(1, rig.frames_per(cam.prerender_s))
    return None


def sim_pose_time_s(rig: RigConfig, trigger_index: int) -> float:
    """When the simulated animal's pose is taken for pulse ``trigger_index``, s: the pulse's
    own time ``n / rate_hz``, or in pre-rendered mode its place in the loop,
    ``(n % loop_frames) / rate_hz``. Everything that compares with the truth goes through it."""
    loop = sim_loop_frames(rig)
    n = int(trigger_index) if loop is None else int(trigger_index) % loop
    return n / rig.trigger.rate_hz


def sim_pose_times_s(rig: RigConfig, trigger_indices: np.ndarray) -> np.ndarray:
    """:func:`sim_pose_time_s` for an array of trigger indices: (N,) float64 s."""
    n = np.asarray(trigger_indices, dtype=np.int64)
    loop = sim_loop_frames(rig)
    if loop is not None:
        n = n % loop
    return n / rig.trigger.rate_hz


def trigger_line(rig: RigConfig, camera: CameraConfig) -> str:
    """The simulated line a camera is triggered by."""
    return "trigger" if camera.role == "primary" else f"strobe-{rig.primary.name}"


def ring_calibration(rig: RigConfig) -> Calibration:
    """A ring of cameras around the simulated arena for the rig's cameras (each at its own
    image size), in the simulated world's frame (mm, origin at the floor centre, z up)."""
    names = [c.name for c in rig.cameras]
    cams = [sim_world.ring_of_cameras(names, cam.width, cam.height)[i]
            for i, cam in enumerate(rig.cameras)]
    return Calibration(tuple(cams), {"made_by": "rigstream (simulated ring around the arena)"},
                       source="simulated ring")


def rig_calibration(rig: RigConfig) -> Calibration:
    """The rig's cameras as calibrated, in the rig's order: its calibration file, or for a rig
    without one, the simulated ring (:func:`ring_calibration`)."""
    if rig.calibration is None:
        return ring_calibration(rig)
    return Calibration.load(rig.calibration).for_rig_cameras(rig.cameras)


def rig_cameras(rig: RigConfig) -> dict[str, CalibratedCamera]:
    """Virtual cameras of the simulated rig by name: placed by the rig's calibration file, or
    on a ring around the arena when it has none."""
    return {cam.name: cam for cam in rig_calibration(rig).cameras}


class SimCamera(Camera):
    def __init__(self, config: CameraConfig, rig: RigConfig, run: str,
                 ctx: zmq.Context | None = None) -> None:
        super().__init__(config)
        self.rig = rig
        self.run = run
        self._ctx = ctx or zmq.Context.instance()
        index = [c.name for c in rig.cameras].index(config.name)
        self._rng = np.random.default_rng((config.faults.seed, index))
        # A camera clock of its own: starts near zero at open, runs slightly fast or slow.
        self._drift = 1 + (index - 0.5) * 20e-6
        self._t_open_ns = 0
        self._motion = sim_world.AnimalMotion()
        self._view = rig_cameras(rig)[config.name]
        self._renderer: sim_world.ViewRenderer | None = None
        self._sub: zmq.Socket | None = None
        self._strobe: Publisher | None = None
        self._pool: BufferPool | None = None
        self._loop_frames = sim_loop_frames(rig) if config.prerender_s is not None else None
        self._loop: np.ndarray | None = None
        """Pre-rendered mode: (loop_frames, H, W[, 3]) uint8, read-only once rendered."""
        self._buffers: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._frame_id = -1
        self._t_first_ns: int | None = None
        self.counts = collections.Counter[str]()

    # -- what the node sees ---------------------------------------------------------------

    @property
    def strobe_subscribers(self) -> int:
        return self._strobe.poll_subscriptions() if self._strobe is not None else 0

    def stats(self) -> dict[str, Any]:
        return dict(self.counts)

    def _do_open(self) -> None:
        line = trigger_line(self.rig, self.config)
        self._sub = subscriber(self._ctx, self.rig.address("sim_lines", self.run, line=line),
                               hwm=100_000)
        if self.config.role == "primary":
            strobe = f"strobe-{self.config.name}"
            self._strobe = Publisher(self._ctx, self.rig.address("sim_lines", self.run,
                                                                 line=strobe), hwm=100_000)
        self._renderer = sim_world.ViewRenderer(self._view, channels=self.config.channels)
        self._t_open_ns = time.monotonic_ns()

    def _do_configure(self) -> None:
        shape: tuple[int, ...] = (self.config.height, self.config.width)
        if self.config.channels == 3:
            shape = (*shape, 3)
        if self._loop_frames is None:
            self._pool = BufferPool(shape, self.config.buffer_count + 16)
        elif self._loop is None:
            self._loop = self._prerender(shape, self._loop_frames)

    def _prerender(self, shape: tuple[int, ...], frames: int) -> np.ndarray:
        """Render the loop: slot k shows the animal at ``k / rate_hz`` (:func:`sim_pose_time_s`
        of every pulse ``n`` with ``n % frames == k``)."""
        assert self._renderer is not None
        loop_bytes = frames * int(np.prod(shape))
        available = _available_memory_bytes()
        if available is not None and loop_bytes > available:
            raise CameraError(
                f"camera {self.name}: a {self.config.prerender_s:g} s pre-rendered loop "
                f"({frames} frames of {self.config.width}x{self.config.height}) needs "
                f"{loop_bytes / 1e9:.1f} GB, more than the {available / 1e9:.1f} GB of memory "
                f"available; shorten prerender_s")
        started = time.perf_counter()
        loop = np.empty((frames, *shape), np.uint8)
        for k in range(frames):
            self._renderer.render(self._motion.pose_at(sim_pose_time_s(self.rig, k)), loop[k])
        loop.setflags(write=False)
        logger.info("camera %s: pre-rendered a %g s loop of %d frames (%dx%d) in %.2f s, %.0f MB",
                    self.name, self.config.prerender_s, frames, self.config.width,
                    self.config.height, time.perf_counter() - started, loop.nbytes / 1e6)
        return loop

    def _do_start(self) -> None:
        self._frame_id = -1
        self._running.set()
        self._thread = threading.Thread(target=self._hardware, name=f"sim-{self.name}",
                                        daemon=True)
        self._thread.start()

    def _do_get_frame(self, timeout_s: float) -> Frame | None:
        fail_at = self.config.faults.fail_at_s
        if fail_at is not None and self._t_first_ns is not None and (
                time.monotonic_ns() - self._t_first_ns) / 1e9 >= fail_at:
            raise CameraError(f"camera {self.name}: simulated failure {fail_at:g} s after the first "
                              f"frame (faults.fail_at_s)")
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                stalled_until = self._stalled_until()
                if self._buffers and stalled_until is None:
                    return self._buffers.popleft()
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if stalled_until is not None:
                    left = min(left, max(stalled_until - time.monotonic(), 0.0))
                self._cond.wait(left)

    def _do_stop(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _do_close(self) -> None:
        for sock in (self._sub, self._strobe):
            if sock is not None:
                sock.close()
        self._sub = self._strobe = None
        with self._cond:
            self._buffers.clear()

    # -- the camera's hardware -------------------------------------------------------------

    def _stalled_until(self) -> float | None:
        faults = self.config.faults
        if faults.stall_at_s is None or self._t_first_ns is None or faults.stall_s <= 0:
            return None
        start = self._t_first_ns / 1e9 + faults.stall_at_s
        end = start + faults.stall_s
        now = time.monotonic()
        return end if start <= now < end else None

    def _do_latch_clock(self) -> tuple[int, int, int] | None:
        before = time.monotonic_ns()
        latched = int((before - self._t_open_ns) * self._drift)  # no timestamp jitter on a latch
        return before, latched, time.monotonic_ns()

    def _camera_clock(self, t_ns: int) -> int:
        t = (t_ns - self._t_open_ns) * self._drift
        if self.config.faults.jitter_us:
            t += self._rng.normal(0.0, self.config.faults.jitter_us * 1e3)
        return int(t)

    def _hardware(self) -> None:
        assert self._sub is not None
        poller = zmq.Poller()
        poller.register(self._sub, zmq.POLLIN)
        while self._running.is_set():
            if not poller.poll(50):
                continue
            try:
                edge = protocol.decode(self._sub.recv(), protocol.Edge)
            except protocol.ProtocolError as err:
                logger.warning("camera %s: bad edge on trigger line: %s", self.name, err)
                continue
            if edge.level:
                self._expose(edge)

    def _expose(self, edge: protocol.Edge) -> None:
        faults = self.config.faults
        if faults.skip_trigger_rate and self._rng.random() < faults.skip_trigger_rate:
            self.counts["triggers_missed"] += 1
            return
        self._frame_id += 1
        t_exposure_ns = edge.t_ns + TRIGGER_LATENCY_NS
        if self._strobe is not None:
            self._strobe.poll_subscriptions()
            self._strobe.send(protocol.Edge(line=f"strobe-{self.name}", level=1,
                                            t_ns=t_exposure_ns + STROBE_LATENCY_NS,
                                            truth_index=edge.truth_index))
            self._strobe.send(protocol.Edge(line=f"strobe-{self.name}", level=0,
                                            t_ns=t_exposure_ns + self.config.exposure_us * 1000,
                                            truth_index=edge.truth_index))
        if self._t_first_ns is None:
            self._t_first_ns = time.monotonic_ns()
        self.counts["exposed"] += 1
        frame = Frame(frame_id=self._frame_id, t_camera_ns=self._camera_clock(t_exposure_ns),
                      pixels=None, exposure_us=float(self.config.exposure_us),
                      truth_index=edge.truth_index)
        if faults.drop_rate and self._rng.random() < faults.drop_rate:
            self.counts["dropped_injected"] += 1
            return
        if faults.incomplete_rate and self._rng.random() < faults.incomplete_rate:
            self.counts["incomplete_injected"] += 1
            frame.incomplete = True
        elif self._loop is not None:  # the driver hands over a buffer: a read-only view, no pool
            assert self._loop_frames is not None
            frame.pixels = self._loop[edge.truth_index % self._loop_frames]
        else:
            assert self._pool is not None and self._renderer is not None
            pixels = self._pool.acquire()
            self._renderer.render(self._motion.pose_at(sim_pose_time_s(self.rig, edge.truth_index)),
                                  pixels)
            frame.pixels = pixels
            frame._pool = self._pool
        with self._cond:
            if len(self._buffers) >= self.config.buffer_count:
                self.counts["buffer_overflow"] += 1
                frame.release()
                return
            self._buffers.append(frame)
            self._cond.notify()


class TruthRenderer:
    """Renders what the simulated cameras of a rig show for a pulse (to check recordings),
    pre-rendered loop or not (:func:`sim_pose_time_s`)."""

    def __init__(self, rig: RigConfig) -> None:
        self.rig = rig
        self._motion = sim_world.AnimalMotion()
        views = rig_cameras(rig)
        self._renderers = {c.name: sim_world.ViewRenderer(views[c.name], channels=c.channels)
                           for c in rig.cameras}

    def image(self, camera: str, trigger_index: int) -> np.ndarray:
        cam = self.rig.camera(camera)
        shape: tuple[int, ...] = (cam.height, cam.width) + ((3,) if cam.channels == 3 else ())
        out = np.zeros(shape, np.uint8)
        pose = self._motion.pose_at(sim_pose_time_s(self.rig, trigger_index))
        self._renderers[camera].render(pose, out)
        return out


def _available_memory_bytes() -> int | None:
    """The host's available memory (Linux ``MemAvailable``), or None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
