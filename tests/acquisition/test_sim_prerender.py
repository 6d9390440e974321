"""Pre-rendered simulated cameras (``CameraConfig.prerender_s``).

A pre-rendered camera renders a loop of the animal once when configured and hands over each
frame as a read-only view of its slot, as a real camera's driver hands over a buffer. Its
frames must be exactly what :class:`TruthRenderer` says the simulation showed for the pulse
(past the loop's end too: the animal replays the loop), its faults exactly those of a camera
that renders every frame, and everything that computes truth by trigger index goes through
:func:`sim_pose_time_s`. Cameras are driven on real ZeroMQ: edges published on their simulated
trigger line, and the sim pin backend's trigger daemon through the primary's strobe.
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import yaml
import zmq

from rigstream import transport
from rigstream.acquisition import sim_camera, sim_world
from rigstream.acquisition.camera import CameraError, Frame
from rigstream.acquisition.sim_camera import (
    SimCamera,
    TruthRenderer,
    rig_cameras,
    sim_loop_frames,
    sim_pose_time_s,
    sim_pose_times_s,
    trigger_line,
)
from rigstream.app.demo import demo_rig
from rigstream.config import CameraConfig, ConfigError, RigConfig, parse_rig
from rigstream.firmware.backends import make_pins
from rigstream.firmware.trigger import TriggerDaemon
from rigstream.inference.anipose_csv import write_points3d_csv
from rigstream.inference.simdata import pose2d_errors, pose3d_errors
from rigstream.protocol import Command, Edge
from rigstream.transport import Publisher
from tests.acquisition import test_camera_node
from tests.conftest import small_rig

RATE_HZ = 200
LOOP_S = 0.1
LOOP = 20
"""Frames in a LOOP_S loop at RATE_HZ."""


def prerender_rig(prerender_s: float | None = LOOP_S, cameras: int = 2,
                  faults: dict[str, Any] | None = None, **camera: Any) -> RigConfig:
    """``small_rig`` at RATE_HZ, every camera pre-rendering ``prerender_s`` (None: rendering
    every frame), with ``faults`` (FaultConfig fields) and other CameraConfig fields."""
    doc = msgspec.to_builtins(small_rig(cameras, trigger={"rate_hz": RATE_HZ}))
    for cam in doc["cameras"]:
        cam.update(camera, prerender_s=prerender_s, faults=faults or {})
    return msgspec.convert(doc, type=RigConfig, strict=True)


def wait_until(what: str, predicate: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)
    return value


class DrivenCamera:
    """One acquiring SimCamera and a publisher on its simulated trigger line."""

    def __init__(self, rig: RigConfig, run: str, ctx: zmq.Context, name: str = "cam0") -> None:
        self.rig = rig
        self.camera = SimCamera(rig.camera(name), rig, run, ctx)
        self.line = trigger_line(rig, self.camera.config)
        self.pub = Publisher(ctx, rig.address("sim_lines", run, line=self.line))
        self.camera.open()
        self.camera.configure()
        self.camera.start()
        assert self.pub.wait_for_subscribers(1, 5), "the camera never listened to its line"

    def pulse(self, indices: list[int]) -> None:
        for n in indices:
            t_ns = time.monotonic_ns()
            self.pub.send(Edge(line=self.line, level=1, t_ns=t_ns, truth_index=n))
            self.pub.send(Edge(line=self.line, level=0, t_ns=t_ns + 100_000, truth_index=n))

    def frames(self, count: int, timeout_s: float = 10.0) -> list[Frame]:
        """The next ``count`` frames the camera hands over (fewer if none comes in time)."""
        got: list[Frame] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            frame = self.camera.get_frame(0.2)
            if frame is not None:
                got.append(frame)
        return got

    def close(self) -> None:
        self.camera.close()
        self.pub.close()


@pytest.fixture
def drive(run_dir: str, zctx: zmq.Context) -> Iterator[Callable[[RigConfig], DrivenCamera]]:
    """Open a driven primary camera; one run folder each, so two may run side by side."""
    driven: list[DrivenCamera] = []

    def make(rig: RigConfig) -> DrivenCamera:
        run = Path(run_dir) / str(len(driven))
        run.mkdir()
        driven.append(DrivenCamera(rig, str(run), zctx))
        return driven[-1]

    yield make
    for d in driven:
        d.close()


# -- the mapping from trigger index to the animal's time --------------------------------------


def test_the_pose_time_is_the_pulse_time_or_its_place_in_the_loop() -> None:
    looped, plain = prerender_rig(), prerender_rig(None)
    assert sim_loop_frames(looped) == LOOP and sim_loop_frames(plain) is None
    assert sim_loop_frames(prerender_rig(0.0999)) == LOOP  # a part frame counts whole
    for n in (0, 1, LOOP - 1, LOOP, LOOP + 7, 5 * LOOP + 3):
        assert sim_pose_time_s(plain, n) == n / RATE_HZ
        assert sim_pose_time_s(looped, n) == (n % LOOP) / RATE_HZ
    indices = np.arange(3 * LOOP + 5)
    for rig in (looped, plain):
        np.testing.assert_array_equal(sim_pose_times_s(rig, indices),
                                      [sim_pose_time_s(rig, int(n)) for n in indices])


# -- frames ------------------------------------------------------------------------------------


def test_a_prerendered_camera_hands_over_the_truth_of_each_pulse_without_a_copy(
        drive: Callable[[RigConfig], DrivenCamera]) -> None:
    rig = prerender_rig()
    cam = drive(rig)
    loop = cam.camera._loop
    assert loop is not None and loop.shape == (LOOP, 48, 64) and loop.dtype == np.uint8
    assert not loop.flags.writeable
    assert cam.camera._pool is None  # no pool: nothing is rendered or copied per frame
    indices = [0, 1, 7, LOOP - 1, LOOP, LOOP + 7, 5 * LOOP + 3, 1]
    cam.pulse(indices)
    frames = cam.frames(len(indices))
    assert [f.truth_index for f in frames] == indices
    assert [f.frame_id for f in frames] == list(range(len(indices)))
    truth = TruthRenderer(rig)
    for f in frames:
        assert f.pixels is not None and not f.incomplete
        np.testing.assert_array_equal(f.pixels, truth.image("cam0", f.truth_index))
        assert not f.pixels.flags.writeable and f.pixels.flags.c_contiguous
        assert np.shares_memory(f.pixels, loop) and f._pool is None
    by_index = {f.truth_index: f for f in frames}
    np.testing.assert_array_equal(by_index[LOOP + 7].pixels, by_index[7].pixels)  # the wrap
    assert np.shares_memory(by_index[LOOP + 7].pixels, by_index[7].pixels)
    before = loop.copy()
    for f in frames:
        f.release(tracker=object())  # a view has no pool: releasing (with a tracker) is a no-op
        f.release()
    np.testing.assert_array_equal(loop, before)
    # Inside the loop the animal is where it is without one; past it, back at the start.
    plain = TruthRenderer(prerender_rig(None))
    np.testing.assert_array_equal(by_index[7].pixels, plain.image("cam0", 7))
    assert not np.array_equal(by_index[5 * LOOP + 3].pixels, plain.image("cam0", 5 * LOOP + 3))


def test_faults_are_injected_exactly_as_without_prerendering(
        drive: Callable[[RigConfig], DrivenCamera]) -> None:
    faults = {"drop_rate": 0.15, "incomplete_rate": 0.1, "skip_trigger_rate": 0.1,
              "jitter_us": 5.0, "seed": 4}
    indices = list(range(3 * LOOP))
    outcomes = {}
    for prerender_s in (LOOP_S, None):
        rig = prerender_rig(prerender_s, faults=faults, buffer_count=256)
        cam = drive(rig)
        cam.pulse(indices)
        wait_until("every edge exposed or missed", lambda c=cam: sum(
            c.camera.counts[k] for k in ("exposed", "triggers_missed")) == len(indices))
        counts = cam.camera.counts
        frames = cam.frames(len(indices) - counts["triggers_missed"] - counts["dropped_injected"])
        truth = TruthRenderer(rig)
        for f in frames:
            if f.incomplete:
                assert f.pixels is None
            else:
                np.testing.assert_array_equal(f.pixels, truth.image("cam0", f.truth_index))
        outcomes[prerender_s] = (dict(counts), [(f.frame_id, f.truth_index, f.incomplete)
                                                for f in frames])
    counts, delivered = outcomes[LOOP_S]
    for kind in ("triggers_missed", "dropped_injected", "incomplete_injected"):
        assert counts.get(kind, 0) > 0, f"no {kind}; pick another seed"
    assert outcomes[LOOP_S] == outcomes[None]
    assert any(n >= LOOP for _, n, incomplete in delivered if not incomplete)


def test_a_stall_fills_the_stream_buffers_and_overflows_as_without_prerendering(
        drive: Callable[[RigConfig], DrivenCamera]) -> None:
    faults = {"stall_at_s": 0.0, "stall_s": 1.5}
    indices = list(range(2 * LOOP))
    outcomes = {}
    for prerender_s in (LOOP_S, None):
        rig = prerender_rig(prerender_s, faults=faults, buffer_count=8)
        cam = drive(rig)
        cam.pulse(indices)
        wait_until("the overflow", lambda c=cam: c.camera.counts["buffer_overflow"] == 2 * LOOP - 8)
        assert cam.camera.get_frame(0.0) is None, "stalled: nothing handed over yet"
        frames = cam.frames(8)
        assert cam.camera.get_frame(0.2) is None
        truth = TruthRenderer(rig)
        for f in frames:
            np.testing.assert_array_equal(f.pixels, truth.image("cam0", f.truth_index))
        outcomes[prerender_s] = (dict(cam.camera.counts), [f.truth_index for f in frames])
    assert outcomes[LOOP_S] == outcomes[None]
    assert outcomes[LOOP_S][1] == list(range(8))


def test_the_trigger_daemon_drives_a_prerendered_primary_and_its_strobed_secondary(
        run_dir: str, zctx: zmq.Context) -> None:
    """SimPins -> trigger line -> primary -> strobe -> secondary, 2.5 loops of pulses."""
    rig = prerender_rig()
    pulses = 2 * LOOP + LOOP // 2
    pins = make_pins(rig, run_dir, zctx)
    daemon = TriggerDaemon(rig, pins, zctx, run_dir)
    serving = threading.Event()
    server = threading.Thread(target=daemon.serve, args=(serving,), daemon=True)
    server.start()
    cams = {c.name: SimCamera(c, rig, run_dir, zctx) for c in rig.cameras}
    control = rig.address("trigger_control", run_dir)

    def trigger(cmd: str, **args: Any) -> dict[str, Any]:
        reply = transport.request(zctx, control, Command(cmd=cmd, args=args))
        assert reply.ok, reply.error
        return reply.data

    try:
        for cam in cams.values():
            cam.open()
            cam.configure()
            cam.start()
        wait_until("the secondary on the primary's strobe",
                   lambda: cams["cam0"].strobe_subscribers >= 1)
        wait_until("the primary on the trigger line",
                   lambda: trigger("status")["line_subscribers"].get("trigger", 0) >= 1)
        trigger("start", max_pulses=pulses)
        assert daemon.wait(10), "the pulse train did not end"
        truth = TruthRenderer(rig)
        for name, cam in cams.items():
            frames = []
            while len(frames) < pulses and (frame := cam.get_frame(2.0)) is not None:
                frames.append(frame)
            assert [f.truth_index for f in frames] == list(range(pulses)), name
            for f in frames:
                np.testing.assert_array_equal(f.pixels, truth.image(name, f.truth_index))
    finally:
        for cam in cams.values():
            cam.close()
        serving.set()
        server.join(5)
        daemon.close()
        pins.close()


def test_a_loop_larger_than_the_memory_is_refused_before_rendering(
        run_dir: str, zctx: zmq.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_camera, "_available_memory_bytes", lambda: 1_000_000)
    rig = prerender_rig(60.0)
    cam = SimCamera(rig.cameras[0], rig, run_dir, zctx)
    try:
        cam.open()
        with pytest.raises(CameraError, match=r"camera cam0: a 60 s pre-rendered loop .* shorten "
                                              r"prerender_s"):
            cam.configure()
    finally:
        cam.close()


class TestPrerenderedSimCameraContract(test_camera_node.TestSimCameraContract):
    """The Camera contract, with the loop: open, configure (renders once), restart, reopen
    (the simulated camera's fixtures, on a pre-rendering rig)."""

    @pytest.fixture
    def rig(self) -> RigConfig:
        return prerender_rig(cameras=1)


# -- truth by trigger index elsewhere: the live pose's errors ---------------------------------


def test_pose_errors_are_measured_against_the_looped_animal(tmp_path: Path) -> None:
    rig = prerender_rig()
    motion = sim_world.AnimalMotion()
    views = rig_cameras(rig)
    indices = np.arange(0, 10 * LOOP, 7)
    poses = np.stack([motion.pose_at(sim_pose_time_s(rig, int(n))) for n in indices])
    keypoints = list(sim_world.KEYPOINTS)
    pose2d = tmp_path / "pose2d.csv"
    with open(pose2d, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["trigger_index", "t_pi_ns", "t_pose_ns", "camera"]
                     + [f"{k}_{c}" for k in keypoints for c in ("x", "y", "likelihood")])
        for n, pose in zip(indices, poses, strict=True):
            for cam, view in views.items():
                px = view.project(pose)
                out.writerow([n, 0, 0, cam] + [v for x, y in px for v in (x, y, 1.0)])
    err2d = pose2d_errors(rig, pose2d)
    assert err2d["framesets"] == len(indices)
    assert err2d["median_px"] == pytest.approx(0, abs=1e-6)
    assert err2d["p95_px"] == pytest.approx(0, abs=1e-6)
    assert pose2d_errors(prerender_rig(None), pose2d)["p95_px"] > 1  # truth without the loop

    k = len(keypoints)
    pose3d = write_points3d_csv(tmp_path / "pose3d.csv", keypoints, indices, poses,
                                np.zeros((len(indices), k)), np.full((len(indices), k), 2),
                                np.ones((len(indices), k)))
    err3d = pose3d_errors(rig, pose3d)
    assert err3d["framesets"] == len(indices)
    assert err3d["median_mm"] == pytest.approx(0, abs=1e-3)
    assert err3d["p95_mm"] == pytest.approx(0, abs=1e-3)
    assert pose3d_errors(prerender_rig(None), pose3d)["p95_mm"] > 1


# -- configuration ------------------------------------------------------------------------------


def rig_doc() -> dict[str, Any]:
    return msgspec.to_builtins(prerender_rig(None))


def error_for(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_rig(yaml.safe_dump(doc), "rig.yaml")
    message = str(info.value)
    assert "\n" not in message, "a config error is one line"
    return message


def test_prerender_s_parses_and_defaults_to_rendering_every_frame() -> None:
    doc = rig_doc()
    assert parse_rig(yaml.safe_dump(doc), "rig.yaml").cameras[0].prerender_s is None
    for cam in doc["cameras"]:
        cam["prerender_s"] = 2
    rig = parse_rig(yaml.safe_dump(doc), "rig.yaml")
    assert [c.prerender_s for c in rig.cameras] == [2.0, 2.0]
    assert sim_loop_frames(rig) == 2 * RATE_HZ


def test_every_simulated_camera_must_prerender_the_same_loop() -> None:
    doc = rig_doc()
    doc["cameras"][0]["prerender_s"] = 2
    assert error_for(doc) == ("rig.yaml: prerender_s must be the same for every simulated camera "
                              "(they show one animal), got cam0 2, cam1 unset")
    doc["cameras"][1]["prerender_s"] = 1.5
    assert "got cam0 2, cam1 1.5" in error_for(doc)


def test_prerender_s_must_be_positive_and_only_on_simulated_cameras() -> None:
    for bad in (0, -1):
        doc = rig_doc()
        for cam in doc["cameras"]:
            cam["prerender_s"] = bad
        assert error_for(doc) == f"rig.yaml: cameras[0].prerender_s: expected float > 0.0, got {bad}"
    doc = rig_doc()
    doc["cameras"][1].update(backend="pyspin", prerender_s=2)
    assert error_for(doc) == ("rig.yaml: cameras[1]: prerender_s is for simulated cameras only "
                              "(backend sim), got backend pyspin for camera cam1")
    cam = msgspec.to_builtins(prerender_rig(None).cameras[0])
    with pytest.raises(ValueError, match="prerender_s: expected a loop longer than 0 s, got 0"):
        CameraConfig(**{**cam, "faults": prerender_rig(None).cameras[0].faults, "prerender_s": 0.0})


def test_demo_rig_prerenders_every_camera_when_asked() -> None:
    base = prerender_rig(None)
    assert all(c.prerender_s is None for c in demo_rig(base, cameras=3).cameras)
    rig = demo_rig(base, cameras=3, prerender_s=1.0)
    assert [c.prerender_s for c in rig.cameras] == [1.0, 1.0, 1.0]
    assert sim_loop_frames(rig) == RATE_HZ
