"""The shared-memory frame store: slots, the seqlock, lossless cursors and overruns, end of
stream, and segments that outlive no one (real /dev/shm segments, real processes)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from rigstream import framestore
from rigstream.framestore import (
    FrameStore,
    StoreCursor,
    StoreError,
    StoreLayout,
    StoreMissing,
    frame_header,
    store_name,
)
from rigstream.protocol import FLAG_DROPPED, FLAG_INCOMPLETE

LAYOUT = StoreLayout(capacity=8, height=6, width=10)


def image(n: int, layout: StoreLayout = LAYOUT) -> np.ndarray:
    return np.full(layout.frame_shape, n % 251, np.uint8) + np.arange(layout.width, dtype=np.uint8)


def put(store: FrameStore, n: int, drop: bool = False) -> int:
    return store.write(n, None if drop else image(n, store.layout), frame_id=n + 100,
                       t_camera_ns=n * 7, t_pi_ns=n * 10, t_host_ns=n * 11,
                       flags=FLAG_DROPPED | FLAG_INCOMPLETE if drop else 0, truth_index=n,
                       exposure_ns=2_000_000)


@pytest.fixture
def name() -> Iterator[str]:
    n = store_name(f"/tmp/test-{uuid.uuid4().hex}", "cam0")
    yield n
    framestore.unlink(n)


def test_frames_and_notices_round_trip_with_their_headers(name: str) -> None:
    with FrameStore.create(name, LAYOUT) as w, FrameStore.attach(name) as r:
        assert r.layout == LAYOUT and r.head == 0 and r.end == -1 and not r.ended
        cursor = StoreCursor(r)
        assert cursor.take() is None  # nothing written yet
        for n in range(5):
            assert put(w, n, drop=n == 3) == n % LAYOUT.capacity
        got = [cursor.take() for _ in range(5)]
        assert cursor.take() is None
        assert [g.state for g in got if g] == ["frame", "frame", "frame", "notice", "frame"]
        for rec in got:
            assert rec is not None
            h = frame_header("cam0", r.layout, rec.index, rec.fields)
            assert (h.trigger_index, h.frame_id, h.t_pi_ns, h.t_camera_ns, h.t_host_ns) == (
                rec.index, rec.index + 100, rec.index * 10, rec.index * 7, rec.index * 11)
            assert h.exposure_us == 2000 and h.truth_index == rec.index
            assert h.slot == rec.index % LAYOUT.capacity
            if rec.state == "frame":
                np.testing.assert_array_equal(rec.pixels, image(rec.index))
            else:
                assert h.flags == FLAG_DROPPED | FLAG_INCOMPLETE and rec.pixels is None
        w.finish(5)
        assert r.end == 5 and r.ended and cursor.done


def test_a_reader_that_falls_behind_gets_exactly_the_overwritten_indices(name: str) -> None:
    with FrameStore.create(name, LAYOUT) as w, FrameStore.attach(name) as r:
        cursor = StoreCursor(r)
        out = np.zeros(LAYOUT.frame_shape, np.uint8)
        for n in range(3):
            put(w, n)
        assert cursor.take(out).state == "frame"  # index 0 read; then the writer runs ahead
        for n in range(3, 20):
            put(w, n)
        w.finish(20)
        states = {}
        while (rec := cursor.take(out)) is not None:
            states[rec.index] = rec.state
            if rec.state == "frame":
                np.testing.assert_array_equal(out, image(rec.index))
        assert cursor.done and list(states) == list(range(1, 20))
        # The store holds the last 8 (12..19); 1..11 were overwritten before they were read.
        assert [n for n, s in states.items() if s == "overrun"] == list(range(1, 12))
        assert cursor.overruns == 11


def test_a_read_torn_by_the_writer_is_detected(name: str) -> None:
    with FrameStore.create(name, LAYOUT) as w, FrameStore.attach(name) as r:
        put(w, 0)
        view = r.pixels(0)  # in place, as the pose engine reads
        assert r.holds(0)
        put(w, LAYOUT.capacity - 1)
        assert r.holds(0)
        put(w, LAYOUT.capacity)  # lands in slot 0
        assert not r.holds(0) and r.holds(LAYOUT.capacity)
        np.testing.assert_array_equal(view, image(LAYOUT.capacity))
        assert r.read(0) is not None and r.read(0).state == "overrun"


def test_indices_must_increase_and_readers_cannot_write(name: str) -> None:
    with FrameStore.create(name, LAYOUT) as w, FrameStore.attach(name) as r:
        put(w, 4)
        with pytest.raises(StoreError, match="index 2 written after 4"):
            put(w, 2)
        with pytest.raises(StoreError, match="read-only"):
            put(r, 5)
        with pytest.raises(ValueError):
            r.pixels(4)[0, 0] = 1


def test_missing_full_and_leftover_segments_are_one_line_errors(name: str, monkeypatch) -> None:
    with pytest.raises(StoreMissing, match="no segment"):
        FrameStore.attach(name)
    big = StoreLayout(capacity=1000, height=1080, width=1440)
    monkeypatch.setattr(framestore, "shm_free_bytes", lambda: 10 * 2**20)
    with pytest.raises(StoreError, match=r"needs 1\.45 GiB of shared memory .* has 0\.01 GiB free"):
        FrameStore.create(name, big)
    assert not (framestore.SHM_DIR / name).exists()
    monkeypatch.undo()
    with FrameStore.create(name, LAYOUT), pytest.raises(StoreError, match="already exists"):
        FrameStore.create(name, LAYOUT)
    assert not (framestore.SHM_DIR / name).exists()  # the writer's close unlinked it


def _writer(name: str, frames: int, ready: mp.Event) -> None:  # type: ignore[valid-type]
    store = FrameStore.create(name, LAYOUT)
    for n in range(frames):
        put(store, n)
    ready.set()
    time.sleep(60)  # killed by the test


def test_a_killed_writer_ends_the_stream_and_its_segment_is_swept(name: str) -> None:
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_writer, args=(name, 5, ready), daemon=True)
    proc.start()
    assert ready.wait(30)
    reader = FrameStore.attach(name)
    assert reader.writer_pid == proc.pid and not reader.ended
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert reader.writer_alive(every_s=0) is False and reader.ended and reader.end == -1
    cursor = StoreCursor(reader)
    assert [cursor.take().state for _ in range(5)] == ["frame"] * 5  # what it wrote stays readable
    assert name in framestore.sweep_stale()
    assert not (framestore.SHM_DIR / name).exists()
    np.testing.assert_array_equal(reader.pixels(4), image(4))  # the mapping outlives the name
    reader.close()


def _late_writer(name: str, ready: mp.Event, go: mp.Event) -> None:  # type: ignore[valid-type]
    store = FrameStore.create(name, LAYOUT)
    put(store, 0)
    ready.set()
    go.wait(30)
    put(store, 1)
    time.sleep(0.5)
    store.finish(2)
    time.sleep(30)  # the test ends it


@pytest.mark.skipif(framestore._syscall is None, reason="no futex on this host")
def test_a_reader_sleeping_on_the_head_is_woken_by_the_writer_in_another_process(name: str) -> None:
    ctx = mp.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_late_writer, args=(name, ready, go), daemon=True)
    proc.start()
    try:
        assert ready.wait(30)
        r = FrameStore.attach(name)
        assert r.wait_head(0, 5.0) is True  # already moved: no sleep
        t0 = time.monotonic()
        assert r.wait_head(1, 0.05) is False and time.monotonic() - t0 >= 0.04  # timed out
        go.set()
        assert r.wait_head(1, 20.0) is True and r.head == 2 and r.holds(1)  # woken by the write
        t0 = time.monotonic()
        assert r.wait_head(2, 20.0) is False and r.end == 2  # woken by the end, head unmoved
        assert time.monotonic() - t0 < 15
        assert r.wait_head(2, 20.0) is False  # ended: returns at once
        r.close()
    finally:
        proc.kill()
        proc.join(10)


def test_without_futexes_wait_head_says_so(name: str, monkeypatch) -> None:
    monkeypatch.setattr(framestore, "_syscall", None)
    with FrameStore.create(name, LAYOUT) as w:
        put(w, 0)
        assert w.wait_head(1, 1.0) is None


def test_unlink_run_removes_only_that_runs_stores() -> None:
    run_a, run_b = f"/tmp/a-{uuid.uuid4().hex}", f"/tmp/b-{uuid.uuid4().hex}"
    a0 = FrameStore.create(store_name(run_a, "cam0"), LAYOUT)
    a1 = FrameStore.create(store_name(run_a, "cam1"), LAYOUT)
    b0 = FrameStore.create(store_name(run_b, "cam0"), LAYOUT)
    try:
        assert sorted(framestore.unlink_run(run_a)) == sorted([a0.name, a1.name])
        assert (framestore.SHM_DIR / b0.name).exists()
    finally:
        for s in (a0, a1, b0):
            s.close()
    assert not (framestore.SHM_DIR / b0.name).exists()


def test_layout_sizes_the_reference_rig() -> None:
    # 5 s of history + 1 s margin at 226 Hz of 1440x1080 mono8: about 2.1 GB per camera.
    layout = StoreLayout(capacity=226 * 6, height=1080, width=1440)
    assert layout.frame_bytes == 1_555_200 and layout.stride % 64 == 0
    assert layout.pixels_offset % framestore.PAGE == 0
    assert 2.10e9 < layout.total_bytes < 2.11e9
