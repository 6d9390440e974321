"""Tests for rigstream.inference.dlc_files and ``rigstream export``: a session's pose2d.csv as
DeepLabCut prediction files, one row per video frame, read back with pandas the way DeepLabCut
does and with rigstream's own reader."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from rigstream.inference.dlc_files import (
    DLC_KEY,
    DlcExportError,
    dlc_scorer,
    export_session,
    pose2d_keypoints,
)
from rigstream.inference.keypoint_files import read_keypoints_2d

pd = pytest.importorskip("pandas")
pytest.importorskip("tables")

KEYPOINTS = ["snout", "left_ear", "tail_base"]
N_TRIGGERS = 10
DROPPED = {"cam1": 4}
"""cam1 dropped trigger 4: its video has 9 frames, and trigger n > 4 is video frame n - 1."""
POSED = [0, 2, 4, 5, 8]
"""Trigger indices the live engine posed (latest-wins: the others were skipped)."""


def pose_value(cam: str, n: int, k: int) -> tuple[float, float, float]:
    """The pose2d.csv values of camera ``cam``, trigger ``n``, keypoint ``k``: distinct per cell."""
    base = 100.0 * (1 + int(cam[-1])) + 10 * n + k
    return base + 0.25, base + 0.5, round(0.5 + 0.01 * n + 0.001 * k, 4)


def video_frame(cam: str, n: int) -> int:
    dropped = DROPPED.get(cam)
    if dropped is None or n < dropped:
        return n
    return -1 if n == dropped else n - 1


def make_session(folder: Path, model: str | None = "mouse-v3") -> Path:
    """A tiny session: 2 cameras, 10 triggers, pose rows for POSED (one with a missing keypoint),
    cam1's frame 4 dropped, and a summary.json naming the pose model."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "frames.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["camera", "frame_id", "trigger_index", "t_pi_ns", "video_frame", "dropped"])
        for n in range(N_TRIGGERS):
            for cam in ("cam0", "cam1"):
                vf = video_frame(cam, n)
                w.writerow([cam, n, n, 1000 * n, vf, int(vf < 0)])
    with open(folder / "pose2d.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trigger_index", "t_pi_ns", "t_pose_ns", "camera"]
                   + [f"{k}_{c}" for k in KEYPOINTS for c in ("x", "y", "likelihood")])
        for n in POSED:
            for cam in ("cam0", "cam1"):
                cells: list[object] = []
                for k in range(len(KEYPOINTS)):
                    missing = cam == "cam0" and n == 5 and k == 1
                    cells += ["nan", "nan", "nan"] if missing else list(pose_value(cam, n, k))
                w.writerow([n, 1000 * n, 1000 * n + 7, cam, *cells])
    if model is not None:
        (folder / "summary.json").write_text(json.dumps({"pose": {"model": model}}))
    return folder


def expected(cam: str) -> tuple[np.ndarray, set[int]]:
    """(n_video, K, 3) what the file must hold for ``cam``, and its posed video frames."""
    n_video = max(video_frame(cam, n) for n in range(N_TRIGGERS)) + 1
    table = np.full((n_video, len(KEYPOINTS), 3), np.nan)
    posed = set()
    for n in POSED:
        vf = video_frame(cam, n)
        if vf < 0:
            continue
        posed.add(vf)
        for k in range(len(KEYPOINTS)):
            if not (cam == "cam0" and n == 5 and k == 1):
                table[vf, k] = pose_value(cam, n, k)
    return table, posed


def test_h5_has_deeplabcuts_layout_one_row_per_video_frame(tmp_path: Path) -> None:
    session = make_session(tmp_path / "s")
    report = export_session(session)
    scorer = "DLC_rigstream_mouse-v3"
    assert report.scorer == scorer and report.out == session / "video"
    assert [c.camera for c in report.cameras] == ["cam0", "cam1"]
    for cam in report.cameras:
        assert cam.h5 == session / "video" / f"{cam.camera}{scorer}.h5"
        assert cam.csv == cam.h5.with_suffix(".csv") and cam.csv.is_file()
        df = pd.read_hdf(cam.h5, DLC_KEY)
        assert list(df.columns.names) == ["scorer", "bodyparts", "coords"]
        assert list(df.columns.get_level_values("scorer").unique()) == [scorer]
        assert list(df.columns.get_level_values("bodyparts").unique()) == KEYPOINTS
        assert list(df.columns.get_level_values("coords")[:3]) == ["x", "y", "likelihood"]
        assert df.columns.nlevels == 3 and df.shape[1] == 3 * len(KEYPOINTS)
        assert (df.dtypes == np.float64).all()
        table, posed = expected(cam.camera)
        assert list(df.index) == list(range(len(table)))
        values = df.to_numpy().reshape(len(df), len(KEYPOINTS), 3)
        np.testing.assert_array_equal(values, table)  # NaN where not posed, compared as equal
        for vf in range(len(table)):
            if vf not in posed:
                assert np.isnan(values[vf]).all()
        assert cam.posed == len(posed) and cam.nan_rows == len(table) - len(posed)
    cam0, cam1 = report.cameras
    assert (cam0.video_frames, cam0.skipped_dropped) == (10, 0)
    assert (cam1.video_frames, cam1.skipped_dropped) == (9, 1)  # trigger 4 was posed but dropped


