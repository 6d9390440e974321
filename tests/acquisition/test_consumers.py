"""The lossless consumers (recorder, clip service, assembler) on real ZeroMQ sockets.

Each consumer runs in a thread as it runs in its own process (``run_forever(stop)``, no
supervisor), fed by :class:`tests.conftest.FakeCameras` with valid frames, drop notices, every
kind of malformed message and a frame from a camera that is not in the rig. The consumer must
keep running, count every bad message by reason, and lose nothing valid.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from rigstream import framestore, protocol
from rigstream.acquisition import ringbuffer
from rigstream.acquisition.recorder import Recorder
from rigstream.acquisition.ringbuffer import ClipService, send_event
from rigstream.acquisition.video import read_frames
from rigstream.config import RigConfig
from rigstream.framestore import store_name
from rigstream.protocol import Event, FrameHeader, decode_frameset
from rigstream.sync.assembler import Assembler
from rigstream.transport import Publisher, subscriber
from tests.conftest import FakeCameras, malformed_messages, run_in_thread, small_rig

N = 40
"""Trigger indices per camera in a session."""
DROPS = {"cam0": {3, 13, 27}, "cam1": {8, 13, 31}}
"""Indices each camera reports as dropped (13: by both)."""


# -- feeding the consumers ---------------------------------------------------------------------


def rejection_reason(parts: list[bytes]) -> str:
    """Why the protocol rejects a message (it must reject it)."""
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.decode_frame_parts(parts)
    return info.value.reason


class Feed:
    """Publishes a session through FakeCameras and remembers what it sent."""

    def __init__(self, fake: FakeCameras) -> None:
        self.fake = fake
        self.cameras = list(fake.pubs)
        self.frames: dict[str, dict[int, np.ndarray]] = {c: {} for c in self.cameras}
        self.dropped: dict[str, set[int]] = {c: set() for c in self.cameras}
        self.malformed: Counter[str] = Counter()
        self._bad = {c: malformed_messages(fake, c) for c in self.cameras}

    def frame(self, camera: str, n: int) -> None:
        self.frames[camera][n] = self.fake.frame(camera, n)

    def drop(self, camera: str, n: int) -> None:
        self.fake.drop(camera, n)
        self.dropped[camera].add(n)

    def bad(self, camera: str) -> None:
        """The next kind of malformed message on this camera's socket (if any is left)."""
        if self._bad[camera]:
            parts = self._bad[camera].pop(0)
            self.malformed[rejection_reason(parts)] += 1
            self.fake.raw(camera, parts)

    def ghost(self, via: str) -> None:
        """A valid frame from a camera that is not in the rig, on ``via``'s socket."""
        cfg = self.fake.rig.camera(via)
        h = FrameHeader(camera="ghost", seq=0, frame_id=0, trigger_index=0, t_camera_ns=0,
                        t_host_ns=0, width=cfg.width, height=cfg.height)
        protocol.send_frame(self.fake.pubs[via].sock, h,
                            np.zeros((cfg.height, cfg.width), np.uint8))
        self.malformed["unknown-camera"] += 1

    def session(self, indices: range, drops: dict[str, set[int]] | None = None,
                malformed: bool = True) -> None:
        """Frames (or drop notices) of every camera for ``indices``, bad messages between."""
        drops = drops or {}
        for n in indices:
            for cam in self.cameras:
                if n in drops.get(cam, set()):
                    self.drop(cam, n)
                else:
                    self.frame(cam, n)
                if malformed:
                    self.bad(cam)
            if malformed and n == indices[0]:
                self.ghost(self.cameras[0])

    def all_bad_sent(self) -> bool:
        return not any(self._bad.values())

    def eos(self, last: int) -> None:
        for cam in self.cameras:
            self.fake.eos(cam, last)


