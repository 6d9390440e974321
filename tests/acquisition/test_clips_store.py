"""The clip service writing clips straight from the camera frame stores.

:class:`tests.conftest.FakeCameras` writes real shared-memory stores of ``rig.store_frames()``
slots; the clip service (``run_forever(stop)`` in a thread) reads them by trigger index. Clips
must hold exactly the pixels written (lossless codecs), every index the store had already
overwritten must be an ``overrun`` row and every index that never came a ``lost`` row (no
others), and hostile events must be counted without stopping the service.
"""

from __future__ import annotations

import csv
import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import zmq

from rigstream.acquisition import ringbuffer
from rigstream.acquisition.ringbuffer import (
    MAX_MERGING_CLIPS,
    MAX_PENDING_CLIPS,
    MAX_POST_S,
    ClipService,
    send_event,
)
from rigstream.acquisition.video import read_frames
from rigstream.config import RigConfig
from rigstream.protocol import Event
from tests.conftest import FakeCameras, run_in_thread, small_rig


def rig_with(codec: str = "ffv1", **top: Any) -> RigConfig:
    doc = msgspec.to_builtins(small_rig(**top))
    doc["recording"]["codec"] = codec
    return msgspec.convert(doc, type=RigConfig, strict=True)


class Running:
    """The service's ``run_forever(stop)`` in a thread, subscribed to every camera."""

    def __init__(self, service: ClipService, cams: FakeCameras) -> None:
        self.stop = threading.Event()
        self.thread, self.result = run_in_thread(lambda: service.run_forever(self.stop))
        cams.wait()  # it subscribes only once it has opened the camera's store

    def summary(self, timeout_s: float = 20.0) -> dict[str, Any]:
        """The summary once the service returned by itself (every stream ended, no clip left)."""
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            self.stop.set()
            self.thread.join(15)
            pytest.fail(f"clip service did not return within {timeout_s} s of the end of streams")
        if "error" in self.result:
            raise self.result["error"]
        return self.result["value"]


def rows(folder: Path) -> dict[str, list[dict[str, str]]]:
    with open(folder / "frames.csv", newline="") as f:
        out: dict[str, list[dict[str, str]]] = {}
        for row in csv.DictReader(f):
            out.setdefault(row["camera"], []).append(row)
        return out


def info(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "event.json").read_text())


def events_logged(out: Path) -> int:
    """Events the service took (events.csv rows)."""
    with open(out / "events.csv", newline="") as f:
        return len(list(csv.DictReader(f)))