def test_files_round_trip_through_rigstreams_reader(tmp_path: Path) -> None:
    session = make_session(tmp_path / "s")
    report = export_session(session, tmp_path / "out")
    for cam in report.cameras:
        assert cam.h5.parent == tmp_path / "out"
        table, _ = expected(cam.camera)
        for path in (cam.h5, cam.csv):
            kp = read_keypoints_2d(path)
            assert kp.keypoints == tuple(KEYPOINTS)
            np.testing.assert_array_equal(kp.frames, np.arange(len(table)))
            np.testing.assert_array_equal(kp.xy, table[..., :2])
            np.testing.assert_array_equal(kp.score, table[..., 2])


def test_unmatched_rows_are_counted_and_last_repeat_wins(tmp_path: Path) -> None:
    session = make_session(tmp_path / "s", model=None)
    with open(session / "pose2d.csv", "a", newline="") as f:
        w = csv.writer(f)
        w.writerow([99, 0, 0, "cam0"] + [1.0] * 9)  # past the end of frames.csv
        w.writerow([0, 0, 0, "cam0"] + [7.0] * 9)  # trigger 0 again (a restarted engine)
        w.writerow([0, 0, 0, "cam9"] + [7.0] * 9)  # a camera frames.csv does not have
    report = export_session(session)
    assert report.scorer == "DLC_rigstream"
    cam0 = report.cameras[0]
    assert (cam0.skipped_unknown, cam0.duplicates) == (1, 1)
    assert report.not_in_frames == {"cam9": 1}
    assert (pd.read_hdf(cam0.h5, DLC_KEY).iloc[0] == 7.0).all()


def test_scorer_and_keypoint_columns() -> None:
    assert dlc_scorer("/models/mouse v3/") == "DLC_rigstream_mouse-v3"
    assert dlc_scorer(None) == "DLC_rigstream"
    assert pose2d_keypoints(["trigger_index", "camera", "a_x", "a_y", "a_likelihood", "t_neural_s",
                             "b_x", "b_y"]) == ["a"]


def test_bad_sessions_fail_before_writing(tmp_path: Path) -> None:
    session = make_session(tmp_path / "s")
    (session / "frames.csv").write_text("camera,trigger_index,video_frame\ncam0,0,-1\n")
    with pytest.raises(DlcExportError, match="no camera has a video frame"):
        export_session(session)
    (session / "frames.csv").write_text("camera,trigger_index\ncam0,0\n")
    with pytest.raises(DlcExportError, match="missing columns"):
        export_session(session)
    assert not (session / "video").exists()


def test_cli_without_pose2d_says_so_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rigstream.app.cli import main

    session = make_session(tmp_path / "s")
    (session / "pose2d.csv").unlink()
    assert main(["export", str(session)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "pose2d.csv: not found" in err
    assert not (session / "video").exists()


@pytest.mark.slow
def test_demo_session_exports_one_file_per_camera_video(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from rigstream.app.cli import main

    session = tmp_path / "s"
    assert main(["demo", "--seconds", "2", "--out", str(session)]) == 0
    capsys.readouterr()
    assert main(["export", str(session)]) == 0
    printed = capsys.readouterr().out
    frames = pd.read_csv(session / "frames.csv", dtype={"camera": str})
    cameras = sorted(frames["camera"].unique())
    h5s = sorted((session / "video").glob("*DLC_*.h5"))
    assert [p.name.split("DLC_")[0] for p in h5s] == cameras
    for path in h5s:
        cam = path.name.split("DLC_")[0]
        df = pd.read_hdf(path, DLC_KEY)
        assert len(df) == frames.loc[frames["camera"] == cam, "video_frame"].max() + 1
        assert df.notna().any(axis=1).any()  # the live engine posed some frames
        assert f"-> {path}" in printed
