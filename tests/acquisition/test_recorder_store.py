"""The recorder on the camera stores: a recorder that falls behind never makes a camera wait and
writes exact ``overrun`` rows; ``recording.video: off`` keeps the tables without a video."""

from __future__ import annotations

import csv
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import zmq

from rigstream import protocol
from rigstream.acquisition import recorder
from rigstream.acquisition.recorder import Recorder
from rigstream.acquisition.video import read_frames
from rigstream.app.session import write_rig
from rigstream.app.verify import verify_session
from rigstream.config import RigConfig, load_rig
from rigstream.frames import FRAME_COLUMNS
from rigstream.transport import Publisher
from tests.conftest import FakeCameras, run_in_thread, small_rig


class Session:
    """A recorder in a thread (as in its own process), FakeCameras and a pulse publisher."""

    def __init__(self, rig: RigConfig, fake: FakeCameras, zctx: zmq.Context, run_dir: str,
                 out: Path) -> None:
        self.rig, self.fake, self.out = rig, fake, out
        self.pulses = Publisher(zctx, rig.address("pulses", run_dir), hwm=0)
        self.recorder = Recorder(rig, run_dir, out, zctx)
        self.stop = threading.Event()
        self.thread, self.result = run_in_thread(lambda: self.recorder.run_forever(self.stop))
        fake.wait()
        assert self.pulses.wait_for_subscribers(1, 5), "the recorder never subscribed to the pulses"
        self.frames: dict[str, dict[int, np.ndarray]] = {c.name: {} for c in rig.cameras}

    def pulse(self, indices: range) -> None:
        for n in indices:
            self.pulses.sock.send(protocol.encode(protocol.Pulse(index=n, t_pi_ns=n * 10_000_000 + 1)))

    def frame(self, camera: str, n: int) -> None:
        self.frames[camera][n] = self.fake.frame(camera, n)

    def summary(self, timeout_s: float = 30.0) -> dict[str, Any]:
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            self.stop.set()
            self.thread.join(15)
            pytest.fail(f"recorder did not return within {timeout_s} s of the end of streams")
        self.pulses.close()
        if "error" in self.result:
            raise self.result["error"]
        return self.result["value"]


