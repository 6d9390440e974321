"""Tests for rigstream.inference.nwb_files: a hand-made session folder written as one NWB file,
checked with pynwb's validator and read back through pynwb / ndx-pose, on the Pi's clock and on a
neural recorder's; the live CSVs exported as they are; bad input refused with nothing left behind."""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib

from rigstream.acquisition.sim_world import KEYPOINTS, SKELETON
from rigstream.calibration import CalibratedCamera, Calibration
from rigstream.inference.anipose_csv import read_points3d_csv, write_points3d_csv
from rigstream.inference.nwb_files import (
    NWB_INSTALL,
    NwbExportError,
    Pose2DSeries,
    Pose3DSeries,
    export_session_nwb,
    read_nwb_pose,
    write_session_nwb,
)
from rigstream.inference.nwb_session import session_skeleton
from rigstream.sync.session_align import align_session, pi_to_neural
from rigstream.sync.sim_recorder import sync_train

pynwb = pytest.importorskip("pynwb")
pytest.importorskip("ndx_pose")

KP = KEYPOINTS[:4]
"""The session's keypoints: the simulated animal's first four (fewer series: faster files)."""
EDGES = [(a, b) for a, b in SKELETON if a in KP and b in KP]
K = len(KP)
T0_NS = 5_000_000_000_000  # the Pi's monotonic clock some 83 min after boot
PERIOD_NS = 10_000_000  # 100 Hz trigger
N_TRIGGERS = 12
CAMERAS = ("cam0", "cam1")
DROPPED = 4
"""cam1 dropped trigger 4: no video frame, no pose; trigger n > 4 is its video frame n - 1."""
POSED = (0, 2, 4, 5, 8, 11)
TRIANGULATED = (0, 2, 5, 8, 11)
TTL_NS = (T0_NS + 3 * PERIOD_NS + 4_500_000, T0_NS + 8 * PERIOD_NS + 5_250_000)
TTL0_FALL_NS = TTL_NS[0] + 10_000_123  # the second TTL's fall was never logged
RATE_HZ = 30_000.0


def t_camera(n: int | np.ndarray) -> np.ndarray:
    return T0_NS + np.asarray(n, dtype=np.int64) * PERIOD_NS


def recorder_samples(t_ns: np.ndarray) -> np.ndarray:
    """The simulated recorder's clock: 30 kHz running 20 ppm fast, 12345 samples in at T0."""
    return 12_345.0 + (np.asarray(t_ns, dtype=np.int64) - T0_NS) / 1e9 * RATE_HZ * (1 + 20e-6)


def pose_value(cam: str, n: int, k: int) -> tuple[float, float, float]:
    """Distinct x, y, likelihood per camera, trigger and keypoint; NaN for one missing keypoint."""
    if cam == "cam0" and n == 5 and k == 1:
        return (np.nan, np.nan, np.nan)
    base = 100.0 * (1 + int(cam[-1])) + 10 * n + k
    return base + 0.123456789, base + 0.987654321, 0.5 + 0.01 * n + 0.001 * k


def pose2d_truth(cam: str) -> Pose2DSeries:
    posed = [n for n in POSED if not (cam == "cam1" and n == DROPPED)]
    values = np.array([[pose_value(cam, n, k) for k in range(K)] for n in posed])
    return Pose2DSeries(trigger_index=np.array(posed), t_pi_ns=t_camera(posed), values=values)


