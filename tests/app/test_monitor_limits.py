"""The monitor's buttons under abuse, over real HTTP and real ZeroMQ: hostile JSON bodies, and a
flood of presses while a rule's clip is written by a real clip service from FakeCameras' stores.
Nothing here is timed for speed: bounds that depend on how long the flood took are computed from
the time it did take."""

from __future__ import annotations

import csv
import http.client
import json
import shutil
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import zmq

from rigstream import protocol
from rigstream.acquisition.ringbuffer import ClipService, send_event
from rigstream.acquisition.video import read_frames
from rigstream.app.monitor.buttons import CLIP_INTERVAL_S, MAX_BODY_BYTES, TTLS_PER_S
from rigstream.config import RigConfig, with_overrides
from rigstream.protocol import Command, Event, Reply
from rigstream.transport import bind_address
from tests.app.test_monitor import Rig, _open, _rig
from tests.conftest import FakeCameras, run_in_thread, small_rig


@pytest.fixture
def run_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="rslim-")  # short: ipc paths are limited to ~100 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def post_raw(rig: Rig, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(rig.url + path.lstrip("/"), data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    status, _, payload = _open(req)
    return status, json.loads(payload)


class FakeTrigger:
    """A REP socket where the trigger daemon's control would be: answers every ``ttl`` command
    as fired and records it."""

    def __init__(self, ctx: zmq.Context, address: str) -> None:
        self.got: list[Command] = []
        self._rep = ctx.socket(zmq.REP)
        self._rep.bind(bind_address(address))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if self._rep.poll(50):
                self.got.append(protocol.decode(self._rep.recv(), Command))
                now = time.monotonic_ns()
                self._rep.send(protocol.encode(Reply(ok=True, data={
                    "index": len(self.got), "t_command_ns": now, "t_edge_ns": now + 1000})))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._rep.close(linger=0)


NESTED = b"[" * 2000 + b"]" * 2000
"""Deeper than Python's recursion limit (json.loads raised RecursionError: a 500), within the
size limit."""

BAD_BODIES = [  # (body, what the one-line error says)
    (b"[1,2]", "Expected `object`, got `array`"),
    (b'{"width_ms": true}', "Expected `float`, got `bool` - at `$.width_ms`"),
    (b'{"width_ms": 0}', "Expected `float` > 0.0 - at `$.width_ms`"),
    (b'{"width_ms": 1000.5}', "Expected `float` <= 1000.0 - at `$.width_ms`"),
    (b'{"width_ms": "5"}', "Expected `float`, got `str` - at `$.width_ms`"),
    (b'{"width_ms": 5, "pin": 3}', "unknown field `pin`"),
    (b'{"width_ms": ' + NESTED + b"}", "Expected `float`, got `array` - at `$.width_ms`"),
    (NESTED, "Expected `object`, got `array`"),
    (b'{"x": ' + NESTED + b"}", "unknown field `x`"),
    (b"null", "Expected `object`, got `null`"),
    (b"{width_ms: 5}", "JSON is malformed"),
]


