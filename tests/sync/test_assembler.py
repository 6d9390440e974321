"""The FrameSet assembler: matching by trigger index, settling, deadlines, flagged frames,
overruns.

FakeCameras write real frame stores (shared memory) and publish the headers that wake the
assembler; the assembler runs in a thread and the test reads its frame sets (headers naming
slots, no pixels) from a SUB on the framesets address, and the pixels from the stores.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import numpy as np
import pytest
import zmq

from rigstream import protocol
from rigstream.config import RigConfig
from rigstream.frames import CameraStores
from rigstream.protocol import FLAG_TIMING, FrameHeader, FrameSetHeader, decode_frameset
from rigstream.sync.assembler import Assembler, NewestSet
from rigstream.transport import subscriber
from tests.conftest import FakeCameras, run_in_thread, small_rig

FrameSet = tuple[FrameSetHeader, list[FrameHeader]]


def store_frame(fake: FakeCameras, h: FrameHeader, pixels: np.ndarray) -> None:
    """Write a frame into its camera's store and publish its header, as a camera node does."""
    h.slot = fake.stores[h.camera].write(
        h.trigger_index, pixels, frame_id=h.frame_id, t_camera_ns=h.t_camera_ns, t_pi_ns=h.t_pi_ns,
        t_host_ns=h.t_host_ns, flags=h.flags, truth_index=h.truth_index)
    protocol.send_frame(fake.pubs[h.camera].sock, h, None)


