"""``rigstream verify`` on sessions cut short (a kill, a full disk): damaged tables and videos
are listed as problems, by file and line, and the check goes on; nothing raises."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from rigstream.acquisition.video import VideoWriter
from rigstream.app.session import write_rig
from rigstream.app.verify import verify_session
from rigstream.frames import FRAME_COLUMNS
from tests.conftest import small_rig

N = 3
"""Pulses (and frames per camera) in the sessions built here."""


def make_session(folder: Path, video: str) -> Path:
    """A session folder as the recorder leaves it: rig.yaml, pulses.csv, frames.csv (camera by
    camera, N frames each) and, with ``video`` on, one ffv1 video per camera."""
    rig = small_rig(recording={"video": video})
    folder.mkdir()
    write_rig(rig, folder / "rig.yaml")
    with open(folder / "pulses.csv", "w", newline="") as f:
        csv.writer(f).writerows([("index", "t_pi_ns", "line")]
                                + [(n, n * 10_000_000, "camera") for n in range(N)])
    with open(folder / "frames.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FRAME_COLUMNS)
        for cam in rig.cameras:
            for n in range(N):
                t = n * 10_000_000
                w.writerow((cam.name, n, n, t, t, t + 5, n if video == "on" else -1, 0, 0, 0, 0, 0))
    if video == "on":
        for cam in rig.cameras:
            with VideoWriter(folder / "video" / f"{cam.name}.mkv", cam.width, cam.height, 1, "ffv1",
                             rig.trigger.rate_hz) as writer:
                for n in range(N):
                    writer.write(np.full((cam.height, cam.width), 40 * n, np.uint8))
    return folder


@pytest.mark.parametrize("video", ["on", "off"])
def test_a_whole_session_has_no_problems(tmp_path: Path, video: str) -> None:
    report = verify_session(make_session(tmp_path / "s", video))
    assert report["problems"] == []
    assert report["cameras"]["cam1"]["rows"] == N
    assert report["cameras"]["cam1"]["decoded"] == (N if video == "on" else None)


@pytest.mark.parametrize(("cut", "why"), [
    (lambda last: last[:8], "cut off: 3 of 12 fields"),  # 'cam1,2,2', the file ends there
    (lambda last: last.rstrip("\r\n"), "the last row is cut off (no line end)"),  # all fields, no end
])
def test_a_table_cut_off_mid_row_and_an_unparsable_row_are_problems_not_crashes(
        tmp_path: Path, cut, why: str) -> None:
    """The rows verify cannot trust are named by file and line and left out; the rest is
    checked as usual (here: each camera now has a row missing)."""
    folder = make_session(tmp_path / "s", "off")
    table = folder / "frames.csv"
    lines = table.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace(",-1,", ",,", 1)  # cam0's frame 1: an empty video_frame
    table.write_text("".join(lines[:-1]) + cut(lines[-1]))
    report = verify_session(folder)
    assert report["problems"] == [
        f"{table}: line 3: video_frame: expected an integer, got ''; row left out",
        f"{table}: line {len(lines)}: {why}; row left out",
        f"cam0: {N - 1} rows for {N} pulses (0 duplicated)",
        f"cam1: {N - 1} rows for {N} pulses (0 duplicated)",
    ]
    assert report["cameras"]["cam0"]["rows"] == report["cameras"]["cam1"]["rows"] == N - 1


def test_empty_and_cut_off_videos_and_an_empty_table_are_problems_not_crashes(tmp_path: Path) -> None:
    folder = make_session(tmp_path / "s", "on")
    (folder / "video" / "cam0.mkv").write_bytes(b"")  # killed before the first cluster
    cam1 = folder / "video" / "cam1.mkv"
    cam1.write_bytes(cam1.read_bytes()[:40])  # killed inside the header
    (folder / "pulses.csv").write_bytes(b"")  # a full disk before the first flush
    report = verify_session(folder)
    problems = report["problems"]
    assert problems[0] == f"{folder / 'pulses.csv'}: the header lacks index, line (the file is cut off " \
                          f"or not this table)"
    for cam in ("cam0", "cam1"):
        video = folder / "video" / f"{cam}.mkv"
        assert any(p.startswith(f"{video}: decoding stopped after 0 frames: ") for p in problems), problems
        assert f"{video}: decodes to 0 frames, rows say {N}" in problems
        assert f"{cam}: {N} rows for 0 pulses (0 duplicated)" in problems
        assert report["cameras"][cam]["decoded"] == 0
