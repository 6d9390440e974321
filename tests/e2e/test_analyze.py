"""``rigstream analyze`` on recorded demo sessions: every frame set posed, NaN rows with their
reason, resuming after a kill, and a Dask cluster giving the same bytes as a serial run."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rigstream.acquisition.video import VideoWriter, read_frames
from rigstream.app.cli import main
from rigstream.inference.analyze import AnalyzeError, AnalyzeSettings, analyze_serial, plan_session

pytestmark = pytest.mark.slow
pd = pytest.importorskip("pandas")
pytest.importorskip("tables")

TABLES = ("pose2d.csv", "points3d.csv", "points3d_smoothed.csv", "cam0DLC_rigstream_sim.csv",
          "cam1DLC_rigstream_sim.csv")


def demo(out: Path, *args: str) -> Path:
    assert main(["demo", "--out", str(out), *args]) == 0
    return out


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s at 100 Hz, 2 cameras, 3% of frames dropped."""
    return demo(tmp_path_factory.mktemp("sessions") / "drops", "--seconds", "3", "--drop-rate", "0.03")


@pytest.fixture(scope="module")
def session3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s, 3 cameras."""
    return demo(tmp_path_factory.mktemp("sessions") / "three", "--seconds", "2", "--cameras", "3")


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def analyze(session: Path, out: Path, *args: str) -> dict[str, Any]:
    assert main(["analyze", str(session), "--out", str(out), "--no-nwb", *args]) == 0
    return json.loads((out / "analysis.json").read_text())


def test_every_frame_set_is_posed_or_says_why(session: Path, tmp_path: Path) -> None:
    report = analyze(session, tmp_path / "a", "--chunk", "120", "--batch", "4")
    frames = rows(session / "frames.csv")
    summary = json.loads((session / "summary.json").read_text())
    table = rows(tmp_path / "a" / "pose2d.csv")
    n_sets = len({int(r["trigger_index"]) for r in frames})
    assert n_sets == summary["pulses_sent"]
    assert report["frame_sets"] == n_sets
    assert len(table) == 2 * n_sets  # one row per set and camera, none twice
    assert len({(r["trigger_index"], r["camera"]) for r in table}) == len(table)
    dropped = {(r["trigger_index"], r["camera"]) for r in frames if r["dropped"] == "1"}
    assert dropped, "the session should have dropped frames"
    for r in table:
        key = (r["trigger_index"], r["camera"])
        assert r["status"] == ("dropped" if key in dropped else "posed"), key
        assert (r["snout_x"] == "") == (r["status"] != "posed")
    assert report["rows"]["cam0"]["dropped"] + report["rows"]["cam0"]["posed"] == n_sets
    # DeepLabCut's files have one row per video frame, all posed
    for cam in ("cam0", "cam1"):
        dlc = pd.read_hdf(tmp_path / "a" / f"{cam}DLC_rigstream_sim.h5")
        video = [r for r in frames if r["camera"] == cam and int(r["video_frame"]) >= 0]
        assert len(dlc) == len(video)
        assert np.isfinite(dlc.to_numpy()).all()
    # as good as the live engine on the sets both posed, and the smoother helps in 3D
    truth = report["error_vs_truth"]
    live = summary["pose"]["error_2d_vs_truth"]["median_px"]
    assert truth["pose2d"]["median_px"] <= live * 1.15, (truth["pose2d"], live)
    assert truth["pose2d"]["median_px"] < 3.0
    assert truth["points3d_smoothed"]["median_mm"] < truth["points3d"]["median_mm"]


def test_the_nwb_file_holds_the_tables(session: Path, tmp_path: Path) -> None:
    pytest.importorskip("pynwb")
    pytest.importorskip("ndx_pose")
    import pynwb

    from rigstream.inference.anipose_csv import read_points3d_csv
    from rigstream.inference.nwb_files import read_nwb_pose

    out = tmp_path / "a"
    assert main(["analyze", str(session), "--out", str(out), "--chunk", "150"]) == 0
    path = out / f"{session.name}.nwb"
    assert pynwb.validate(path=str(path)) == []
    nwb = read_nwb_pose(path)
    table = pd.read_csv(out / "pose2d.csv")
    keypoints = [c[:-2] for c in table.columns if c.endswith("_x")]
    assert nwb["keypoints"] == keypoints
    for cam in ("cam0", "cam1"):
        posed = table[(table["camera"] == cam) & (table["status"] == "posed")]
        want = posed[[f"{k}_{c}" for k in keypoints for c in ("x", "y", "likelihood")]].to_numpy()
        got = nwb["pose2d"][cam]["values"].reshape(len(want), -1)
        np.testing.assert_allclose(got, want, atol=6e-4)  # the CSV keeps 3 and 4 decimals
        assert len(nwb["pose2d"][cam]["timestamps_s"]) == len(posed)
    smoothed = read_points3d_csv(out / "points3d_smoothed.csv")
    np.testing.assert_allclose(nwb["pose3d"]["xyz"], smoothed.xyz, atol=1e-4, equal_nan=True)


def test_a_killed_run_resumes_without_duplicates(session: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    analyze(session, whole, "--chunk", "40")
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "rigstream", "analyze", str(session), "--out", str(out),
                             "--no-nwb", "--chunk", "40", "--threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunks = out / ".chunks"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(chunks.glob("chunk_*.npz"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = len(list(chunks.glob("chunk_*.npz")))
    assert saved >= 2 and not (out / "analysis.json").exists()
    report = analyze(session, out, "--chunk", "40")
    assert report["chunks_resumed"] >= saved and report["chunks_resumed"] < report["chunks"]
    for name in TABLES:
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name
    assert not chunks.exists()


def test_other_settings_do_not_mix_with_saved_chunks(session: Path, tmp_path: Path) -> None:
    out = tmp_path / "a"
    plan = plan_session(session, AnalyzeSettings(chunk=100), out)
    from rigstream.inference.analyze import open_chunks, pose_chunk, save_chunk

    open_chunks(plan)
    save_chunk(plan, pose_chunk(plan, 0))
    other = plan_session(session, AnalyzeSettings(chunk=50), out)
    with pytest.raises(AnalyzeError, match="--restart"):
        analyze_serial([other])
    report = analyze_serial([other], restart=True)[0]
    assert report["chunks_resumed"] == 0 and report["frame_sets_posed"] > 0


def test_a_video_cut_short_gives_not_decoded_rows(session: Path, tmp_path: Path) -> None:
    copy = tmp_path / "cut"
    shutil.copytree(session, copy, ignore=shutil.ignore_patterns("clips"))
    video = copy / "video" / "cam1.mkv"
    frames = list(read_frames(video))
    keep = len(frames) - 25
    with VideoWriter(video, frames[0].shape[1], frames[0].shape[0], 1, "ffv1", 100.0) as w:
        for f in frames[:keep]:
            w.write(f)
    report = analyze(copy, tmp_path / "a")
    assert report["rows"]["cam1"]["not_decoded"] == 25
    table = [r for r in rows(tmp_path / "a" / "pose2d.csv") if r["camera"] == "cam1"]
    cut = [r for r in table if r["status"] == "not_decoded"]
    assert [int(r["video_frame"]) for r in cut] == list(range(keep, len(frames)))
    assert all(r["snout_x"] == "" for r in cut)


def test_a_session_without_video_is_refused_before_work(session: Path, tmp_path: Path) -> None:
    copy = tmp_path / "clips_only"
    copy.mkdir()
    for name in ("rig.yaml", "pulses.csv", "calibration.toml"):
        shutil.copy(session / name, copy / name)
    table = rows(session / "frames.csv")
    with open(copy / "frames.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        for r in table:
            w.writerow({**r, "video_frame": -1})
    with pytest.raises(AnalyzeError, match=r"recording\.video: off"):
        plan_session(copy, AnalyzeSettings(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_two_sessions_on_a_dask_cluster_match_a_serial_run(session: Path, session3: Path,
                                                           tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    serial, cluster = tmp_path / "serial", tmp_path / "cluster"
    args = ["analyze", str(session), str(session3), "--no-nwb", "--chunk", "70"]
    assert main([*args, "--out", str(serial), "--workers", "0"]) == 0
    assert main([*args, "--out", str(cluster), "--workers", "2"]) == 0
    for name, cams in ((session.name, 2), (session3.name, 3)):
        a, b = serial / name, cluster / name
        report = json.loads((b / "analysis.json").read_text())
        assert report["frame_sets_posed"] > 0.9 * report["frame_sets"]
        tables = ["pose2d.csv", "points3d.csv", "points3d_smoothed.csv",
                  *(f"cam{i}DLC_rigstream_sim.csv" for i in range(cams))]
        for table in tables:
            assert (a / table).read_bytes() == (b / table).read_bytes(), (name, table)
        for i in range(cams):
            h5 = f"cam{i}DLC_rigstream_sim.h5"
            pd.testing.assert_frame_equal(pd.read_hdf(a / h5), pd.read_hdf(b / h5))
