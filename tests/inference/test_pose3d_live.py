"""Live 3D in the pose engine: every Pose2D is followed by a Pose3D triangulated with the rig's
calibration, filtered when asked, and written in anipose's CSV layout."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from rigstream import protocol
from rigstream.calibration import Calibration
from rigstream.inference.anipose_csv import read_points3d_csv
from rigstream.inference.engines import Engine
from rigstream.inference.pose_engine import PoseEngineNode, PoseSetupError, plan_pose
from rigstream.protocol import FrameHeader, FrameSetHeader, Pose2D, Pose3D
from rigstream.transport import Publisher, subscriber
from tests.conftest import FakeCameras, run_in_thread, small_rig
from tests.inference.conftest import make_model_dir

KP = ["kp0", "kp1", "kp2"]
T0_NS = time.monotonic_ns()  # pulses 10 ms apart from here (100 Hz)
# One 3D point per keypoint (mm, the simulated arena's frame), moving 1 mm per trigger in x.
BASE_MM = np.array([[0.0, 0.0, 40.0], [30.0, -20.0, 60.0], [-40.0, 25.0, 20.0]])


def truth_at(n: int) -> np.ndarray:
    return BASE_MM + np.array([float(n), 0.0, 0.0])


class ProjectingEngine(Engine):
    """Answers the exact projection of truth_at(n) into each camera, n read from the pixels."""

    name = "projecting"

    def __init__(self, model, views, calibration: Calibration):
        super().__init__(model, views)
        self.cal = calibration

    def _do_infer(self, batch):
        n = round(float(batch[0].mean()))  # the frame's grey level carries n (inputs are grey levels)
        out = np.zeros(self.output_shape, np.float32)
        for v, cam in enumerate(self.cal.cameras):
            out[v, :, :2] = cam.project(truth_at(n))
        out[..., 2] = 0.95
        return out


@pytest.fixture(scope="module")
def model_64x48(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("m") / "model", height=48, width=64)


def rig_with_calibration(tmp_path: Path, model, **triangulation: Any):
    from rigstream.acquisition.sim_camera import ring_calibration

    rig = small_rig(2, 64, 48, pose={"model": str(model.folder), "keypoints": KP,
                                     "triangulation": triangulation, "sets": "assembler"})
    path = ring_calibration(rig).save(tmp_path / "calibration.toml")
    return small_rig(2, 64, 48, calibration=str(path),
                     pose={"model": str(model.folder), "keypoints": KP, "triangulation": triangulation,
                           "sets": "assembler"})  # the test plays the assembler


def pulse_ns(n: int) -> int:
    return T0_NS + n * 10_000_000


def run_node(rig, run, ctx, out: Path, sets: list[tuple[int, list[str]]],
             t_pi=pulse_ns) -> tuple[dict, list[Any]]:
    plan = plan_pose(rig)
    assert plan.triangulator is not None
    cal = plan.triangulator.calibration
    pub = Publisher(ctx, rig.address("framesets", run), hwm=1000)
    poses = subscriber(ctx, rig.address("poses", run))
    fake = FakeCameras(rig, run, ctx)  # the cameras' frame stores, read in place by the engine
    node = PoseEngineNode(rig, run, out, ctx, engine=ProjectingEngine(plan.model, 2, cal), plan=plan)
    assert pub.wait_for_subscribers(1, 5) and node.pub.wait_for_subscribers(1, 5)
    fake.wait()
    stop = threading.Event()
    thread, result = run_in_thread(lambda: node.run_forever(stop))
    for seq, (n, cams) in enumerate(sets):
        frames = []
        for c in cams:
            slot = fake.stores[c].write(n, np.full((48, 64), n, np.uint8), frame_id=n, t_camera_ns=0,
                                        t_pi_ns=-1, t_host_ns=0, flags=0)
            frames.append(FrameHeader(camera=c, seq=n, frame_id=n, trigger_index=n, t_camera_ns=0,
                                      t_host_ns=0, width=64, height=48, slot=slot))
        head = FrameSetHeader(seq=seq, trigger_index=n, t_pi_ns=t_pi(n), cameras=cams,
                              missing=[c for c in ("cam0", "cam1") if c not in cams], frames=frames)
        pub.sock.send(protocol.encode(head))
        time.sleep(0.15)  # one at a time: every set is posed
    stop.set()
    thread.join(20)
    assert not thread.is_alive()
    if "error" in result:
        raise result["error"]
    got = []
    while poses.poll(200, zmq.POLLIN):
        got.append(protocol.decode(poses.recv()))
    pub.close()
    poses.close(linger=0)
    fake.close()
    return result["value"], got


def test_every_pose2d_is_followed_by_its_pose3d(tmp_path, zctx, run_dir, model_64x48):
    rig = rig_with_calibration(tmp_path, model_64x48)
    out = tmp_path / "session"
    summary, got = run_node(rig, run_dir, zctx, out, [(n, ["cam0", "cam1"]) for n in (3, 7, 12)])
    assert [type(m).__name__ for m in got] == ["Pose2D", "Pose3D"] * 3
    for p2, p3 in zip(got[::2], got[1::2], strict=True):
        assert isinstance(p2, Pose2D) and isinstance(p3, Pose3D)
        assert p3.trigger_index == p2.trigger_index and p3.t_pi_ns == p2.t_pi_ns
        assert p3.keypoints == KP and p3.ncams == [2, 2, 2] and p3.filter == "none"
        np.testing.assert_allclose(p3.xyz, truth_at(p3.trigger_index), atol=0.05)  # float32 px in
        assert max(p3.error) < 0.01 and p3.xyz_raw is None
        assert set(p3.timing_ms) == {"triangulate", "filter"}
    s3 = summary["pose3d"]
    assert s3["framesets"] == 3 and s3["points"] == 9 and s3["stage_ms"]["triangulate"]["n"] == 3
    saved = read_points3d_csv(out / "pose3d.csv")
    assert saved.frames.tolist() == [3, 7, 12] and list(saved.keypoints) == KP
    np.testing.assert_allclose(saved.xyz[1], truth_at(7), atol=0.05)
    assert not (out / "pose3d_filtered.csv").exists()


def test_missing_view_gives_no_point_but_a_message(tmp_path, zctx, run_dir, model_64x48):
    rig = rig_with_calibration(tmp_path, model_64x48)
    out = tmp_path / "session"
    _, got = run_node(rig, run_dir, zctx, out, [(1, ["cam0"]), (2, ["cam0", "cam1"])])
    p3 = [m for m in got if isinstance(m, Pose3D)]
    assert [p.trigger_index for p in p3] == [1, 2]
    assert p3[0].ncams == [0, 0, 0] and np.isnan(p3[0].xyz).all() and np.isnan(p3[0].error).all()
    assert p3[1].ncams == [2, 2, 2]
    saved = read_points3d_csv(out / "pose3d.csv")
    assert np.isnan(saved.xyz[0]).all() and saved.ncams[0].tolist() == [0, 0, 0]


def test_filter_and_prediction(tmp_path, zctx, run_dir, model_64x48):
    rig = rig_with_calibration(tmp_path, model_64x48, filter="kalman", predict_ms=20.0)
    out = tmp_path / "session"
    _, got = run_node(rig, run_dir, zctx, out, [(n, ["cam0", "cam1"]) for n in range(0, 16)])
    p3 = [m for m in got if isinstance(m, Pose3D)]
    assert len(p3) == 16 and all(p.filter == "kalman" and p.predicted_ms == 20.0 for p in p3)
    last = p3[-1]
    np.testing.assert_allclose(last.xyz_raw, truth_at(15), atol=0.05)
    # Moving +1 mm per trigger at 100 Hz (10 mm per 10 ms): 20 ms ahead is ~2 mm further in x.
    ahead = np.array(last.xyz) - np.array(last.xyz_raw)
    assert ahead[:, 0] == pytest.approx([2.0] * 3, abs=0.6) and np.abs(ahead[:, 1:]).max() < 0.3
    assert (out / "pose3d_filtered.csv").exists()


def test_sets_without_a_pulse_time_keep_the_filter_on_the_pi_clock(tmp_path, zctx, run_dir, model_64x48):
    """Sets whose camera had no pulse time (t_pi_ns -1: the pulse message came after the camera's
    wait, on a loaded host) get the last known pulse's time plus the periods since, so the
    filter's timeline stays on one clock; a timeline that does go back restarts the filter
    instead of stopping the engine."""
    rig = rig_with_calibration(tmp_path, model_64x48, filter="kalman", predict_ms=20.0)
    sets = [(n, ["cam0", "cam1"]) for n in range(0, 16)]
    summary, got = run_node(rig, run_dir, zctx, tmp_path / "a", sets,
                            t_pi=lambda n: -1 if 5 <= n < 10 else pulse_ns(n))
    p3 = [m for m in got if isinstance(m, Pose3D)]
    assert len(p3) == 16 and summary["pose3d"]["filter_resets"] == 0
    ahead = np.array(p3[-1].xyz) - np.array(p3[-1].xyz_raw)
    assert ahead[:, 0] == pytest.approx([2.0] * 3, abs=0.6)  # the velocity survived the gap
    summary, got = run_node(rig, run_dir, zctx, tmp_path / "b", sets,
                            t_pi=lambda n: pulse_ns(n) - (10**9 if n >= 10 else 0))
    assert len([m for m in got if isinstance(m, Pose3D)]) == 16
    assert summary["pose3d"]["filter_resets"] == 1


def test_calibration_that_misses_a_camera_is_a_setup_error(tmp_path, model_64x48):
    from rigstream.acquisition.sim_world import ring_of_cameras

    Calibration(tuple(ring_of_cameras(["cam0", "other"], 64, 48))).save(tmp_path / "c.toml")
    rig = small_rig(2, 64, 48, calibration=str(tmp_path / "c.toml"),
                    pose={"model": str(model_64x48.folder), "keypoints": KP})
    with pytest.raises(PoseSetupError, match=r"calibration: .*no camera named 'cam1'"):
        plan_pose(rig)