def pose3d_truth(offset_mm: float = 0.0) -> Pose3DSeries:
    n = np.array(TRIANGULATED)[:, None]
    k = np.arange(K)[None, :]
    xyz = np.stack([10.0 * n + k + 0.5, -20.0 - n + 0.25 * k, 3.125 * k + n / 7], axis=-1) + offset_mm
    xyz[3, 2] = np.nan
    score = np.broadcast_to(0.5 + 0.01 * n + 0.001 * k, xyz.shape[:2]).copy()
    return Pose3DSeries(trigger_index=np.array(TRIANGULATED), t_pi_ns=t_camera(TRIANGULATED), xyz=xyz,
                        score=score)


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def make_session(folder: Path, *, rig: bool = True, model: str = "sim") -> Path:
    """A session as rigstream leaves it: 2 calibrated cameras, 12 triggers (cam1 dropped one), sync
    pulses, two TTLs, three firings, three events, one clip, live 2D and 3D pose of KP."""
    folder.mkdir(parents=True)
    cams = [CalibratedCamera("cam0", 640, 480, [[612.345678901, 0, 321.5], [0, 611.25, 239.75], [0, 0, 1]],
                             [-0.0756789, 0.0212345, 0.0001, -0.0002, 0.003], [1.6772, 1.6772, -0.8203],
                             [0.5, 47.361133, 1177.011862]),
            CalibratedCamera("cam1", 640, 480, [[616.95, 0, 325.3195], [0, 616.95, 236.0083], [0, 0, 1]],
                             [-0.0663605, 0.02, 0.0, 0.0], [1.6171, -1.6171, 0.8817],
                             [-1.25, 50.434, 1103.2])]
    Calibration.from_cameras(cams, units="mm", world="test arena").save(folder / "calibration.toml")
    if rig:
        (folder / "rig.yaml").write_text(
            "name: test\ncameras:\n- {name: cam0, role: primary, width: 640, height: 480, serial: SN0}\n"
            "- {name: cam1, role: secondary, width: 640, height: 480}\ntrigger: {rate_hz: 100.0}\n"
            "neural_clock: {kind: sim, name: test-ephys, units: samples, sim: {rate_hz: 30000.0}}\n")
    (folder / "summary.json").write_text(json.dumps({"pose": {"model": model}}))

    sync = T0_NS + np.round(sync_train(30.0, 0.1, 1.0, seed=3, start_s=0.05) * 1e9).astype(np.int64)
    pulses = [(int(t_camera(n)), n, "camera") for n in range(N_TRIGGERS)]
    pulses += [(int(t_camera(n)) + 100_000, n, "camera-fall") for n in range(N_TRIGGERS)]
    pulses += [(int(t), i, "sync") for i, t in enumerate(sync)]
    pulses += [(int(t) + 5_000_000, i, "sync-fall") for i, t in enumerate(sync)]
    pulses += [(TTL_NS[0], 0, "ttl"), (TTL0_FALL_NS, 0, "ttl-fall"), (TTL_NS[1], 1, "ttl")]
    write_csv(folder / "pulses.csv", ["index", "t_pi_ns", "line"],
              [[i, t, line] for t, i, line in sorted(pulses)])

    frames = []
    for n in range(N_TRIGGERS):
        frames.append(["cam0", n, n, int(t_camera(n)), n, 0])
        if n == DROPPED:
            frames.append(["cam1", -1, n, -1, -1, 1])
        else:
            frames.append(["cam1", n - (n > DROPPED), n, int(t_camera(n)), n - (n > DROPPED), 0])
    write_csv(folder / "frames.csv", ["camera", "frame_id", "trigger_index", "t_pi_ns", "video_frame",
                                      "dropped"], frames)
    (folder / "video").mkdir()
    for cam in CAMERAS:
        (folder / "video" / f"{cam}.mkv").write_bytes(b"")

    header = ["trigger_index", "t_pi_ns", "t_pose_ns", "camera"]
    header += [f"{kp}_{c}" for kp in KP for c in ("x", "y", "likelihood")]
    rows = [[2, int(t_camera(2)), 0, "cam0", *([7.0] * 3 * K)]]  # re-posed below: the last row wins
    for cam in CAMERAS:
        series = pose2d_truth(cam)
        for n, t, values in zip(series.trigger_index, series.t_pi_ns, series.values, strict=True):
            rows.append([n, t, t + 7, cam, *["" if np.isnan(v) else repr(float(v)) for v in values.ravel()]])
    write_csv(folder / "pose2d.csv", header, rows)
    for name, offset in (("pose3d.csv", 0.0), ("pose3d_filtered.csv", 1000.0)):
        p3 = pose3d_truth(offset)
        write_points3d_csv(folder / name, KP, p3.trigger_index, p3.xyz, np.zeros(p3.score.shape),
                           np.full(p3.score.shape, 2), p3.score, extra={"t_pi_ns": p3.t_pi_ns})

    write_csv(folder / "firings.csv",
              ["rule", "trigger_index", "t_pi_ns", "actions", "ttl_index", "ttl_merged", "t_ttl_ns",
               "t_ttl_fall_due_ns", "total_ms", "ttl_error"],
              [["reach", 3, int(t_camera(3)), "ttl+clip+event", 0, 0, TTL_NS[0], TTL_NS[0] + 10**7, 4.5, ""],
               ["reach", 8, int(t_camera(8)), "ttl", 1, 0, TTL_NS[1], TTL_NS[1] + 10**7, 5.25, ""],
               ["rear", 10, int(t_camera(10)), "event", "", "", "", "", 1.0, ""]])
    write_csv(folder / "events.csv", ["name", "source", "trigger_index", "t_pi_ns", "t_host_ns", "clip"],
              [["reach", "rules", 3, int(t_camera(3)), 1, "clip_001_n3"],
               ["key_r", "keyboard", "", int(t_camera(6)) + 2_000_000, 2, ""],
               ["mark", "schedule", 5, "", 3, ""]])  # sent by trigger index: that pulse's time
    clip = folder / "clips" / "clip_001_n3"
    clip.mkdir(parents=True)
    (clip / "event.json").write_text(json.dumps({"clip": 1, "start_index": 1, "end_index": 6, "events": [
        {"type": "event", "name": "reach", "source": "rules", "trigger_index": 3}]}))
    return folder