class Running:
    """A consumer's ``run_forever(stop)`` in a thread."""

    def __init__(self, consumer: Any) -> None:
        self.stop = threading.Event()
        self.thread, self.result = run_in_thread(lambda: consumer.run_forever(self.stop))

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def summary(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """The consumer's summary once it has returned by itself (after every EOS)."""
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            self.stop.set()
            self.thread.join(15)
            pytest.fail(f"consumer did not return within {timeout_s} s of the end of streams")
        if "error" in self.result:
            raise self.result["error"]
        return self.result["value"]


def wait_until(what: str, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for a condition another thread brings about (files, counters)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def rows_by_camera(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        out.setdefault(row["camera"], []).append(row)
    return out


def check_table_and_videos(folder: Path, videos: dict[str, Path], feed: Feed,
                           indices: dict[str, list[int]], lost: dict[str, set[int]] | None = None
                           ) -> None:
    """frames.csv holds one row per (camera, index) in ``indices``, drop rows exactly where
    drops (or losses) were, and each video decodes to exactly the frames sent, pixel for pixel."""
    lost = lost or {}
    table = rows_by_camera(read_rows(folder / "frames.csv"))
    assert sorted(table) == sorted(indices)
    for cam, want in indices.items():
        rows = table[cam]
        assert [int(r["trigger_index"]) for r in rows] == want, cam
        for r in rows:
            n = int(r["trigger_index"])
            is_lost = n in lost.get(cam, set())
            is_drop = n in feed.dropped[cam] or is_lost
            assert int(r["dropped"]) == is_drop, (cam, n)
            assert int(r["lost_in_transport"]) == is_lost, (cam, n)
            assert (int(r["video_frame"]) == -1) == is_drop, (cam, n)
            if not is_lost:  # the node's stamps travel into the table
                assert int(r["frame_id"]) == n
                assert int(r["t_pi_ns"]) == n * 10_000_000 + 1
        kept = [int(r["trigger_index"]) for r in rows if int(r["video_frame"]) >= 0]
        assert [int(r["video_frame"]) for r in rows if int(r["video_frame"]) >= 0] == \
            list(range(len(kept)))
        decoded = list(read_frames(videos[cam]))
        assert len(decoded) == len(kept), cam
        for n, img in zip(kept, decoded, strict=True):
            np.testing.assert_array_equal(img, feed.frames[cam][n], err_msg=f"{cam} frame {n}")


# -- recorder ----------------------------------------------------------------------------------


def test_recorder_keeps_every_valid_frame_and_counts_the_bad(
        fake: Callable[[RigConfig], FakeCameras], zctx: zmq.Context, run_dir: str,
        tmp_path: Path) -> None:
    rig = small_rig()
    feed = Feed(fake(rig))
    out = tmp_path / "session"
    rec = Recorder(rig, run_dir, out, zctx)
    running = Running(rec)
    feed.fake.wait()

    feed.session(range(N), DROPS)
    assert feed.all_bad_sent()
    assert running.alive, "a malformed message stopped the recorder"
    feed.eos(N - 1)
    summary = running.summary()

    # Headers only wake the recorder (it reads the stores): every malformed one is counted; the
    # ghost camera's header is valid and names no store, so it only wakes the recorder.
    bad = dict(feed.malformed)
    assert bad.pop("unknown-camera") == 1
    assert summary["malformed"] == bad
    assert sum(summary["malformed"].values()) == 2 * 7
    assert summary["stores_open"] == sorted(DROPS)
    assert summary["frames"] == {c: N - len(DROPS[c]) for c in DROPS}
    assert summary["frames_dropped"] == {c: len(DROPS[c]) for c in DROPS}
    assert summary["dropped_indices"] == {c: sorted(d) for c, d in DROPS.items()}
    assert summary["overruns"] == summary["lost_in_transport"] == {c: 0 for c in DROPS}
    assert summary["encode_backlog"] == {c: 0 for c in DROPS}
    assert summary["video_errors"] == {}
    assert summary["video"] == "on" and summary["lossless"] is True
    check_table_and_videos(out, {c: out / "video" / f"{c}.mkv" for c in DROPS}, feed,
                           {c: list(range(N)) for c in DROPS})
    assert json.loads((out / "recording.json").read_text())["frames"] == summary["frames"]


DYING_WRITER = """
import os, sys
import numpy as np
from rigstream.framestore import FrameStore, StoreLayout
cap, height, width, name, frames = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                    sys.argv[4], int(sys.argv[5]))
store = FrameStore.create(name, StoreLayout(cap, height, width))
for n in range(frames):  # as FakeCameras writes camera 1's frame n
    px = np.random.default_rng((1, n)).integers(0, 256, (height, width), dtype=np.uint8)
    store.write(n, px, frame_id=n, t_camera_ns=n * 10_000_000, t_pi_ns=n * 10_000_000 + 1,
                t_host_ns=n * 10_000_000 + 5, flags=0, truth_index=n)
print("ready", flush=True)
sys.stdin.readline()
os._exit(0)  # dies: neither ends its stream nor unlinks its store
"""


def test_recorder_writes_lost_rows_for_pulses_a_dead_camera_node_never_stored(
        fake: Callable[[RigConfig], FakeCameras], zctx: zmq.Context, run_dir: str,
        tmp_path: Path) -> None:
    """cam1's node (a real process) stores 0..4 and dies without ending its stream: once the
    recorder has read what it stored, cam1 is finished, and the pulses 5..9 that no record came
    for get rows marked lost_in_transport."""
    rig = small_rig()
    feed = Feed(fake(rig))
    cfg = rig.camera("cam1")
    feed.fake.stores["cam1"].close()  # the fake's cam1 store goes: a real process writes cam1
    name = store_name(run_dir, "cam1")
    node = subprocess.Popen(
        [sys.executable, "-c", DYING_WRITER, str(rig.store_frames()), str(cfg.height),
         str(cfg.width), name, "5"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2])
    pulses = Publisher(zctx, rig.address("pulses", run_dir), hwm=0)
    try:
        assert node.stdout is not None and node.stdout.readline().strip() == "ready"
        for n in range(5):
            feed.frames["cam1"][n] = feed.fake.pixels(1, n, (cfg.height, cfg.width))
        out = tmp_path / "session"
        rec = Recorder(rig, run_dir, out, zctx)
        running = Running(rec)
        feed.fake.wait()
        assert pulses.wait_for_subscribers(1, 5), "the recorder never subscribed to the pulses"
        for n in range(10):
            pulses.sock.send(protocol.encode(protocol.Pulse(index=n, t_pi_ns=n * 10_000_000 + 1)))
        for n in range(10):
            feed.frame("cam0", n)
        feed.fake.eos("cam0", 9)
        wait_until("the recorder to read cam1's five frames and all pulses",
                   lambda: rec.summary()["frames"]["cam1"] == 5
                   and rec.summary()["pulses"]["camera"] == 10)
        time.sleep(0.3)  # longer than the recorder's check of a writer's process
        assert running.alive, "the recorder finished cam1 while its writer was alive"

        assert node.stdin is not None
        node.stdin.close()  # the node dies
        assert node.wait(10) == 0
        summary = running.summary()
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
        pulses.close()
        framestore.unlink(name)

    lost = {"cam0": set(), "cam1": {5, 6, 7, 8, 9}}
    assert summary["lost_in_transport"] == {"cam0": 0, "cam1": 5}
    assert summary["frames_dropped"] == {"cam0": 0, "cam1": 5}
    assert summary["dropped_indices"] == {"cam0": [], "cam1": [5, 6, 7, 8, 9]}
    assert summary["frames"] == {"cam0": 10, "cam1": 5}
    assert summary["overruns"] == {"cam0": 0, "cam1": 0}
    check_table_and_videos(out, {c: out / "video" / f"{c}.mkv" for c in lost}, feed,
                           {c: list(range(10)) for c in lost}, lost)


def test_recorder_table_is_flushed_while_it_runs(
        fake: Callable[[RigConfig], FakeCameras], zctx: zmq.Context, run_dir: str,
        tmp_path: Path) -> None:
    rig = small_rig(recording={"flush_interval_s": 0.1})
    feed = Feed(fake(rig))
    out = tmp_path / "session"
    running = Running(Recorder(rig, run_dir, out, zctx))
    feed.fake.wait()

    feed.session(range(10), {"cam1": {4}}, malformed=False)
    wait_until("frames.csv to hold the first 20 rows",
               lambda: len(read_rows(out / "frames.csv")) == 20)
    assert running.alive
    rows = rows_by_camera(read_rows(out / "frames.csv"))
    assert [int(r["trigger_index"]) for r in rows["cam0"]] == list(range(10))
    assert [int(r["dropped"]) for r in rows["cam1"]] == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]

    feed.eos(9)
    summary = running.summary()
    assert summary["frames"] == {"cam0": 10, "cam1": 9}
    assert len(read_rows(out / "frames.csv")) == 20


# -- clip service ------------------------------------------------------------------------------


def test_clip_service_saves_complete_clips_and_merges_overlapping_events(
        fake: Callable[[RigConfig], FakeCameras], zctx: zmq.Context, run_dir: str,
        tmp_path: Path) -> None:
    # Stores that hold the whole session, so clip writing can never lag behind them.
    rig = small_rig(ring_buffer={"pre_s": 0.05, "post_s": 0.03, "margin_s": 1.0})
    pre, post = rig.frames_per(0.05), rig.frames_per(0.03)
    assert (pre, post) == (5, 3) and rig.store_frames() > N
    feed = Feed(fake(rig))
    out = tmp_path / "session"
    service = ClipService(rig, run_dir, out, zctx)
    # Two overlapping events before the frames of their windows arrive: one clip [7, 17].
    service.add_event(Event(name="reach", source="test", trigger_index=12))
    service.add_event(Event(name="grasp", source="test", trigger_index=14))
    running = Running(service)
    feed.fake.wait()

    feed.session(range(N), DROPS)
    assert feed.all_bad_sent()
    # An event over the wire once its history is in the stores: clip [25, 33].
    send_event(zctx, rig.address("events", run_dir),
               Event(name="rear", source="test", trigger_index=30))
    wait_until("the clip service to take the third event",
               lambda: len(read_rows(out / "events.csv")) == 3)
    assert running.alive
    feed.eos(N - 1)
    summary = running.summary()

    # Headers only wake the service (it reads the stores): every malformed one is counted; the
    # ghost camera's header is valid and names no store, so it only wakes the service.
    bad = dict(feed.malformed)
    assert bad.pop("unknown-camera") == 1
    assert summary["malformed"] == bad
    assert summary["stores_open"] == sorted(DROPS)
    assert summary["ring_capacity_frames"] == rig.store_frames()
    assert summary["ring_fill"] == {c: round(N / rig.store_frames(), 3) for c in DROPS}
    assert summary["events_malformed"] == {}
    assert summary["clips_pending"] == 0
    clips = sorted(Path(c) for c in summary["clips"])
    assert [c.name for c in clips] == ["clip_001_n12", "clip_002_n30"]
    windows = [(12 - pre, 14 + post, ["reach", "grasp"]), (30 - pre, 30 + post, ["rear"])]
    for folder, (start, end, names) in zip(clips, windows, strict=True):
        info = json.loads((folder / "event.json").read_text())
        assert (info["start_index"], info["end_index"]) == (start, end)
        assert [e["name"] for e in info["events"]] == names
        assert info["missing_rows"] == 0
        check_table_and_videos(folder, {c: folder / f"{c}.mkv" for c in DROPS}, feed,
                               {c: list(range(start, end + 1)) for c in DROPS})
    events = read_rows(out / "events.csv")
    assert [(e["name"], e["clip"]) for e in events] == [
        ("reach", "clip_001_n12"), ("grasp", "clip_001_n12"), ("rear", "clip_002_n30")]


def test_events_with_their_own_window_get_exact_clips_of_their_own(
        fake: Callable[[RigConfig], FakeCameras], zctx: zmq.Context, run_dir: str,
        tmp_path: Path) -> None:
    """A rule's clip (``data["clip"]``) is exactly [n - pre, n + post] of its own window, never
    merged, even where two windows overlap; a malformed window is counted and the event still
    gets the rig's window."""
    rig = small_rig(ring_buffer={"pre_s": 0.05, "post_s": 0.03, "margin_s": 1.0})
    feed = Feed(fake(rig))
    out = tmp_path / "session"
    service = ClipService(rig, run_dir, out, zctx)
    window = {"pre_s": 0.1, "post_s": 0.05}  # 10 and 5 frames at 100 Hz
    service.add_event(Event(name="reach", source="rules", trigger_index=15, data={"clip": window}))
    service.add_event(Event(name="reach", source="rules", trigger_index=18, data={"clip": window}))
    service.add_event(Event(name="odd", source="test", trigger_index=30, data={"clip": {"pre_s": "x"}}))
    running = Running(service)
    feed.fake.wait()
    feed.session(range(N), {})
    feed.eos(N - 1)
    summary = running.summary()
    clips = sorted(Path(c) for c in summary["clips"])
    assert [c.name for c in clips] == ["clip_001_n15", "clip_002_n18", "clip_003_n30"]
    for folder, (start, end) in zip(clips, [(5, 20), (8, 23), (25, 33)], strict=True):
        info = json.loads((folder / "event.json").read_text())
        assert (info["start_index"], info["end_index"]) == (start, end) and info["missing_rows"] == 0
        check_table_and_videos(folder, {c: folder / f"{c}.mkv" for c in DROPS}, feed,
                               {c: list(range(start, end + 1)) for c in DROPS})
    assert summary["events_malformed"] == {"invalid": 1}


# -- assembler ---------------------------------------------------------------------------------


def test_assembler_sets_every_index_and_counts_the_bad(
        fake: Callable[[RigConfig], FakeCameras], zctx: zmq.Context, run_dir: str) -> None:
    rig = small_rig()
    feed = Feed(fake(rig))
    assembler = Assembler(rig, run_dir, zctx)
    sets = subscriber(zctx, rig.address("framesets", run_dir))
    assert assembler.pub.wait_for_subscribers(1, 5), "frame set subscriber never arrived"
    running = Running(assembler)
    feed.fake.wait()

    feed.session(range(N), DROPS)
    assert feed.all_bad_sent()
    assert running.alive
    feed.eos(N - 1)
    summary = running.summary()

    got = []
    while sets.poll(2000):
        got.append(decode_frameset(sets.recv_multipart()))
    sets.close()
    assert [head.trigger_index for head, _ in got] == list(range(N))
    assert [head.seq for head, _ in got] == list(range(N))
    for head, views in got:
        n = head.trigger_index
        missing = [c for c in DROPS if n in DROPS[c]]
        assert head.missing == missing, n
        assert head.cameras == [c for c in DROPS if c not in missing]
        assert head.t_pi_ns == n * 10_000_000 + 1
        assert head.reasons == ["dropped"] * len(missing), n
        assert [h.camera for h in views] == head.cameras
        for h in views:  # a set names slots; the pixels stay in the stores
            store = feed.fake.stores[h.camera]
            assert h.trigger_index == n and h.slot == n % store.capacity and store.holds(n)
            np.testing.assert_array_equal(store.pixels(n), feed.frames[h.camera][n])

    incomplete = len(DROPS["cam0"] | DROPS["cam1"])
    assert summary["framesets_complete"] == N - incomplete
    assert summary["framesets_incomplete"] == incomplete
    assert summary["framesets_mixed"] == 0
    assert summary["missing_indices"] == {c: sorted(d) for c, d in DROPS.items()}
    assert summary["missing_reasons"] == {c: {"dropped": len(d)} for c, d in DROPS.items()}
    # Headers only wake the assembler: the bad ones are counted, a ghost camera's is ignored
    # (the assembler reads the rig's stores, where no ghost writes).
    assert summary["malformed"] == {k: v for k, v in feed.malformed.items() if k != "unknown-camera"}
    assert summary["overruns"] == {"cam0": 0, "cam1": 0}
    assert summary["pending"] == 0


def test_clip_numbers_stay_unique_while_a_clip_is_being_finished(
        fake: Callable[[RigConfig], FakeCameras], zctx: zmq.Context, run_dir: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An event that comes while the writer finishes a clip (closing its videos) opens a new
    clip with a number, and a folder, of its own."""
    closing, release = threading.Event(), threading.Event()

    class SlowToClose(ringbuffer.VideoWriter):
        def close(self) -> None:
            if not closing.is_set():  # the first clip's first video holds the writer here
                closing.set()
                assert release.wait(10)
            super().close()

    monkeypatch.setattr(ringbuffer, "VideoWriter", SlowToClose)
    rig = small_rig(ring_buffer={"pre_s": 0.05, "post_s": 0.03, "margin_s": 1.0})
    feed = Feed(fake(rig))
    out = tmp_path / "session"
    service = ClipService(rig, run_dir, out, zctx)
    first = service.add_event(Event(name="first", trigger_index=5))
    assert first is not None
    running = Running(service)
    feed.fake.wait()

    feed.session(range(10), malformed=False)
    assert closing.wait(5), "the first clip was never finished"
    second = service.add_event(Event(name="second", trigger_index=5))
    assert second is not None
    release.set()
    feed.eos(9)
    summary = running.summary()

    assert (first.number, second.number) == (1, 2)
    assert first.folder != second.folder
    assert sorted(Path(c).name for c in summary["clips"]) == ["clip_001_n5", "clip_002_n5"]
    for folder, name in ((first.folder, "first"), (second.folder, "second")):
        info = json.loads((folder / "event.json").read_text())
        assert [e["name"] for e in info["events"]] == [name]
        check_table_and_videos(folder, {c: folder / f"{c}.mkv" for c in feed.cameras}, feed,
                               {c: list(range(0, 9)) for c in feed.cameras})
