"""The live pose engine: latest-wins over real ZeroMQ frame sets, one batch per set, keypoints
back in frame pixels, malformed input survived, bad setups refused before anything runs."""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any

import msgspec
import numpy as np
import pytest
import zmq

from rigstream import framestore, protocol
from rigstream.config import RigConfig
from rigstream.inference.engines import Engine
from rigstream.inference.pose_engine import PoseEngineNode, PoseSetupError, plan_pose
from rigstream.protocol import FrameHeader, FrameSetHeader, Pose2D
from rigstream.transport import Publisher, subscriber
from tests.conftest import FakeCameras, run_in_thread, small_rig
from tests.inference.conftest import make_model_dir

KP = ["kp0", "kp1", "kp2"]


@pytest.fixture(scope="module")
def model_64x48(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("m") / "model", height=48, width=64)


def pose_rig(model, **pose: Any) -> RigConfig:
    """The tiny rig with the test model; frame sets from an assembler (the harness plays it)
    unless ``sets="direct"``."""
    return small_rig(2, 64, 48, pose={"model": str(model.folder), "keypoints": KP,
                                      "sets": "assembler", **pose})


class SlowFixedEngine(Engine):
    """Answers (10 + view, 20 + keypoint, 0.9) after ``delay_s``; records the batches."""

    name = "fake"

    def __init__(self, model, views, delay_s=0.0):
        super().__init__(model, views)
        self.delay_s = delay_s
        self.batches: list[np.ndarray] = []

    def _do_infer(self, batch):
        self.batches.append(batch.copy())
        time.sleep(self.delay_s)
        v, k = self.output_shape[:2]
        out = np.zeros(self.output_shape, np.float32)
        out[..., 0] = 10 + np.arange(v)[:, None]
        out[..., 1] = 20 + np.arange(k)[None, :]
        out[..., 2] = 0.9
        return out


def value(n: int, view: int) -> int:
    """The pixel value of frame ``n`` of camera ``view`` in these tests."""
    return (n + 40 * view) % 256