def test_bad_json_bodies_get_400_or_413_with_one_line_and_fire_nothing(run_dir: str) -> None:
    """Bodies a loose decoder took for a TTL (``[1,2]``, ``true`` for a number) or crashed on
    (nesting past the recursion limit) are refused with what was expected and where."""
    rig = Rig(_rig(), run_dir)
    trigger = FakeTrigger(rig.ctx, rig.rig.address("trigger_control", run_dir))
    try:
        for body, says in BAD_BODIES:
            status, reply = post_raw(rig, "/api/ttl", body)
            assert status == 400, (body[:40], status, reply)
            assert reply["refused"] == "invalid-body" and reply["error"].startswith("body: ")
            assert says in reply["error"] and "\n" not in reply["error"], reply
        for body in (b"[1,2]", b'{"width_ms": 5}'):  # the clip button takes no field at all
            status, reply = post_raw(rig, "/api/clip", body)
            assert status == 400 and reply["refused"] == "invalid-body", reply
        big = b'{"width_ms": 5' + b" " * MAX_BODY_BYTES + b"}"
        status, reply = post_raw(rig, "/api/ttl", big)
        assert status == 413 and reply["error"] == (
            f"body: expected at most {MAX_BODY_BYTES} bytes, got {len(big)}"), reply
        host, port = rig.url.split("//")[1].strip("/").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)  # no length: chunked
        conn.request("POST", "/api/ttl", body=iter([b" " * 1000] * 10), encode_chunked=True,
                     headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        assert response.status == 413 and json.loads(response.read())["refused"] == "too-large"
        conn.close()
        assert trigger.got == []
        buttons = rig.state()["monitor"]["buttons"]
        assert buttons["ttl"] == {"refused": {"invalid-body": len(BAD_BODIES), "too-large": 2}}
        assert buttons["clip"] == {"refused": {"invalid-body": 2}}
        status, reply = post_raw(rig, "/api/ttl", b"")  # no body: the default width
        assert status == 200 and [c.args for c in trigger.got] == [{"width_ms": 10.0}], reply
    finally:
        trigger.close()
        rig.close()


@pytest.mark.parametrize(("post_s", "second"), [(30.0, "merged"), (0.0, "too-soon")])
def test_a_second_clip_press_is_merged_while_the_clips_window_is_open_else_refused(
        run_dir: str, post_s: float, second: str) -> None:
    """A press soon after a clip request is not sent: merged into that clip while its window
    still holds the moment pressed, refused (with when to ask again) once it does not."""
    ring = {"pre_s": 1.0, "post_s": post_s, "margin_s": 1.0}
    rig = Rig(with_overrides(_rig(), ring_buffer=ring), run_dir)
    pull = rig.ctx.socket(zmq.PULL)
    pull.bind(bind_address(rig.rig.address("events", run_dir)))
    try:
        status, reply = rig.post("/api/clip")
        assert status == 200 and reply["event"]["source"] == "monitor"
        assert pull.poll(5000) and protocol.decode(pull.recv(), Event).name == "monitor"
        status, reply = rig.post("/api/clip")
        if second == "merged":
            assert status == 200 and reply["merged"], reply
            assert reply["message"].startswith("merged: this moment is in the clip asked")
        else:
            assert status == 429 and reply["refused"] == "too-soon", reply
            assert "ask again in" in reply["error"]
        assert not pull.poll(300)
        buttons = rig.state()["monitor"]["buttons"]
        want = {"sent": 1, "merged": 1, "refused": {}} if second == "merged" else \
            {"sent": 1, "refused": {"too-soon": 1}}
        assert buttons["clip"] == want
    finally:
        pull.close(linger=0)
        rig.close()


def _clip_rig() -> RigConfig:
    """The small test rig, a lossless codec, and frames big enough that a writer working through
    200 clips (as the audit's did) can fall behind a rule's clip."""
    doc = msgspec.to_builtins(small_rig(width=160, height=120))
    doc["recording"]["codec"] = "ffv1"
    return msgspec.convert(doc, type=RigConfig, strict=True)


class FrameFeed:
    """Writes every camera's frames into FakeCameras' stores at the rig's rate in a thread (so
    the stores lap as a running rig's do), until :meth:`end` (then the end of each stream)."""

    def __init__(self, fake: FakeCameras, period_s: float) -> None:
        self.fake = fake
        self.period_s = period_s
        self.newest = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.period_s):
            for cam in self.fake.stores:
                self.fake.frame(cam, n)
            self.newest = n
            n += 1
        for cam in self.fake.stores:
            self.fake.eos(cam, self.newest)

    def reach(self, n: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.newest < n:
            assert time.monotonic() < deadline, f"frames never reached {n}"
            time.sleep(0.01)

    def end(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_flood_of_presses_is_merged_or_refused_and_a_rules_clip_keeps_every_row(
        run_dir: str, tmp_path: Path) -> None:
    """200 clip and 200 TTL presses in a row, a rule's event in their midst: the page answers
    each press sent, merged or refused with its reason, the stats count them, the trigger daemon
    gets only the TTLs sent, and the rule's clip has exactly its window, every row a frame."""
    cfg = _clip_rig()
    rig = Rig(cfg, run_dir)
    trigger = FakeTrigger(rig.ctx, cfg.address("trigger_control", run_dir))
    out = tmp_path / "session"
    service = ClipService(cfg, run_dir, out, rig.ctx)
    stop = threading.Event()
    thread, result = run_in_thread(lambda: service.run_forever(stop))
    feed: FrameFeed | None = None
    try:
        rig.fake.wait(2)  # the monitor and the clip service
        feed = FrameFeed(rig.fake, 1 / cfg.trigger.rate_hz)
        feed.reach(60)
        clip_replies: list[tuple[int, dict[str, Any]]] = []
        ttl_replies: list[tuple[int, dict[str, Any]]] = []
        rule_index = -1
        t0 = time.monotonic()
        for i in range(200):
            clip_replies.append(rig.post("/api/clip"))
            ttl_replies.append(rig.post("/api/ttl", {"width_ms": 2}))
            if i == 100:
                rule_index = feed.newest
                send_event(rig.ctx, cfg.address("events", run_dir),
                           Event(name="reach", source="rules", trigger_index=rule_index,
                                 data={"clip": {"pre_s": 0.3, "post_s": 0.1}}))
        elapsed_s = time.monotonic() - t0
        feed.reach(rule_index + 20)
        feed.end()
        thread.join(30)
        assert not thread.is_alive(), "the clip service did not end after the streams"
        if "error" in result:
            raise result["error"]
        summary = result["value"]
        buttons = rig.state()["monitor"]["buttons"]
        events = rig.state()["events"]
    finally:
        if feed is not None:
            feed.end()
        stop.set()
        thread.join(15)
        trigger.close()
        rig.close()

    # The clip presses: the first sent, then merged while its window is open, refused after.
    outcome = Counter("sent" if s == 200 and "event" in r else "merged" if s == 200 and r.get("merged")
                      else r.get("refused", f"HTTP {s}") for s, r in clip_replies)
    assert set(outcome) <= {"sent", "merged", "too-soon"}, outcome
    assert 1 <= outcome["sent"] <= 1 + elapsed_s // CLIP_INTERVAL_S, (outcome, elapsed_s)
    assert outcome["too-soon"] > 0
    assert all(s == 429 and "ask again in" in r["error"] for s, r in clip_replies if s != 200)
    assert buttons["clip"] == {**{k: outcome[k] for k in ("sent", "merged") if outcome[k]},
                               "refused": {"too-soon": outcome["too-soon"]}}
    # The TTL presses: at most TTLS_PER_S in any second reach the trigger daemon.
    sent = [r for s, r in ttl_replies if s == 200]
    refused = [r for s, r in ttl_replies if s != 200]
    assert len(sent) == len(trigger.got) <= TTLS_PER_S * (1 + elapsed_s // 1.0), elapsed_s
    assert len(sent) + len(refused) == 200 and refused
    assert all(r["refused"] == "rate-limit" and f"at most {TTLS_PER_S} test TTLs a second" in r["error"]
               for r in refused)
    assert buttons["ttl"] == {"sent": len(sent), "refused": {"rate-limit": len(refused)}}
    # The page's event log names the refusals without being flooded by them.
    refusal_lines = [e["text"] for e in events if " refused (" in e["text"]]
    assert any(t.startswith("ttl refused (rate-limit") for t in refusal_lines), refusal_lines
    assert len(refusal_lines) <= 2 * (2 + elapsed_s), refusal_lines

    # The ring buffer took every clip request sent, and the rule's clip lost nothing.
    with open(out / "events.csv", newline="") as f:
        sources = Counter(row["source"] for row in csv.DictReader(f))
    assert sources == {"monitor": outcome["sent"], "rules": 1}
    assert summary["clips_refused"] == {} and summary["clips_pending"] == 0
    infos = {Path(c): json.loads((Path(c) / "event.json").read_text()) for c in summary["clips"]}
    [(folder, info)] = [(c, i) for c, i in infos.items() if i["events"][0]["source"] == "rules"]
    start, end = rule_index - 30, rule_index + 10
    assert (info["start_index"], info["end_index"], info["missing_rows"]) == (start, end, 0), info
    with open(folder / "frames.csv", newline="") as f:
        table = list(csv.DictReader(f))
    for k, cam in enumerate(cfg.cameras):
        got = [r for r in table if r["camera"] == cam.name]
        assert [int(r["trigger_index"]) for r in got] == list(range(start, end + 1))
        assert all(int(r["video_frame"]) >= 0 for r in got), cam.name
        decoded = list(read_frames(folder / f"{cam.name}.mkv"))
        assert len(decoded) == end + 1 - start
        for n, img in zip(range(start, end + 1), decoded, strict=True):
            assert np.array_equal(img, FakeCameras.pixels(k, n, (cam.height, cam.width))), (cam.name, n)