def wait_for(what: str, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("codec", ["raw", "ffv1"])
def test_clip_pixels_are_bit_exact_what_the_store_held(
        codec: str, fake: Callable[[RigConfig], FakeCameras], zctx: zmq.Context, run_dir: str,
        tmp_path: Path) -> None:
    """An event given by its pulse time, half of its post window still to come: the clip waits
    for it, and holds every frame as written (pixels and the node's stamps) and every drop."""
    rig = rig_with(codec)
    cams = fake(rig)
    service = ClipService(rig, run_dir, tmp_path / "session", zctx)
    running = Running(service, cams)
    drops = {"cam0": {12}, "cam1": {20}}
    written: dict[str, dict[int, np.ndarray]] = {c: {} for c in cams.stores}

    def write(indices: range) -> None:
        for n in indices:
            for cam in cams.stores:
                if n in drops[cam]:
                    cams.drop(cam, n)
                else:
                    written[cam][n] = cams.frame(cam, n)

    write(range(21))
    # Index 18's pulse time, a little off: the nearest stored pulse is 18's. Window [8, 23].
    send_event(zctx, rig.address("events", run_dir),
               Event(name="reach", source="test", t_pi_ns=18 * 10_000_000 + 3_000_000,
                     data={"clip": {"pre_s": 0.1, "post_s": 0.05}}))
    wait_for("the event", lambda: events_logged(tmp_path / "session") == 1)
    write(range(21, 30))
    for cam in cams.stores:
        cams.eos(cam, 29)
    summary = running.summary()

    assert summary["events_malformed"] == {} and summary["clips_pending"] == 0
    [folder] = [Path(c) for c in summary["clips"]]
    assert folder.name == "clip_001_n18"
    meta = info(folder)
    assert (meta["start_index"], meta["end_index"], meta["missing_rows"]) == (8, 23, 0)
    assert meta["events"][0]["trigger_index"] == 18
    table = rows(folder)
    for cam in cams.stores:
        got = table[cam]
        assert [int(r["trigger_index"]) for r in got] == list(range(8, 24))
        for r in got:
            n = int(r["trigger_index"])
            assert int(r["dropped"]) == (n in drops[cam]), (cam, n)
            assert int(r["lost_in_transport"]) == 0, (cam, n)
            assert (int(r["frame_id"]), int(r["t_camera_ns"]), int(r["t_pi_ns"]), int(r["t_host_ns"])) \
                == (n, n * 10_000_000, n * 10_000_000 + 1, n * 10_000_000 + 5), (cam, n)
        kept = [int(r["trigger_index"]) for r in got if int(r["video_frame"]) >= 0]
        assert kept == [n for n in range(8, 24) if n not in drops[cam]]
        assert [int(r["video_frame"]) for r in got if int(r["video_frame"]) >= 0] == list(range(len(kept)))
        decoded = list(read_frames(folder / f"{cam}.mkv"))
        assert len(decoded) == len(kept)
        for n, img in zip(kept, decoded, strict=True):
            assert img.dtype == np.uint8 and img.shape == written[cam][n].shape
            assert np.array_equal(img, written[cam][n]), f"{cam} frame {n} differs"


def test_history_already_overwritten_gives_missing_rows_for_exactly_those_indices(
        fake: Callable[[RigConfig], FakeCameras], zctx: zmq.Context, run_dir: str,
        tmp_path: Path) -> None:
    """Events that come after the stores moved on: the indices no longer held are ``overrun``
    rows, the indices after the end of the streams ``lost`` rows, nothing else is missing, and
    a window longer than the stores' history is clamped and says so."""
    rig = rig_with()
    capacity = rig.store_frames()
    last = capacity + 14  # the stores hold [15, last]
    cams = fake(rig)
    service = ClipService(rig, run_dir, tmp_path / "session", zctx)
    running = Running(service, cams)
    for n in range(last + 1):
        for cam in cams.stores:
            cams.frame(cam, n)
    old = service.add_event(Event(name="late", trigger_index=20,
                                  data={"clip": {"pre_s": 0.1, "post_s": 0.05}}))  # [10, 25]
    tail = service.add_event(Event(name="tail", trigger_index=last - 1))  # rig window: [.., last + 2]
    long = service.add_event(Event(name="long", trigger_index=last,
                                   data={"clip": {"pre_s": 1e6, "post_s": 0.0}}))
    assert old is not None and tail is not None and long is not None
    for cam in cams.stores:
        cams.eos(cam, last)
    summary = running.summary()

    assert summary["clips_pending"] == 0 and summary["clip_windows_clamped"] == 1
    pre, post = rig.frames_per(rig.ring_buffer.pre_s), rig.frames_per(rig.ring_buffer.post_s)
    expect = {  # clip: (start, end, overrun indices, lost indices)
        old.folder: (10, 25, set(range(10, 15)), set()),
        tail.folder: (last - 1 - pre, last - 1 + post, set(), set(range(last + 1, last + post))),
        long.folder: (last - (capacity - 1), last, set(), set()),  # all the stores hold
    }
    assert sorted(Path(c) for c in summary["clips"]) == sorted(expect)
    for folder, (start, end, overrun, lost) in expect.items():
        meta = info(folder)
        assert (meta["start_index"], meta["end_index"]) == (start, end), folder.name
        assert meta["missing_rows"] == len(cams.stores) * (len(overrun) + len(lost)), folder.name
        for cam, got in rows(folder).items():
            assert [int(r["trigger_index"]) for r in got] == list(range(start, end + 1))
            for r in got:
                n = int(r["trigger_index"])
                assert int(r["overrun"]) == (n in overrun), (folder.name, cam, n)
                assert int(r["lost_in_transport"]) == (n in lost), (folder.name, cam, n)
                assert int(r["dropped"]) == (n in overrun or n in lost), (folder.name, cam, n)
                assert (int(r["video_frame"]) == -1) == (n in overrun or n in lost)
            assert len(list(read_frames(folder / f"{cam}.mkv"))) == end + 1 - start - len(overrun | lost)
            want = {k: v for k, v in (("overrun", len(overrun)), ("after_end", len(lost))) if v}
            assert meta["missing_by_camera"].get(cam, {}) == want
    clamped = info(long.folder)["window_clamped"]
    assert clamped == {"pre_s": {"asked": 1e6, "used": (capacity - 1) / rig.trigger.rate_hz}}


def test_hostile_events_are_counted_and_the_service_goes_on(
        fake: Callable[[RigConfig], FakeCameras], zctx: zmq.Context, run_dir: str,
        tmp_path: Path) -> None:
    rig = rig_with()
    cams = fake(rig)
    service = ClipService(rig, run_dir, tmp_path / "session", zctx)
    running = Running(service, cams)
    for n in range(30):
        for cam in cams.stores:
            cams.frame(cam, n)
    address = rig.address("events", run_dir)
    hostile = [
        Event(name="far future", t_pi_ns=2**63 - 1),          # no stored frame is near it
        Event(name="negative index", trigger_index=-1),
        Event(name="negative time", t_pi_ns=-5),
        Event(name="uint64 index", trigger_index=2**64 - 1),  # not an int64: refused at decoding
        Event(name="nan window", trigger_index=10, data={"clip": {"pre_s": math.nan, "post_s": 0.1}}),
    ]
    for event in hostile:
        send_event(zctx, address, event)
    # Straight in (a rule in the same process), values the wire cannot even carry.
    assert service.add_event(Event(name="huge index", trigger_index=2**70)) is None
    assert service.add_event(Event(name="float index", trigger_index=1.5)) is None  # type: ignore[arg-type]
    send_event(zctx, address, Event(name="huge window", trigger_index=20,
                                    data={"clip": {"pre_s": math.inf, "post_s": 1e300}}))
    send_event(zctx, address, Event(name="fine", trigger_index=25))
    wait_for("every event", lambda: events_logged(tmp_path / "session") == 3)
    assert running.thread.is_alive()
    for cam in cams.stores:
        cams.eos(cam, 29)
    summary = running.summary()

    assert summary["events_malformed"] == {"out-of-range": 5, "invalid": 2}
    assert summary["clip_windows_clamped"] == 1
    names = {info(Path(c))["events"][0]["name"]: Path(c) for c in summary["clips"]}
    assert sorted(names) == ["fine", "huge window", "nan window"]
    # The NaN window fell back to the rig's; the huge one was clamped to what the stores hold
    # and to MAX_POST_S, and everything after the end of the streams is a lost row.
    history = rig.store_frames() - 1
    huge = info(names["huge window"])
    assert (huge["start_index"], huge["end_index"]) == (0, 20 + rig.frames_per(MAX_POST_S))
    assert huge["window_clamped"] == {"pre_s": {"asked": "inf", "used": history / rig.trigger.rate_hz},
                                      "post_s": {"asked": 1e300, "used": MAX_POST_S}}
    lost = huge["end_index"] - 29
    assert huge["missing_by_camera"] == {c: {"after_end": lost} for c in cams.stores}
    fine = info(names["fine"])
    assert (fine["start_index"], fine["end_index"], fine["missing_rows"]) == (20, 28, 0)


def test_a_flood_of_requests_is_refused_past_the_limits_and_a_rules_clip_keeps_every_row(
        fake: Callable[[RigConfig], FakeCameras], zctx: zmq.Context, run_dir: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """200 requests of the rig's window (the monitor's button) that overlap no pending clip open
    MAX_MERGING_CLIPS clips, the rest are refused; a rule's event still gets its exact clip with
    every row, exact events past MAX_PENDING_CLIPS are refused, and the status lists only the
    newest clips (with a count of them all)."""
    monkeypatch.setattr(ringbuffer, "CLIPS_LISTED", 3)
    rig = rig_with()
    pre, post = rig.frames_per(rig.ring_buffer.pre_s), rig.frames_per(rig.ring_buffer.post_s)
    cams = fake(rig)
    service = ClipService(rig, run_dir, tmp_path / "session", zctx)
    spacing = pre + post + 2  # windows that overlap no other
    flood = [service.add_event(Event(name="monitor", source="monitor", trigger_index=i * spacing))
             for i in range(200)]
    assert sum(c is not None for c in flood) == MAX_MERGING_CLIPS
    rule = service.add_event(Event(name="reach", source="rules", trigger_index=20,
                                   data={"clip": {"pre_s": 0.1, "post_s": 0.05}}))  # [10, 25]
    assert rule is not None
    exact = [service.add_event(Event(name=f"cli {n}", source="cli", trigger_index=n,
                                     data={"clip": {"pre_s": 0.01, "post_s": 0.0}}))
             for n in range(1, 21)]
    accepted = MAX_PENDING_CLIPS - MAX_MERGING_CLIPS - 1
    assert sum(c is not None for c in exact) == accepted
    running = Running(service, cams)
    written = {cam: {n: cams.frame(cam, n) for n in range(30)} for cam in cams.stores}
    for cam in cams.stores:
        cams.eos(cam, 29)
    summary = running.summary()

    assert summary["clips_refused"] == {"merging-limit": 200 - MAX_MERGING_CLIPS,
                                        "pending-limit": len(exact) - accepted}
    assert summary["clips_saved"] == MAX_PENDING_CLIPS and summary["clips_pending"] == 0
    assert len(summary["clips"]) == 3
    assert events_logged(tmp_path / "session") == MAX_PENDING_CLIPS
    meta = info(rule.folder)
    assert (meta["start_index"], meta["end_index"], meta["missing_rows"]) == (10, 25, 0)
    assert [e["name"] for e in meta["events"]] == ["reach"]
    for cam, got in rows(rule.folder).items():
        assert [int(r["trigger_index"]) for r in got] == list(range(10, 26))
        decoded = list(read_frames(rule.folder / f"{cam}.mkv"))
        assert len(decoded) == 16
        for n, img in zip(range(10, 26), decoded, strict=True):
            assert np.array_equal(img, written[cam][n]), f"{cam} frame {n} differs"
