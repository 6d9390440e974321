"""The FrameSet assembler: matching by trigger index, settling, deadlines, flagged frames.

The assembler runs in a thread on real ZeroMQ sockets, fed by FakeCameras; the test reads its
frame sets from a SUB on the framesets address.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from rigstream import protocol
from rigstream.config import RigConfig
from rigstream.protocol import FLAG_TIMING, FrameHeader, FrameSetHeader
from rigstream.sync.assembler import Assembler, decode_frameset
from rigstream.transport import subscriber
from tests.conftest import FakeCameras, run_in_thread, small_rig

FrameSet = tuple[FrameSetHeader, list[tuple[FrameHeader, np.ndarray]]]


class Rig:
    """FakeCameras -> Assembler (in a thread) -> a SUB on the frame sets."""

    def __init__(self, rig: RigConfig, run: str, ctx: zmq.Context) -> None:
        self.rig = rig
        self.fake = FakeCameras(rig, run, ctx)
        self.sent: dict[tuple[str, int], np.ndarray] = {}
        assembler = Assembler(rig, run, ctx)
        self.sets = subscriber(ctx, rig.address("framesets", run))
        assert assembler.pub.wait_for_subscribers(1, 5), "frame set subscriber never arrived"
        self.stop = threading.Event()
        self.thread, self.result = run_in_thread(lambda: assembler.run_forever(self.stop))
        self.fake.wait()

    def frame(self, camera: str, n: int, flags: int = 0, truth_index: int | None = None) -> None:
        h = self.fake.header(camera, n, flags)
        if truth_index is not None:
            h.truth_index = truth_index
        idx = [c.name for c in self.rig.cameras].index(camera)
        px = self.fake.pixels(idx, n, (h.height, h.width))
        protocol.send_frame(self.fake.pubs[camera].sock, h, px)
        self.sent[camera, n] = px

    def frames(self, camera: str, indices: range | list[int]) -> None:
        for n in indices:
            self.frame(camera, n)

    def next_set(self, timeout_s: float = 3.0) -> FrameSet:
        assert self.sets.poll(int(timeout_s * 1000)), f"no frame set within {timeout_s} s"
        head, views = decode_frameset(self.sets.recv_multipart())
        for h, px in views:  # every frame in a set is the one sent for that camera and index
            assert h.trigger_index == head.trigger_index
            np.testing.assert_array_equal(px, self.sent[h.camera, h.trigger_index])
        return head, views  # type: ignore[return-value]

    def nothing_for(self, seconds: float) -> bool:
        return not self.sets.poll(int(seconds * 1000))

    def end(self, last: int) -> dict[str, Any]:
        for cam in self.fake.pubs:
            self.fake.eos(cam, last)
        self.thread.join(10)
        if self.thread.is_alive():
            self.stop.set()
            self.thread.join(15)
            pytest.fail("assembler did not return after every camera's end of stream")
        if "error" in self.result:
            raise self.result["error"]
        return self.result["value"]

    def close(self) -> None:
        if self.thread.is_alive():
            self.stop.set()
            self.thread.join(15)
        self.sets.close()
        self.fake.close()


@pytest.fixture
def make(zctx: zmq.Context, run_dir: str) -> Iterator[Any]:
    made: list[Rig] = []

    def start(rig: RigConfig) -> Rig:
        made.append(Rig(rig, run_dir, zctx))
        return made[-1]

    yield start
    for r in made:
        r.close()


def test_sets_match_by_trigger_index_not_arrival(make: Any) -> None:
    r = make(small_rig(cameras=3))
    # Out of step: cam0 runs ten frames ahead, cam2 arrives in two halves around cam1.
    r.frames("cam0", range(10))
    r.frames("cam2", range(5))
    r.frames("cam1", range(10))
    r.frames("cam2", range(5, 10))
    got = [r.next_set() for _ in range(10)]
    summary = r.end(9)

    assert [head.trigger_index for head, _ in got] == list(range(10))
    for head, views in got:
        assert head.cameras == ["cam0", "cam1", "cam2"] and head.missing == []
        assert [h.camera for h, _ in views] == head.cameras
        assert head.t_pi_ns == head.trigger_index * 10_000_000 + 1
    assert summary["framesets_complete"] == 10
    assert summary["framesets_incomplete"] == 0
    assert summary["framesets_mixed"] == 0
    assert summary["pending"] == 0


def test_set_missing_a_camera_goes_out_once_that_camera_moved_past_it(make: Any) -> None:
    # A deadline far beyond the test's waits: only the camera moving on can settle the set.
    r = make(small_rig(transport={"frameset_deadline_ms": 20_000}))
    r.frames("cam0", range(4))
    r.frames("cam1", range(3))
    assert [r.next_set()[0].trigger_index for _ in range(3)] == [0, 1, 2]
    assert r.nothing_for(0.3), "set 3 went out while cam1 could still deliver its frame"

    t_sent = time.monotonic()
    r.frame("cam1", 4)  # cam1 skips 3 (no notice): its stream has moved past set 3
    head, views = r.next_set()
    assert time.monotonic() - t_sent < 5
    assert head.trigger_index == 3
    assert head.cameras == ["cam0"] and head.missing == ["cam1"]
    assert [h.camera for h, _ in views] == ["cam0"]

    r.frame("cam0", 4)
    head, _ = r.next_set()
    assert head.trigger_index == 4 and head.missing == []
    summary = r.end(4)
    assert summary["missing_indices"] == {"cam0": [], "cam1": [3]}
    assert summary["framesets_complete"] == 4 and summary["framesets_incomplete"] == 1


def test_set_missing_a_camera_goes_out_after_the_deadline(make: Any) -> None:
    deadline_s = 0.25
    r = make(small_rig(transport={"frameset_deadline_ms": deadline_s * 1000}))
    r.frames("cam0", range(2))
    r.frames("cam1", range(2))
    assert [r.next_set()[0].trigger_index for _ in range(2)] == [0, 1]

    t_sent = time.monotonic()
    r.frame("cam0", 2)  # cam1 stays silent: nothing says whether its frame 2 is coming
    head, views = r.next_set()
    waited = time.monotonic() - t_sent
    assert head.trigger_index == 2
    assert head.cameras == ["cam0"] and head.missing == ["cam1"]
    assert [h.camera for h, _ in views] == ["cam0"]
    assert deadline_s <= waited < deadline_s + 3

    r.frame("cam1", 2)  # too late: its set is gone, and no second set 2 goes out
    r.frames("cam0", [3])
    r.frames("cam1", [3])
    head, _ = r.next_set()
    assert head.trigger_index == 3 and head.missing == []
    summary = r.end(3)
    assert r.nothing_for(0.2)
    assert summary["missing"] == {"cam0": 0, "cam1": 1}
    assert summary["framesets_incomplete"] == 1 and summary["framesets_complete"] == 3


def test_frames_flagged_for_timing_are_left_out_and_counted(make: Any) -> None:
    r = make(small_rig())
    r.frames("cam0", range(5))
    for n in range(5):
        r.frame("cam1", n, flags=FLAG_TIMING if n in (2, 3) else 0)
    got = {head.trigger_index: (head, views) for head, views in (r.next_set() for _ in range(5))}
    summary = r.end(4)

    assert sorted(got) == list(range(5))
    for n, (head, views) in got.items():
        if n in (2, 3):
            assert head.cameras == ["cam0"] and head.missing == ["cam1"]
            assert [h.camera for h, _ in views] == ["cam0"]
        else:
            assert head.missing == [] and len(views) == 2
    assert summary["flagged"] == {"cam0": 0, "cam1": 2}
    assert summary["missing_indices"] == {"cam0": [], "cam1": [2, 3]}
    assert summary["framesets_mixed"] == 0


def test_sets_of_frames_from_different_pulses_are_counted_as_mixed(make: Any) -> None:
    r = make(small_rig())
    for n in range(4):
        r.frame("cam0", n)
        # cam1's frame 2 was really exposed on pulse 3 (a miscount the timing check missed).
        r.frame("cam1", n, truth_index=3 if n == 2 else None)
    got = [r.next_set() for _ in range(4)]
    summary = r.end(3)

    assert [head.trigger_index for head, _ in got] == [0, 1, 2, 3]
    assert all(head.missing == [] for head, _ in got)
    assert {h.camera: h.truth_index for h, _ in got[2][1]} == {"cam0": 2, "cam1": 3}
    assert summary["framesets_mixed"] == 1
    assert summary["framesets_complete"] == 4