class Rig:
    """FakeCameras -> Assembler (in a thread) -> a SUB on the frame sets."""

    def __init__(self, rig: RigConfig, run: str, ctx: zmq.Context, start: bool = True) -> None:
        self.rig = rig
        self.fake = FakeCameras(rig, run, ctx)
        self.sent: dict[tuple[str, int], np.ndarray] = {}
        # The test reads every set, however fast they come (the pose engine keeps the newest).
        self.assembler = Assembler(rig, run, ctx, sets_hwm=0)
        self.sets = subscriber(ctx, rig.address("framesets", run), hwm=0)
        assert self.assembler.pub.wait_for_subscribers(1, 5), "frame set subscriber never arrived"
        self.fake.wait()  # the assembler opened every store
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.result: dict[str, Any] = {}
        if start:
            self.start()

    def start(self) -> None:
        self.thread, self.result = run_in_thread(lambda: self.assembler.run_forever(self.stop))

    def frame(self, camera: str, n: int, flags: int = 0, truth_index: int | None = None) -> None:
        h = self.fake.header(camera, n, flags)
        if truth_index is not None:
            h.truth_index = truth_index
        idx = [c.name for c in self.rig.cameras].index(camera)
        px = self.fake.pixels(idx, n, (h.height, h.width))
        store_frame(self.fake, h, px)
        self.sent[camera, n] = px

    def frames(self, camera: str, indices: range | list[int]) -> None:
        for n in indices:
            self.frame(camera, n)

    def next_set(self, timeout_s: float = 3.0) -> FrameSet:
        assert self.sets.poll(int(timeout_s * 1000)), f"no frame set within {timeout_s} s"
        parts = self.sets.recv_multipart()
        assert len(parts) == 1, "a frame set is one small message"
        head, views = decode_frameset(parts)
        for h in views:  # every slot named holds the frame written for that camera and index
            store = self.fake.stores[h.camera]
            assert h.trigger_index == head.trigger_index
            assert h.slot == h.trigger_index % store.capacity and store.holds(h.trigger_index)
            np.testing.assert_array_equal(store.pixels(h.trigger_index), self.sent[h.camera, h.trigger_index])
        return head, views

    def nothing_for(self, seconds: float) -> bool:
        return not self.sets.poll(int(seconds * 1000))

    def end(self, last: int) -> dict[str, Any]:
        for cam in self.fake.pubs:
            self.fake.eos(cam, last)
        assert self.thread is not None
        self.thread.join(10)
        if self.thread.is_alive():
            self.stop.set()
            self.thread.join(15)
            pytest.fail("assembler did not return after every camera's end of stream")
        if "error" in self.result:
            raise self.result["error"]
        return self.result["value"]

    def close(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            self.stop.set()
            self.thread.join(15)
        if self.thread is None:
            self.assembler.close()
        self.sets.close()
        self.fake.close()


@pytest.fixture
def make(zctx: zmq.Context, run_dir: str) -> Iterator[Any]:
    made: list[Rig] = []

    def start(rig: RigConfig, **kw: Any) -> Rig:
        made.append(Rig(rig, run_dir, zctx, **kw))
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
        assert [h.camera for h in views] == head.cameras
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
    assert head.cameras == ["cam0"] and head.missing == ["cam1"] and head.reasons == ["not-written"]
    assert [h.camera for h in views] == ["cam0"]

    r.frame("cam0", 4)
    head, _ = r.next_set()
    assert head.trigger_index == 4 and head.missing == []
    summary = r.end(4)
    assert summary["missing_indices"] == {"cam0": [], "cam1": [3]}
    assert summary["missing_reasons"] == {"cam0": {}, "cam1": {"not-written": 1}}
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
    assert head.cameras == ["cam0"] and head.missing == ["cam1"] and head.reasons == ["silent"]
    assert [h.camera for h in views] == ["cam0"]
    assert deadline_s <= waited < deadline_s + 3

    r.frame("cam1", 2)  # too late: its set is gone, and no second set 2 goes out
    r.frames("cam0", [3])
    r.frames("cam1", [3])
    head, _ = r.next_set()
    assert head.trigger_index == 3 and head.missing == []
    summary = r.end(3)
    assert r.nothing_for(0.2)
    assert summary["missing"] == {"cam0": 0, "cam1": 1}
    assert summary["late"] == {"cam0": 0, "cam1": 1}
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
            assert head.cameras == ["cam0"] and head.missing == ["cam1"] and head.reasons == ["timing"]
            assert [h.camera for h in views] == ["cam0"]
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
    assert {h.camera: h.truth_index for h in got[2][1]} == {"cam0": 2, "cam1": 3}
    assert summary["framesets_mixed"] == 1
    assert summary["framesets_complete"] == 4


def test_a_camera_whose_stream_ended_is_not_waited_for(make: Any) -> None:
    r = make(small_rig(transport={"frameset_deadline_ms": 20_000}))
    r.frames("cam0", range(2))
    r.frames("cam1", range(2))
    assert [r.next_set()[0].trigger_index for _ in range(2)] == [0, 1]
    r.fake.eos("cam1", 1)  # cam1's stream ends after index 1; cam0 goes on
    t_sent = time.monotonic()
    r.frames("cam0", range(2, 4))
    got = [r.next_set() for _ in range(2)]
    assert time.monotonic() - t_sent < 5, "sets waited for a camera whose stream had ended"
    assert [(h.trigger_index, h.missing, h.reasons) for h, _ in got] == [
        (2, ["cam1"], ["ended"]), (3, ["cam1"], ["ended"])]
    r.fake.eos("cam0", 3)
    r.thread.join(10)
    assert not r.thread.is_alive(), "assembler did not return after every stream ended"
    assert r.result["value"]["missing_reasons"] == {"cam0": {}, "cam1": {"ended": 2}}


def test_an_assembler_more_than_a_ring_behind_reports_the_overwritten_indices(make: Any) -> None:
    rig = small_rig()
    cap = rig.store_frames()
    total = 2 * cap + cap // 2
    r = make(rig, start=False)
    for n in range(total):  # all written before the assembler reads a thing
        r.frame("cam0", n)
        r.frame("cam1", n)
    lost = total - cap  # indices [0, lost) were overwritten by later laps of the ring
    r.start()
    got = [r.next_set() for _ in range(total)]
    summary = r.end(total - 1)
    assert r.nothing_for(0.2), "an index went out twice"

    assert [head.trigger_index for head, _ in got] == list(range(total))
    assert [head.seq for head, _ in got] == list(range(total))
    for head, views in got[:lost]:
        assert (head.cameras, views) == ([], [])
        assert head.missing == ["cam0", "cam1"] and head.reasons == ["overrun", "overrun"]
    for head, views in got[lost:]:
        assert head.missing == [] and [h.camera for h in views] == ["cam0", "cam1"]
    assert summary["missing_indices"] == {c: list(range(lost)) for c in ("cam0", "cam1")}
    assert summary["missing_reasons"] == {c: {"overrun": lost} for c in ("cam0", "cam1")}
    assert summary["overruns"] == {"cam0": lost, "cam1": lost}
    assert summary["framesets_complete"] == cap and summary["framesets_incomplete"] == lost
    assert summary["framesets_mixed"] == 0 and summary["pending"] == 0


def _frame_header(camera: str, n: int, slot: int = 5) -> FrameHeader:
    return FrameHeader(camera=camera, seq=n, frame_id=n, trigger_index=n, t_camera_ns=0, t_host_ns=0,
                       width=64, height=48, slot=slot)


@pytest.mark.parametrize(("parts", "reason"), [
    ([], "truncated"),
    ([protocol.encode(FrameSetHeader(seq=0, trigger_index=5, t_pi_ns=0, cameras=["cam0"],
                                     frames=[_frame_header("cam0", 5)])), b"pixels"], "invalid"),
    ([b"\xc1garbage"], "undecodable"),
    ([msgspec.msgpack.encode({"type": "frameset", "v": 7})], "unknown-version"),
    ([protocol.encode(_frame_header("cam0", 5))], "unexpected-type"),
    ([protocol.encode(FrameSetHeader(seq=0, trigger_index=5, t_pi_ns=0, cameras=["cam0"]))], "truncated"),
    ([protocol.encode(FrameSetHeader(seq=0, trigger_index=5, t_pi_ns=0, cameras=["cam0"],
                                     frames=[_frame_header("cam1", 5)]))], "invalid"),
    ([protocol.encode(FrameSetHeader(seq=0, trigger_index=5, t_pi_ns=0, cameras=["cam0"],
                                     frames=[_frame_header("cam0", 4)]))], "invalid"),
    ([protocol.encode(FrameSetHeader(seq=0, trigger_index=5, t_pi_ns=0, cameras=["cam0"],
                                     frames=[_frame_header("cam0", 5, slot=-1)]))], "invalid"),
    ([protocol.encode(FrameSetHeader(seq=0, trigger_index=5, t_pi_ns=0, cameras=["cam0"], missing=["cam0"],
                                     frames=[_frame_header("cam0", 5)]))], "invalid"),
    ([protocol.encode(FrameSetHeader(seq=0, trigger_index=5, t_pi_ns=0, cameras=[], missing=["cam0"],
                                     reasons=["dropped", "timing"]))], "invalid"),
])
def test_malformed_frame_sets_are_rejected_with_a_reason(parts: list[bytes], reason: str) -> None:
    with pytest.raises(protocol.ProtocolError) as info:
        decode_frameset(parts)
    assert info.value.reason == reason


def test_a_good_frame_set_decodes_to_its_slot_headers() -> None:
    head = FrameSetHeader(seq=3, trigger_index=5, t_pi_ns=7, cameras=["cam1"], missing=["cam0"],
                          frames=[_frame_header("cam1", 5)], reasons=["dropped"])
    got, views = decode_frameset([protocol.encode(head)])
    assert got == head and views == [_frame_header("cam1", 5)]


def test_a_camera_dead_before_the_newest_set_reader_started_does_not_hold_the_sets_back(
        zctx: zmq.Context, run_dir: str) -> None:
    """A pose engine restarted after a camera died: the dead camera's store is still there, its
    newest frame written long ago. The reader judges it by that frame's time, not by when it
    first looked, so it poses the newest set of the camera that went on (the dead one silent),
    not the dead camera's last index."""
    rig = small_rig()
    fake = FakeCameras(rig, run_dir, zctx)
    now = time.monotonic_ns()
    try:
        for cam, last, age_s in (("cam0", 9, 30.0), ("cam1", 99, 0.0)):
            for n in range(last + 1):
                h = fake.header(cam, n)
                h.t_host_ns = now - int(age_s * 1e9)
                fake._store(h, fake.pixels(0, n, (h.height, h.width)))
        stores = CameraStores(rig, run_dir, zctx, "test")
        newest = NewestSet(stores, ["cam0", "cam1"], deadline_s=0.5)
        head, frames = newest.take(-1)
        assert head.trigger_index == 99 and [f.camera for f in frames] == ["cam1"]
        assert head.missing == ["cam0"] and head.reasons == ["silent"]
        stores.close()
    finally:
        fake.close()