def wait_until(what: str, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def rows_by_camera(path: Path) -> dict[str, list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == FRAME_COLUMNS
        out: dict[str, list[dict[str, str]]] = {}
        for row in reader:
            out.setdefault(row["camera"], []).append(row)
    return out


@pytest.mark.parametrize("codec", ["ffv1", "raw"])
def test_a_slow_recorder_never_blocks_the_cameras_and_writes_exact_overrun_rows(
        codec: str, fake: Callable[[RigConfig], FakeCameras], zctx: zmq.Context, run_dir: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Each camera's video writer is slowed on purpose, and held in its first frame while the
    cameras write three stores' worth of indices more: every index the store overwrote before
    the recorder read it is an exact ``overrun`` row, every other one is in the video bit for
    bit, and the cameras wrote everything while the recorder was held. Raw video is written
    straight from the slot, so the frame the recorder was held in is overwritten under it and
    becomes an overrun row too; an encoded codec works on a copy and keeps it."""
    entered = {"cam0": threading.Event(), "cam1": threading.Event()}
    release = threading.Event()

    class SlowWriter(recorder.VideoWriter):
        def write(self, pixels: np.ndarray, still_valid: Callable[[], bool] | None = None) -> int:
            time.sleep(0.002)  # slower than the cameras write
            if self.frames_written == 0 and not entered[self.path.stem].is_set():
                entered[self.path.stem].set()
                assert release.wait(20), "the test never released the recorder"
            return super().write(pixels, still_valid)

    monkeypatch.setattr(recorder, "VideoWriter", SlowWriter)
    caplog.set_level(logging.WARNING, logger=recorder.__name__)
    rig = small_rig(recording={**msgspec.to_builtins(load_rig().recording), "codec": codec})
    in_place = codec == "raw"
    cap = rig.store_frames()
    n_total = 3 * cap + 17
    drop_overwritten, drop_kept = cap // 2, n_total - 5  # a drop notice in each region
    cams = [c.name for c in rig.cameras]
    session = Session(rig, fake(rig), zctx, run_dir, tmp_path / "session")
    session.pulse(range(n_total))

    for cam in cams:  # index 0 is read, and its video write holds the recorder
        session.frame(cam, 0)
    for cam in cams:
        assert entered[cam].wait(10), f"{cam}: the recorder never took frame 0"
    for n in range(1, n_total):
        for cam in cams:
            if n in (drop_overwritten, drop_kept):
                session.fake.drop(cam, n)
            else:
                session.frame(cam, n)
    # The cameras wrote every index while the recorder was held in its first frame: it never
    # made them wait. It has read index 0 only; the stores hold the last ``cap`` indices.
    assert not release.is_set()
    held = session.recorder.summary()
    assert held["frames"] == {c: 1 for c in cams}
    assert held["encode_backlog"] == {c: n_total - 1 for c in cams}
    for cam in cams:
        session.fake.eos(cam, n_total - 1)
    release.set()
    summary = session.summary()

    wrote, read_before = set(range(n_total)), set() if in_place else {0}
    still_held = set(range(n_total - cap, n_total))
    overrun = sorted(wrote - read_before - still_held)
    assert overrun == list(range(0 if in_place else 1, n_total - cap))
    dropped = {drop_kept}
    assert summary["overruns"] == {c: len(overrun) for c in cams}
    assert summary["overrun_indices"] == {c: overrun for c in cams}
    assert summary["frames_dropped"] == {c: len(overrun) + len(dropped) for c in cams}
    assert summary["frames"] == {c: n_total - len(overrun) - len(dropped) for c in cams}
    assert summary["lost_in_transport"] == {c: 0 for c in cams}
    assert summary["encode_backlog"] == {c: 0 for c in cams}
    assert summary["video_errors"] == {}

    table = rows_by_camera(session.out / "frames.csv")
    for cam in cams:
        rows = table[cam]
        assert [int(r["trigger_index"]) for r in rows] == list(range(n_total)), cam
        kept = []
        for r in rows:
            n = int(r["trigger_index"])
            if n in overrun:
                assert (r["overrun"], r["dropped"], r["lost_in_transport"]) == ("1", "1", "0"), (cam, n)
                assert [int(r[k]) for k in ("video_frame", "frame_id", "t_camera_ns", "t_pi_ns",
                                            "t_host_ns")] == [-1] * 5, (cam, n)
            elif n in dropped:
                assert (r["overrun"], r["dropped"], r["video_frame"]) == ("0", "1", "-1"), (cam, n)
                assert int(r["t_pi_ns"]) == n * 10_000_000 + 1
            else:
                assert (r["overrun"], r["dropped"]) == ("0", "0"), (cam, n)
                assert int(r["frame_id"]) == n and int(r["t_pi_ns"]) == n * 10_000_000 + 1
                assert int(r["video_frame"]) == len(kept), (cam, n)
                kept.append(n)
        decoded = list(read_frames(session.out / "video" / f"{cam}.mkv"))
        assert len(decoded) == len(kept) == n_total - len(overrun) - len(dropped), cam
        for n, img in zip(kept, decoded, strict=True):
            np.testing.assert_array_equal(img, session.frames[cam][n], err_msg=f"{cam} frame {n}")

    ranges = [r.getMessage() for r in caplog.records if "were overwritten" in r.getMessage()]
    assert len(ranges) == len(cams)
    for cam in cams:
        assert any(f"camera {cam} " in m and f"indices {overrun[0]}..{overrun[-1]} ({len(overrun)})" in m
                   for m in ranges), ranges

    write_rig(rig, session.out / "rig.yaml")
    report = verify_session(session.out)
    assert report["problems"] == []
    for cam in cams:
        assert report["cameras"][cam]["lost"] == {"camera": 1, "lost_in_transport": 0,
                                                  "overrun": len(overrun)}
        assert report["cameras"][cam]["decoded"] == n_total - len(overrun) - len(dropped)


def test_video_off_keeps_the_tables_and_writes_no_video(
        fake: Callable[[RigConfig], FakeCameras], zctx: zmq.Context, run_dir: str,
        tmp_path: Path) -> None:
    rig = small_rig(recording={"video": "off", "flush_interval_s": 0.1})
    cams = [c.name for c in rig.cameras]
    n_total, drops = 30, {"cam0": {4}, "cam1": {4, 17}}
    session = Session(rig, fake(rig), zctx, run_dir, tmp_path / "session")
    session.pulse(range(n_total))
    for n in range(n_total):
        for cam in cams:
            if n in drops[cam]:
                session.fake.drop(cam, n)
            else:
                session.frame(cam, n)
    for cam in cams:
        session.fake.eos(cam, n_total - 1)
    summary = session.summary()

    assert summary["video"] == "off"
    assert summary["frames"] == {c: n_total - len(drops[c]) for c in cams}
    assert summary["frames_dropped"] == {c: len(drops[c]) for c in cams}
    assert summary["overruns"] == {c: 0 for c in cams}
    assert not (session.out / "video").exists()
    info = json.loads((session.out / "recording.json").read_text())
    assert (info["video"], info["videos"], info["codec"]) == ("off", {}, None)
    table = rows_by_camera(session.out / "frames.csv")
    for cam in cams:
        rows = table[cam]
        assert [int(r["trigger_index"]) for r in rows] == list(range(n_total))
        assert all(r["video_frame"] == "-1" for r in rows)
        assert [n for n, r in enumerate(rows) if r["dropped"] == "1"] == sorted(drops[cam])
        assert all(int(r["t_pi_ns"]) == n * 10_000_000 + 1 for n, r in enumerate(rows))

    write_rig(rig, session.out / "rig.yaml")
    report = verify_session(session.out)
    assert report["problems"] == [] and report["video"] == "off"
    assert {c: report["cameras"][c]["frames"] for c in cams} == summary["frames"]
    assert all(report["cameras"][c]["decoded"] is None for c in cams)
    # verify still holds frames.csv to the pulses: a row gone is a problem.
    lines = (session.out / "frames.csv").read_text().splitlines(keepends=True)
    gone = next(i for i, line in enumerate(lines) if line.startswith("cam1,10,10,"))
    (session.out / "frames.csv").write_text("".join(lines[:gone] + lines[gone + 1:]))
    assert verify_session(session.out)["problems"] == [f"cam1: {n_total - 1} rows for {n_total} "
                                                       f"pulses (0 duplicated)"]