def align(folder: Path) -> None:
    """Put the session on the simulated recorder's clock, as ``rigstream align`` does."""
    sync_ns, _ = read_sync(folder)
    align_session(folder, recorder_samples(sync_ns), units="samples")


def read_sync(folder: Path) -> tuple[np.ndarray, dict[str, str]]:
    with open(folder / "pulses.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return np.array([int(r["t_pi_ns"]) for r in rows if r["line"] == "sync"]), rows[0]


def pi_seconds(t_ns: np.ndarray) -> np.ndarray:
    return (np.asarray(t_ns, dtype=np.int64) - T0_NS) / 1e9


def write(session: Path, out: Path, **changes: object) -> Path:
    args: dict[str, object] = {"keypoints": KP, "skeleton": EDGES,
                               "pose2d": {cam: pose2d_truth(cam) for cam in CAMERAS},
                               "pose3d": pose3d_truth(), "source": "hand-made pose", "model": "sim"}
    args.update(changes)
    return write_session_nwb(session, out, **args)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------


def test_written_file_validates_and_reads_back_on_the_pi_clock(tmp_path: Path) -> None:
    session = make_session(tmp_path / "session-20240102-030405", rig=False)
    out = write(session, session / "s.nwb")
    assert out == session / "s.nwb"
    assert pynwb.validate(path=str(out)) == []

    back = read_nwb_pose(out)
    assert back["clock"] == "pi" and back["time_base"].startswith("Seconds on the Raspberry Pi's clock")
    assert back["keypoints"] == list(KP) and back["skeleton"] == EDGES
    assert sorted(back["pose2d"]) == list(CAMERAS)
    for cam in CAMERAS:
        truth = pose2d_truth(cam)
        np.testing.assert_array_equal(back["pose2d"][cam]["values"], truth.values)  # NaN where NaN
        np.testing.assert_array_equal(back["pose2d"][cam]["timestamps_s"], pi_seconds(truth.t_pi_ns))
    truth3 = pose3d_truth()
    np.testing.assert_array_equal(back["pose3d"]["xyz"], truth3.xyz)
    np.testing.assert_array_equal(back["pose3d"]["score"], truth3.score)
    np.testing.assert_array_equal(back["pose3d"]["timestamps_s"], pi_seconds(truth3.t_pi_ns))

    toml = tomllib.loads((session / "calibration.toml").read_text())
    for entry in (toml["cam_0"], toml["cam_1"]):
        cam = back["cameras"][entry["name"]]
        np.testing.assert_array_equal(cam["matrix"], entry["matrix"])
        np.testing.assert_array_equal(cam["dist"], entry["distortions"])
        np.testing.assert_array_equal(cam["translation"], entry["translation"])
        rotation = Calibration.load(session / "calibration.toml").camera(entry["name"]).rotation
        np.testing.assert_array_equal(cam["rotation"], rotation)  # the Rodrigues vector as a matrix

    assert back["videos"]["cam0"]["external_file"] == "video/cam0.mkv"
    np.testing.assert_array_equal(back["videos"]["cam0"]["timestamps_s"], pi_seconds(t_camera(range(12))))
    cam1_frames = [n for n in range(N_TRIGGERS) if n != DROPPED]
    np.testing.assert_array_equal(back["videos"]["cam1"]["timestamps_s"], pi_seconds(t_camera(cam1_frames)))


def test_session_tables_are_intervals_and_events(tmp_path: Path) -> None:
    session = make_session(tmp_path / "s", rig=False)
    out = write(session, tmp_path / "out" / "s.nwb")
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert nwb.session_start_time == nwb.timestamps_reference_time  # the Pi clock's zero
        behavior = nwb.processing["behavior"]
        pose3d = behavior["pose3d"]
        assert sorted(pose3d.pose_estimations) == ["pose2d_cam0", "pose2d_cam1"]
        pe = pose3d.pose_estimations["pose2d_cam1"]
        assert pe.device is nwb.devices["cam1"] and pe.source_video is nwb.acquisition["video_cam1"]
        assert pe.skeleton is behavior["Skeletons"].skeletons["skeleton"]
        snout = pe.pose_estimation_series["snout"]
        assert snout.unit == "pixels" and snout.data.shape == (5, 2)
        assert pose3d.pose_estimation_series["snout"].unit == "millimeters"
        video = nwb.acquisition["video_cam1"]
        assert video.external_file[0] == "../s/video/cam1.mkv" and list(video.starting_frame) == [0]

        firings = nwb.intervals["rule_firings"].to_dataframe()
        assert list(firings["rule"]) == ["reach", "reach", "rear"]
        np.testing.assert_array_equal(firings["start_time"], pi_seconds(t_camera([3, 8, 10])))
        np.testing.assert_array_equal(  # the logged fall; the due fall where none was logged; none
            firings["stop_time"], pi_seconds([TTL0_FALL_NS, TTL_NS[1] + 10_000_000, t_camera(10)]))
        np.testing.assert_array_equal(firings["ttl_index"], [0, 1, -1])
        np.testing.assert_array_equal(firings["ttl_time"][:2], pi_seconds(TTL_NS))
        assert np.isnan(firings["ttl_time"].iloc[2])

        ttl = nwb.events["ttl_pulses"].to_dataframe()
        np.testing.assert_array_equal(ttl["timestamp"], pi_seconds(TTL_NS))
        assert ttl["duration"].iloc[0] == pi_seconds(TTL0_FALL_NS) - pi_seconds(TTL_NS[0])
        assert np.isnan(ttl["duration"].iloc[1])
        camera = nwb.events["camera_pulses"].to_dataframe()
        np.testing.assert_array_equal(camera["trigger_index"], np.arange(N_TRIGGERS))
        sync_ns, _ = read_sync(session)
        sync = nwb.events["sync_pulses"].to_dataframe()
        np.testing.assert_array_equal(sync["timestamp"], pi_seconds(sync_ns))

        events = nwb.events["events"].to_dataframe()
        assert list(events["event_name"]) == ["reach", "key_r", "mark"]
        np.testing.assert_array_equal(events["trigger_index"], [3, -1, 5])
        np.testing.assert_array_equal(events["timestamp"],
                                      pi_seconds([t_camera(3), t_camera(6) + 2_000_000, t_camera(5)]))
        clips = nwb.intervals["clips"].to_dataframe()
        assert list(clips["clip"]) == ["clip_001_n3"] and list(clips["event"]) == ["reach"]
        np.testing.assert_array_equal(clips[["start_time", "stop_time"]].to_numpy()[0],
                                      pi_seconds(t_camera([1, 6])))


def test_aligned_session_is_on_the_neural_recorders_clock(tmp_path: Path) -> None:
    session = make_session(tmp_path / "s")
    align(session)
    out = export_session_nwb(session)
    assert out == session / "s.nwb" and pynwb.validate(path=str(out)) == []
    back = read_nwb_pose(out)
    assert back["clock"] == "neural" and "30000 Hz" in back["time_base"] and "test-ephys" in back["time_base"]

    to_neural = pi_to_neural(session)
    with open(session / "pose2d.csv", newline="") as f:
        column = {(r["camera"], int(r["trigger_index"])): float(r["t_neural_samples"])
                  for r in csv.DictReader(f)}
    for cam in CAMERAS:
        truth = pose2d_truth(cam)
        got = back["pose2d"][cam]["timestamps_s"]
        np.testing.assert_allclose(got, to_neural(truth.t_pi_ns) / RATE_HZ, rtol=0, atol=1e-12)
        # the column rigstream align wrote, and the recorder's own clock (the fit is near-exact)
        np.testing.assert_allclose(got, [column[cam, n] / RATE_HZ for n in truth.trigger_index],
                                   rtol=0, atol=1e-9)
        np.testing.assert_allclose(got, recorder_samples(truth.t_pi_ns) / RATE_HZ, rtol=0, atol=1e-7)
    np.testing.assert_allclose(back["pose3d"]["timestamps_s"],
                               recorder_samples(t_camera(TRIANGULATED)) / RATE_HZ, rtol=0, atol=1e-7)
    np.testing.assert_allclose(back["videos"]["cam0"]["timestamps_s"],
                               recorder_samples(t_camera(range(N_TRIGGERS))) / RATE_HZ, rtol=0, atol=1e-7)
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        zero = (nwb.session_start_time - nwb.timestamps_reference_time).total_seconds()
        assert zero == pytest.approx(recorder_samples(T0_NS) / RATE_HZ, abs=1e-3)  # the first pulse's
        ttl = nwb.events["ttl_pulses"].to_dataframe()
        np.testing.assert_allclose(ttl["timestamp"], recorder_samples(TTL_NS) / RATE_HZ, rtol=0, atol=1e-7)


def test_samples_without_a_rate_fall_back_to_the_pi_clock(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    session = make_session(tmp_path / "s", rig=False)
    align(session)
    with caplog.at_level(logging.WARNING, logger="rigstream.inference.nwb_session"):
        back = read_nwb_pose(write(session, tmp_path / "pi.nwb"))
    assert back["clock"] == "pi" and "sample rate was not given" in back["time_base"]
    assert "neural_rate_hz" in caplog.text
    np.testing.assert_array_equal(back["pose3d"]["timestamps_s"], pi_seconds(t_camera(TRIANGULATED)))
    given = read_nwb_pose(write(session, tmp_path / "neural.nwb", neural_rate_hz=RATE_HZ))
    assert given["clock"] == "neural"
    np.testing.assert_allclose(given["pose3d"]["timestamps_s"],
                               recorder_samples(t_camera(TRIANGULATED)) / RATE_HZ, rtol=0, atol=1e-7)


def test_export_reads_back_equal_to_the_live_csvs(tmp_path: Path) -> None:
    session = make_session(tmp_path / "s")
    out = export_session_nwb(session, tmp_path / "elsewhere" / "x.nwb")
    back = read_nwb_pose(out)
    assert back["keypoints"] == list(KP)
    assert back["skeleton"] == []  # no model nor animal with these keypoints (see below)
    with open(session / "pose2d.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for cam in CAMERAS:
        last = {int(r["trigger_index"]): r for r in rows if r["camera"] == cam}  # the last row wins
        want = np.array([[[float(last[n][f"{kp}_{c}"] or "nan") for c in ("x", "y", "likelihood")]
                          for kp in KP] for n in sorted(last)])
        np.testing.assert_array_equal(back["pose2d"][cam]["values"], want)
        np.testing.assert_array_equal(back["pose2d"][cam]["timestamps_s"],
                                      pi_seconds([int(last[n]["t_pi_ns"]) for n in sorted(last)]))
    filtered = read_points3d_csv(session / "pose3d_filtered.csv")  # preferred over pose3d.csv
    np.testing.assert_array_equal(back["pose3d"]["xyz"], filtered.xyz)
    np.testing.assert_array_equal(back["pose3d"]["score"], filtered.score)
    np.testing.assert_array_equal(back["pose3d"]["timestamps_s"], pi_seconds(filtered.extra["t_pi_ns"]))

    (session / "pose3d_filtered.csv").unlink()
    back = read_nwb_pose(export_session_nwb(session, tmp_path / "y.nwb"))
    np.testing.assert_array_equal(back["pose3d"]["xyz"], read_points3d_csv(session / "pose3d.csv").xyz)


def test_skeleton_is_the_model_cards_or_the_simulated_animals(tmp_path: Path) -> None:
    session = make_session(tmp_path / "s")
    assert session_skeleton(session, KEYPOINTS) == [tuple(e) for e in SKELETON]  # the sim model's card
    assert session_skeleton(session, KEYPOINTS, model="no-such-model") == list(SKELETON)  # the sim animal
    assert session_skeleton(session, KP) == []


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize(("change", "message"), [
    ({"keypoints": KP[:-1]}, "pose2d['cam0'].values: 4 keypoints (shape (6, 4, 3)), but 3 keypoint names"),
    ({"pose3d": Pose3DSeries(trigger_index=[0], t_pi_ns=[T0_NS], xyz=np.zeros((1, 3, 3)))},
     "pose3d.xyz: 3 keypoints (shape (1, 3, 3)), but 4 keypoint names"),
    ({"skeleton": [("snout", "whisker")]},
     "skeleton[0]: expected a pair of keypoint names, got ('snout', 'whisker')"),
    ({"pose2d": {}, "pose3d": None}, "no pose to write"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path: Path, change: dict[str, object],
                                                         message: str) -> None:
    session = make_session(tmp_path / "s")
    before = files_under(tmp_path)
    with pytest.raises(NwbExportError) as err:
        write(session, tmp_path / "bad.nwb", **change)
    assert message in str(err.value)
    assert files_under(tmp_path) == before


def test_missing_files_and_a_failed_write_leave_no_file(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    session = make_session(tmp_path / "s")
    before = files_under(tmp_path)
    (session / "pose2d.csv").rename(tmp_path / "pose2d.csv")
    with pytest.raises(NwbExportError, match=r"pose2d\.csv: not found"):
        export_session_nwb(session)
    (tmp_path / "pose2d.csv").rename(session / "pose2d.csv")
    (session / "pulses.csv").rename(tmp_path / "pulses.csv")
    with pytest.raises(NwbExportError, match=r"pulses\.csv: not found"):
        export_session_nwb(session)
    (tmp_path / "pulses.csv").rename(session / "pulses.csv")
    assert files_under(tmp_path) == before

    def fail(self: object, container: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pynwb.NWBHDF5IO, "write", fail)
    with pytest.raises(OSError, match="disk full"):
        export_session_nwb(session)
    assert files_under(tmp_path) == before  # neither the .nwb nor its temporary file


def test_series_check_their_arrays() -> None:
    with pytest.raises(NwbExportError, match=r"values: expected shape \(2, K, 3\)"):
        Pose2DSeries(trigger_index=[0, 1], t_pi_ns=[T0_NS, T0_NS + 1], values=np.zeros((2, 4, 2)))
    with pytest.raises(NwbExportError, match="strictly increasing values, got 3 then 3"):
        Pose2DSeries(trigger_index=[3, 3], t_pi_ns=[T0_NS, T0_NS], values=np.zeros((2, 4, 3)))
    with pytest.raises(NwbExportError, match=r"score: expected shape \(1, 4\)"):
        Pose3DSeries(trigger_index=[0], t_pi_ns=[T0_NS], xyz=np.zeros((1, 4, 3)), score=np.zeros((1, 3)))
    series = Pose2DSeries(trigger_index=[0], t_pi_ns=[T0_NS], values=[[[1, 2, 0.5]]])
    assert series.values.dtype == np.float64 and series.trigger_index.dtype == np.int64


def test_without_pynwb_the_error_says_what_to_install(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    session = make_session(tmp_path / "s")
    monkeypatch.setitem(sys.modules, "pynwb", None)
    with pytest.raises(NwbExportError) as err:
        export_session_nwb(session)
    assert "pynwb" in str(err.value) and NWB_INSTALL in str(err.value)
    assert not list(session.glob("*.nwb"))