class Harness:
    """FakeCameras (real frame stores) and a frame-set publisher standing in for the assembler,
    a PoseEngineNode in a thread, and a SUB on its poses."""

    def __init__(self, rig, run, ctx, engine_delay_s=0.0, out=None):
        self.rig = rig
        self.cameras = [c.name for c in rig.cameras]
        self.fake = FakeCameras(rig, run, ctx)
        self.pub = Publisher(ctx, rig.address("framesets", run), hwm=10_000)
        self.poses = subscriber(ctx, rig.address("poses", run))
        plan = plan_pose(rig)
        self.engine = SlowFixedEngine(plan.model, len(rig.cameras), engine_delay_s)
        self.node = PoseEngineNode(rig, run, out, ctx, engine=self.engine, plan=plan)
        if self.node.direct is None:
            assert self.pub.wait_for_subscribers(1, 5)
        assert self.node.pub.wait_for_subscribers(1, 5)
        self.fake.wait()  # the engine opened every store
        self.stop = threading.Event()
        self.thread, self.result = run_in_thread(lambda: self.node.run_forever(self.stop))
        self.seq = 0

    def write(self, camera: str, n: int) -> FrameHeader:
        """Frame ``n`` of ``camera`` into its store (every pixel ``value(n, view)``)."""
        view = self.cameras.index(camera)
        slot = self.fake.stores[camera].write(n, np.full((48, 64), value(n, view), np.uint8), frame_id=n,
                                              t_camera_ns=0, t_pi_ns=-1, t_host_ns=0, flags=0)
        return FrameHeader(camera=camera, seq=n, frame_id=n, trigger_index=n, t_camera_ns=0, t_host_ns=0,
                           width=64, height=48, slot=slot)

    def send_set(self, n: int, cameras: list[str] | None = None, write: bool = True) -> None:
        """Frame set ``n`` of ``cameras`` (all by default), their frames written first unless
        ``write`` is False (then they must be in the stores already)."""
        cams = cameras if cameras is not None else self.cameras
        frames = [self.write(c, n) if write else FrameHeader(
            camera=c, seq=n, frame_id=n, trigger_index=n, t_camera_ns=0, t_host_ns=0, width=64, height=48,
            slot=n % self.fake.stores[c].capacity) for c in cams]
        head = FrameSetHeader(seq=self.seq, trigger_index=n, t_pi_ns=time.monotonic_ns(), cameras=cams,
                              missing=[c for c in self.cameras if c not in cams], frames=frames)
        self.pub.sock.send(protocol.encode(head))
        self.seq += 1

    def posed(self, count: int, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.node.posed < count:
            assert time.monotonic() < deadline, f"{self.node.posed} of {count} frame sets posed"
            time.sleep(0.01)

    def finish(self) -> tuple[dict[str, Any], list[Pose2D]]:
        self.stop.set()
        self.thread.join(20)
        assert not self.thread.is_alive()
        if "error" in self.result:
            raise self.result["error"]
        got = []
        while self.poses.poll(200, zmq.POLLIN):
            got.append(protocol.decode(self.poses.recv(), Pose2D))
        return self.result["value"], got

    def close(self) -> None:
        if self.thread.is_alive():
            self.stop.set()
            self.thread.join(20)
        self.pub.close()
        self.poses.close(linger=0)
        self.fake.close()


@pytest.fixture
def harness(zctx, run_dir, model_64x48):
    made = []

    def make(**kw):
        h = Harness(pose_rig(model_64x48, **kw.pop("pose", {})), run_dir, zctx, **kw)
        made.append(h)
        return h
    yield make
    for h in made:
        h.close()


def test_latest_wins_poses_the_newest_set_and_counts_the_rest(harness):
    h = harness(engine_delay_s=0.03)
    for n in range(60):
        h.send_set(n)
        time.sleep(0.002)
    summary, poses = h.finish()
    indices = [p.trigger_index for p in poses]
    assert indices == sorted(set(indices)), "a frame set was posed twice or out of order"
    assert 2 <= len(poses) < 60, "with a 30 ms engine and a set every 2 ms most sets are skipped"
    assert indices[-1] == 59, "the newest set is always posed"
    assert summary["framesets_posed"] + summary["framesets_skipped"] == 60
    assert sum(p.skipped for p in poses) == summary["framesets_skipped"]
    assert summary["out_of_order"] == 0
    for p in poses:  # the batch really held this set's pixels, both views
        assert set(p.views) == {"cam0", "cam1"}
        assert set(p.timing_ms) == {"wait", "preprocess", "infer", "postprocess"}
    assert len(h.engine.batches) == len(poses)
    last = h.engine.batches[-1]
    assert last.shape == (2, 1, 48, 64)  # read in place from the stores' slots
    assert last[0].min() == last[0].max() == value(59, 0) and last[1].min() == last[1].max() == value(59, 1)
    assert summary["overwritten"] == {"cam0": 0, "cam1": 0}


def test_tables_reach_the_disk_every_flush_interval_while_the_engine_runs(
        zctx, run_dir, model_64x48, tmp_path):
    """What a SIGKILL would leave: the rows of a running engine, read by a separate open, are
    on disk one flush interval after they were written, firings.csv's included."""
    seen = {"name": "seen", "actions": [{"event": {}}],
            "when": {"confidence_above": {"keypoint": "kp0", "min_score": 0.5, "camera": "cam0"}}}
    rig = small_rig(2, 64, 48, pose={"model": str(model_64x48.folder), "keypoints": KP, "sets": "assembler"},
                    rules=[seen], recording={"flush_interval_s": 0.05})
    out = tmp_path / "session"
    h = Harness(rig, run_dir, zctx, out=out)
    try:
        h.send_set(0)
        h.posed(1)

        def lines(name: str) -> int:
            with open(out / name, newline="") as f:
                return len(f.read().splitlines())
        deadline = time.monotonic() + 5
        want = {"pose2d.csv": 3, "pose_timing.csv": 2, "firings.csv": 2}  # header + rows
        while {n: lines(n) for n in want} != want:
            assert time.monotonic() < deadline, {n: lines(n) for n in want}
            time.sleep(0.02)
        assert h.thread.is_alive(), "the rows must be on disk before the engine closes its files"
    finally:
        h.close()


def test_keypoints_return_in_each_cameras_frame_pixels(harness):
    h = harness(pose={"crops": {"cam1": [8, 4, 32, 24]}})  # cam1: a quarter of its frame, x2
    h.send_set(0)
    time.sleep(0.3)
    _, poses = h.finish()
    (p,) = poses
    cam0 = np.array(p.views["cam0"])
    cam1 = np.array(p.views["cam1"])
    assert cam0[:, :2].tolist() == [[10, 20], [10, 21], [10, 22]]  # identity: model px = frame px
    # cam1: x = 8 + (11 + 0.5) / 2 - 0.5, y = 4 + (20 + k + 0.5) / 2 - 0.5
    assert cam1[:, :2] == pytest.approx(np.array([[13.25, 13.75], [13.25, 14.25], [13.25, 14.75]]))
    assert cam1[:, 2] == pytest.approx([0.9] * 3)
    assert p.keypoints == KP and p.model == "tiny"


def test_missing_camera_and_malformed_messages_do_not_stop_the_engine(harness):
    h = harness()
    h.send_set(0, cameras=["cam0"])
    time.sleep(0.2)
    for bad in ([b"\xc1garbage"], [protocol.encode(FrameSetHeader(seq=99, trigger_index=5, t_pi_ns=0,
                                                                  cameras=["cam0"]))],
                [msgspec.msgpack.encode({"type": "frameset", "v": 7})]):
        h.pub.sock.send_multipart(bad)
    time.sleep(0.2)
    h.send_set(1)
    time.sleep(0.3)
    summary, poses = h.finish()
    assert [p.trigger_index for p in poses] == [0, 1]
    assert poses[0].missing == ["cam1"] and list(poses[0].views) == ["cam0"]
    assert sum(summary["malformed"].values()) == 3


def test_bad_setups_are_refused_before_anything_runs(model_64x48, tmp_path):
    wrong = small_rig(2, 64, 48, pose={"model": str(model_64x48.folder),
                                       "keypoints": ["snout", "kp1", "kp2"]})
    with pytest.raises(PoseSetupError, match=r"pose.keypoints: the rig file expects .*rig only: \['snout'\]"):
        plan_pose(wrong)
    wide = small_rig(2, 64, 36, pose={"model": str(model_64x48.folder)})
    with pytest.raises(PoseSetupError, match=r"camera cam0: the model takes 64x48 .* gives 64x36"):
        plan_pose(wide)
    broken = tmp_path / "broken"
    shutil.copytree(model_64x48.folder, broken)
    (broken / "model.onnx").write_bytes(b"not onnx at all")
    with pytest.raises(PoseSetupError, match=r"broken/model\.onnx: file does not match the sha256"):
        plan_pose(small_rig(2, 64, 48, pose={"model": str(broken)}))
    with pytest.raises(PoseSetupError, match=r"pose.model: .*nowhere: model folder not found"):
        plan_pose(small_rig(2, 64, 48, pose={"model": str(tmp_path / "nowhere")}))


def test_rig_check_and_demo_print_the_setup_error_and_exit_2(model_64x48, tmp_path, capsys):
    import yaml

    from rigstream.app.cli import main

    doc = msgspec.to_builtins(small_rig(2, 64, 36))
    doc["pose"] = {"model": "model", "keypoints": KP}
    shutil.copytree(model_64x48.folder, tmp_path / "model")  # relative to the rig file
    rig_file = tmp_path / "rig.yaml"
    rig_file.write_text(yaml.safe_dump(doc))
    assert main(["check", "--config", str(rig_file)]) == 2
    assert "the model takes 64x48" in capsys.readouterr().err
    assert main(["demo", "--config", str(rig_file), "--seconds", "1", "--out", str(tmp_path / "s")]) == 2
    assert "the model takes 64x48" in capsys.readouterr().err
    assert not (tmp_path / "s" / "logs").exists(), "no component may start with a bad pose setup"


class Overwriting:
    """A view transform that lets the camera's writer lap the ring right after the engine read
    the view's pixels (as a camera a whole ring ahead of a stalled engine would)."""

    def __init__(self, inner, hook):
        self.inner = inner
        self.hook = hook

    def apply(self, frame, out):
        self.inner.apply(frame, out)
        self.hook()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_views_overwritten_before_the_engine_read_them_are_posed_missing_and_counted(harness):
    h = harness()
    cap = h.rig.store_frames()
    h.send_set(0)
    h.posed(1)

    h.write("cam0", 1)
    h.write("cam1", 1)
    h.write("cam1", 1 + cap)  # cam1's slot of frame 1 now holds frame 1 + cap
    h.send_set(1, write=False)
    h.posed(2)

    n = 2 + cap  # cam0's frame is overwritten while the engine reads it
    h.write("cam0", n)
    h.write("cam1", n)
    torn = h.node.plan.transforms[0]
    h.node.plan.transforms[0] = Overwriting(torn, lambda: h.write("cam0", n + cap))
    h.send_set(n, write=False)
    h.posed(3)
    h.node.plan.transforms[0] = torn

    h.send_set(n + cap + 1)
    h.posed(4)
    summary, poses = h.finish()

    assert [(p.trigger_index, p.missing, sorted(p.views)) for p in poses] == [
        (0, [], ["cam0", "cam1"]), (1, ["cam1"], ["cam0"]), (n, ["cam0"], ["cam1"]),
        (n + cap + 1, [], ["cam0", "cam1"])]
    assert summary["overwritten"] == {"cam0": 1, "cam1": 1}
    assert summary["framesets_posed"] == 4 and summary["malformed"] == {}
    batches = h.engine.batches
    assert batches[1][0].min() == batches[1][0].max() == value(1, 0)  # the view that was there
    assert batches[2][1].min() == batches[2][1].max() == value(n, 1)
    assert batches[3][0].max() == value(n + cap + 1, 0) and batches[3][1].min() == value(n + cap + 1, 1)


@pytest.mark.parametrize("futex", [True, False], ids=["futex", "headers"])
def test_direct_sets_are_the_newest_index_every_live_camera_has_written(harness, futex, monkeypatch):
    """``pose.sets: direct``: no assembler message; the engine poses the newest index both
    stores hold, a drop notice makes its camera missing, and a camera that went silent holds
    the others back for one deadline only; woken by the stores' futexes, or where there are
    none, by the headers (here: the wait's timeout, these writes publish none)."""
    if futex and framestore._syscall is None:
        pytest.skip("no futex on this host")
    if not futex:
        monkeypatch.setattr(framestore, "_syscall", None)
    h = harness(pose={"sets": "direct"})
    for n in range(10):
        h.write("cam0", n)
    for n in range(8):
        h.write("cam1", n)
    h.posed(1)
    time.sleep(0.1)
    assert h.node.last_index == 7  # cam1 has written up to 7 only
    for n in (8, 9):
        h.write("cam1", n)
    h.posed(2)
    h.fake.stores["cam1"].write(10, None, frame_id=10, t_camera_ns=0, t_pi_ns=-1, t_host_ns=0,
                                flags=protocol.FLAG_DROPPED)
    h.write("cam0", 10)
    h.posed(3)
    deadline_s = h.rig.transport.frameset_deadline_ms / 1000
    t_silent = time.monotonic()
    for n in range(11, 21):  # cam1 is silent from here on
        h.write("cam0", n)
    h.posed(4, timeout_s=5 + deadline_s)
    waited = time.monotonic() - t_silent
    summary, poses = h.finish()
    assert [(p.trigger_index, p.missing) for p in poses] == [
        (7, []), (9, []), (10, ["cam1"]), (20, ["cam1"])]
    assert waited >= deadline_s * 0.9
    assert summary["framesets_posed"] == 4 and summary["malformed"] == {}
    last = h.engine.batches[-1]
    assert last[0].min() == last[0].max() == value(20, 0)
    assert h.engine.batches[0][1].min() == value(7, 1)  # read in place from cam1's slot
