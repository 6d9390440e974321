"""The monitor against real sockets: FakeCameras (real frame stores, headers on ipc) stand in for
the cameras, ZeroMQ publishers on ipc in a temporary folder for the pose engine and the
supervisor; the monitor's aiohttp server listens on 127.0.0.1 and is asked over HTTP."""

from __future__ import annotations

import http.cookiejar
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import numpy as np
import pytest
import zmq

from rigstream import protocol
from rigstream.app.monitor import Monitor
from rigstream.app.monitor.encode import encode_frame
from rigstream.app.monitor.page import latency_histogram, nice_ceiling, rule_regions, skeleton_for
from rigstream.app.monitor.state import RING_FRAMES, MonitorState, ShownFrame
from rigstream.config import InputError, RigConfig, load_rig, with_overrides
from rigstream.protocol import Command, Event, FrameHeader, Pose2D, Pose3D, Reply, Status
from rigstream.transport import Publisher, bind_address
from tests.conftest import FakeCameras

KEYPOINTS = ["snout", "left_ear", "right_ear", "neck", "spine_mid", "tail_base", "tail_mid", "tail_tip",
             "left_forepaw", "right_forepaw", "left_hindpaw", "right_hindpaw"]

RULES = [
    {"name": "reach", "when": {"all": [
        {"in_sphere": {"keypoint": "left_forepaw", "center": [10.0, -40.0, 60.0], "radius_mm": 8.0}},
        {"not": {"in_box": {"keypoint": "snout", "min": [-5.0, -5.0, 0.0], "max": [5.0, 5.0, 9.0]}}},
    ]}, "actions": [{"ttl": {"width_ms": 5.0}}, {"clip": {"pre_s": 1.0, "post_s": 0.5}}]},
    {"name": "corner", "when": {"in_box": {"keypoint": "snout", "camera": "cam0", "min": [0.0, 0.0],
                                           "max": [100.0, 80.0]}},
     "actions": [{"event": {}}]},
]


def _rig() -> RigConfig:
    return with_overrides(load_rig(), rules=RULES)


class Rig:
    """Publishers where the rig's components would be, and a running Monitor."""

    def __init__(self, rig: RigConfig, run: str, **monitor_args: Any) -> None:
        self.rig = rig
        self.run = run
        self.ctx = zmq.Context()
        self.fake = FakeCameras(rig, run, self.ctx)
        self.poses = Publisher(self.ctx, rig.address("poses", run))
        self.rule_events = Publisher(self.ctx, rig.address("rule_events", run))
        self.health = Publisher(self.ctx, rig.address("health", run))
        self.monitor = Monitor(rig, run, self.ctx, port=0, **monitor_args)
        self.url = self.monitor.start().split("?")[0]
        self.stop = threading.Event()
        self.summary: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        for pub in [*self.fake.pubs.values(), self.poses, self.rule_events, self.health]:
            assert pub.wait_for_subscribers(1, 10), f"monitor did not subscribe to {pub.address}"

    def _run(self) -> None:
        self.summary = self.monitor.run_forever(self.stop)

    def send_frame(self, camera: str, n: int, value: int | None = None) -> None:
        """Frame ``n`` into ``camera``'s store (pixels ``frame_pixels``), its header published."""
        cam = self.rig.camera(camera)
        now = time.monotonic_ns()
        slot = self.fake.stores[camera].write(n, frame_pixels(cam.height, cam.width, n, value), frame_id=n,
                                              t_camera_ns=n, t_pi_ns=now, t_host_ns=now, flags=0)
        h = FrameHeader(camera=camera, seq=n, frame_id=n, trigger_index=n, t_camera_ns=n, t_host_ns=now,
                        t_pi_ns=now, width=cam.width, height=cam.height, slot=slot)
        protocol.send_frame(self.fake.pubs[camera].sock, h, None)

    def taken(self, camera: str, n: int, timeout_s: float = 5.0) -> None:
        """Wait until the monitor has looked at ``camera``'s index ``n``."""
        feed = self.monitor.state.feeds[camera]
        deadline = time.monotonic() + timeout_s
        while feed.newest_read < n:
            assert time.monotonic() < deadline, f"monitor never took {camera} frame {n}"
            time.sleep(0.002)
        with self.monitor.state.lock:  # the update that set newest_read has finished
            pass

    def send_pose2d(self, n: int, cameras: list[str] | None = None) -> None:
        views = {c: [[100.0 + 10 * k, 200.0, 0.9] for k in range(len(KEYPOINTS))]
                 for c in cameras or list(self.fake.pubs)}
        self.poses.send(Pose2D(seq=n, frameset_seq=n, trigger_index=n, t_pi_ns=0, t_host_ns=0, model="sim",
                               keypoints=KEYPOINTS, views=views))

    def send_pose3d(self, n: int, latency_ms: float = 20.0) -> None:
        now = time.monotonic_ns()
        xyz = [[float(k), 0.0, 30.0] for k in range(len(KEYPOINTS) - 1)] + [[float("nan")] * 3]
        self.poses.send(Pose3D(seq=n, frameset_seq=n, trigger_index=n, t_pi_ns=now - int(latency_ms * 1e6),
                               t_host_ns=now, keypoints=KEYPOINTS, xyz=xyz, error=[0.5] * len(KEYPOINTS),
                               ncams=[2] * len(KEYPOINTS), score=[0.9] * len(KEYPOINTS)))

    def get(self, path: str, headers: dict[str, str] | None = None,
            opener: urllib.request.OpenerDirector | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path.lstrip("/"), headers=headers or {})
        return _open(req, opener)

    def post(self, path: str, body: dict[str, Any] | None = None,
             content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
        data = json.dumps(body or {}).encode()
        req = urllib.request.Request(self.url + path.lstrip("/"), data=data, method="POST",
                                     headers={"Content-Type": content_type})
        status, _, payload = _open(req)
        return status, json.loads(payload)

    def state(self) -> dict[str, Any]:
        return json.loads(self.get("/api/state")[2])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)
        for pub in [self.poses, self.rule_events, self.health]:
            pub.close()
        self.fake.close()
        self.ctx.destroy(linger=0)


def frame_pixels(height: int, width: int, n: int, value: int | None = None) -> np.ndarray:
    """A frame of ``value`` (default: ``n % 256``) with its top-left sixteenth inverted."""
    v = n % 256 if value is None else value
    pixels = np.full((height, width), v, np.uint8)
    pixels[: height // 4, : width // 4] = 255 - v
    return pixels


def _open(req: urllib.request.Request,
          opener: urllib.request.OpenerDirector | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with (opener.open(req, timeout=10) if opener else urllib.request.urlopen(req, timeout=10)) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _eventually(check: Callable[[], Any], timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture
def run_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="rsmon-")  # short: ipc paths are limited to ~100 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def rig(run_dir: str) -> Iterator[Rig]:
    r = Rig(_rig(), run_dir)
    yield r
    r.close()


def _health(t_s: float, frames: int, **extra: Any) -> Status:
    comps = {f"camera:{c}": {"state": "running",
                             "stats": {"frames": frames, "dropped": 2, "last_index": frames}}
             for c in ("cam0", "cam1")}
    clips = extra.pop("clips", [])
    comps["ringbuffer"] = {"state": "running", "stats": {"ring_fill": {"cam0": 0.25, "cam1": 0.5},
                                                         "clips": clips, "clips_saved": len(clips)}}
    comps["pose"] = {"state": "running", "stats": {
        "framesets_posed": 40, "framesets_skipped": 7, "latency_ms": {"p50": 30.0, "p99": 45.0},
        "rules": {"reach": {"fired": 3, "last_trigger_index": 90, "armed": False, "active": True}},
        "closed_loop": {"recent": [{"rule": "reach", "trigger_index": 90, "actions": ["ttl", "clip"],
                                    "total_ms": 33.5, "ttl_error": ""}]}}}
    return Status(component="session", state="running",
                  stats={"t_s": t_s, "pulses": frames, "rate_hz": 100.0, "components": comps, **extra})


# -- state ------------------------------------------------------------------------------------------


def test_state_reflects_health_poses_and_rule_events(rig: Rig) -> None:
    rig.health.send(_health(10.0, 1000))
    rig.health.send(_health(11.0, 1100, failed={"camera:cam1": "exited with code 1"},
                            clips=["/s/clips/clip_001_n90"]))
    rig.send_pose3d(95, latency_ms=25.0)
    rig.rule_events.send(Event(name="reach", source="rules", trigger_index=90, t_pi_ns=1, t_host_ns=2,
                               data={"rule": "reach", "actions": [{"ttl": {"width_ms": 5.0}}, "clip"],
                                     "kind": "3d", "chain_ms": {"frames": 5.0, "pose2d": 20.0}}))
    state = _eventually(lambda: (s := rig.state())["pose"]["last_pose3d_index"] == 95
                        and len(s["events"]) >= 4 and s)
    assert state, rig.state()
    cam0 = state["cameras"]["cam0"]
    assert cam0["fps"] == pytest.approx(100.0)
    assert (cam0["frames"], cam0["dropped"], cam0["ring_fill"]) == (1100, 2, 0.25)
    assert state["session"]["pulses"] == 1100
    assert state["session"]["failed"] == {"camera:cam1": "exited with code 1"}
    pose = state["pose"]
    assert (pose["posed"], pose["skipped"]) == (40, 7)
    assert pose["pulse_to_pose3d_ms"]["n"] == 1
    assert pose["pulse_to_pose3d_ms"]["p50"] == pytest.approx(25, abs=2)
    assert pose["pulse_to_ttl_ms"]["p50"] == pytest.approx(33.5)
    assert sum(state["histogram"]["counts"]["pulse_to_pose3d"]) == 1
    assert sum(state["histogram"]["counts"]["pulse_to_ttl"]) == 1
    reach = next(r for r in state["rules"] if r["name"] == "reach")
    assert (reach["fired"], reach["last_trigger_index"]) == (3, 90)
    assert (reach["active"], reach["armed"]) == (True, False)
    assert reach["actions"] == ["ttl", "clip"] and reach["kind"] == "3d"
    texts = [e["text"] for e in state["events"]]
    assert any("rule reach fired at n=90 (3d; ttl, clip" in t for t in texts), texts
    assert "clip saved: clips/clip_001_n90" in texts
    assert any(t.startswith("camera:cam1 failed") for t in texts)
    assert state["edges"] and [0, 1] in state["edges"]


def test_the_event_log_shows_each_saved_clip_once_though_the_ring_buffer_lists_only_its_newest() -> None:
    state = MonitorState(_rig())

    def health(saved: int, clips: list[str]) -> Status:
        return Status(component="session", state="running", stats={
            "components": {"ringbuffer": {"stats": {"clips": clips, "clips_saved": saved}}}})

    state.add_health(health(2, ["s/clips/c1", "s/clips/c2"]))
    state.add_health(health(2, ["s/clips/c1", "s/clips/c2"]))
    state.add_health(health(5, ["s/clips/c4", "s/clips/c5"]))  # c3 left the list between two
    state.add_health(health(1, ["t/clips/c1"]))  # a new session
    logged = [e["text"] for e in state.events]
    assert logged == [f"clip saved: clips/{c}" for c in ("c1", "c2", "c4", "c5", "c1")]


def test_config_describes_cameras_skeleton_and_rule_regions(rig: Rig) -> None:
    config = json.loads(rig.get("/api/config")[2])
    assert [c["name"] for c in config["cameras"]] == ["cam0", "cam1"]
    assert config["keypoints"] == KEYPOINTS and ["snout", "left_ear"] in config["skeleton"]
    assert [r["name"] for r in config["rules"]] == ["reach", "corner"]
    shapes = {(r["rule"], r["shape"], r["camera"], r["negated"]) for r in config["regions"]}
    assert shapes == {("reach", "sphere", None, False), ("reach", "box", None, True),
                      ("corner", "box", "cam0", False)}


def test_pose3d_endpoint_sends_nan_as_null(rig: Rig) -> None:
    rig.send_pose3d(7)
    status, _, body = rig.get("/api/pose3d?after=-1")
    pose = json.loads(body)
    assert status == 200 and pose["trigger_index"] == 7
    assert pose["xyz"][-1] == [None, None, None] and pose["edges"]
    t0 = time.monotonic()
    assert rig.get("/api/pose3d?after=7")[0] == 204
    assert 0.8 < time.monotonic() - t0 < 3


# -- frames -----------------------------------------------------------------------------------------


def test_frame_endpoint_returns_a_newer_jpeg_with_its_keypoints(rig: Rig) -> None:
    for n in range(5):
        rig.send_frame("cam0", n, value=40 + n)
        rig.taken("cam0", n)  # latest-wins: a frame overtaken before the monitor's turn is skipped
    rig.send_pose2d(3)
    assert _eventually(lambda: rig.monitor.state.feeds["cam0"].received == 5)
    assert _eventually(lambda: len(rig.monitor.state.poses2d) == 1)
    status, headers, body = rig.get("/api/frame/cam0?after=-1")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image.shape[:2] == (480, 640)
    assert abs(float(image[300, 300]) - 43) < 4  # the frame of the pose (n=3), not the newest
    assert headers["X-Trigger-Index"] == "3" and headers["X-Pose-Index"] == "3"
    keypoints = json.loads(headers["X-Keypoints"])
    assert keypoints[0] == [100.0, 200.0, 0.9] and len(keypoints) == len(KEYPOINTS)
    status, headers, _ = rig.get("/api/frame/cam0?after=3")  # no pose of its own: the nearest one's
    assert status == 200 and (headers["X-Trigger-Index"], headers["X-Pose-Index"]) == ("4", "3")


def test_frame_request_waits_for_a_newer_frame(rig: Rig) -> None:
    rig.send_frame("cam1", 0)
    assert _eventually(lambda: rig.monitor.state.feeds["cam1"].received == 1)
    threading.Timer(0.3, rig.send_frame, args=("cam1", 1)).start()
    t0 = time.monotonic()
    status, headers, _ = rig.get("/api/frame/cam1?after=0")
    assert status == 200 and headers["X-Trigger-Index"] == "1"
    assert 0.2 < time.monotonic() - t0 < 1.0
    status, headers, _ = rig.get("/api/frame/cam1?after=1")
    assert status == 204 and headers["X-Newest-Index"] == "1"


def test_frame_endpoint_errors_are_json(rig: Rig) -> None:
    status, _, body = rig.get("/api/frame/nope?after=0")
    assert status == 404 and "no camera named 'nope'" in json.loads(body)["error"]
    status, _, body = rig.get("/api/frame/cam0?after=abc")
    assert status == 400 and "after: expected an integer" in json.loads(body)["error"]
    status, _, body = rig.get("/api/nothing")
    assert status == 404 and json.loads(body)["ok"] is False


def test_encode_frame_downscales_and_scales_keypoints() -> None:
    h = FrameHeader(camera="c", seq=0, frame_id=0, trigger_index=9, t_camera_ns=0, t_host_ns=0,
                    width=1280, height=960, channels=3)
    pixels = np.zeros((960, 1280, 3), np.uint8)
    pixels[..., 0] = 255  # red in RGB
    enc = encode_frame(ShownFrame(h, pixels, 9, [[640.0, 480.0, 0.8], [float("nan"), 1.0, 0.0]]), "rgb8")
    image = cv2.imdecode(np.frombuffer(enc.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (480, 640, 3) and image[240, 320, 2] > 200 and image[240, 320, 0] < 60
    assert enc.headers["X-Image-Size"] == "640x480" and enc.headers["X-Frame-Size"] == "1280x960"
    assert json.loads(enc.headers["X-Keypoints"]) == [[320.0, 240.0, 0.8], None]


# -- robustness ------------------------------------------------------------------------------------


def test_malformed_messages_are_counted_and_the_monitor_keeps_running(rig: Rig) -> None:
    rig.fake.raw("cam0", [b"junk"])
    rig.fake.raw("cam0", [protocol.encode(Command(cmd="x")), b"px"])
    rig.poses.sock.send(b"\x81\xa4type\xa5pose9")
    rig.rule_events.sock.send(b"\x00")
    rig.health.send(protocol.Pulse(index=1, t_pi_ns=2))
    rig.health.send(Status(component="session", state="running",  # the right type, odd contents
                           stats={"t_s": "soon", "components": {"camera:cam0": "x", "pose": [1]},
                                  "failed": "none", "restarts": [2]}))
    rig.rule_events.send(Event(name="r", data={"chain_ms": "fast"}))
    rig.send_pose3d(12)
    rig.send_frame("cam0", 0)
    assert _eventually(lambda: rig.state()["pose"]["last_pose3d_index"] == 12)
    assert _eventually(lambda: rig.monitor.state.feeds["cam0"].received == 1)
    malformed = rig.state()["monitor"]["malformed"]
    assert sum(malformed["frames"].values()) == 2
    assert malformed["poses"] == {"unknown-type": 1}
    assert malformed["rule_events"] == {"undecodable": 1, "invalid-contents": 1}
    # a health message of the right type whose contents do not fit its schema is refused whole
    assert malformed["health"] == {"unexpected-type": 1, "invalid-contents": 1}
    assert rig.thread.is_alive()
    state = rig.state()
    assert state["session"]["seen"] is False and state["cameras"]["cam0"]["frames"] is None


def test_a_component_whose_stats_do_not_fit_is_counted_and_the_rest_shown(rig: Rig) -> None:
    health = _health(10.0, 1000)
    health.stats["components"]["camera:cam1"]["stats"]["frames"] = "many"
    rig.health.send(health)
    assert _eventually(lambda: rig.state()["session"]["seen"])
    state = rig.state()
    assert state["cameras"]["cam0"]["frames"] == 1000 and state["cameras"]["cam1"]["frames"] is None
    assert state["session"]["components"]["camera:cam1"] == "running"
    assert rig.state()["monitor"]["malformed"]["health"] == {"invalid-contents": 1}


def test_slow_clients_never_make_the_monitor_fall_behind(rig: Rig) -> None:
    """Clients that never read hold one JPEG each; the receive loop keeps taking each camera's
    newest frame (latest-wins: what it passes over is counted as skipped, nothing is lost)."""
    rig.send_frame("cam0", 0)  # something to answer with
    rig.taken("cam0", 0)
    host, port = rig.url.split("//")[1].strip("/").split(":")
    stuck = []
    for _ in range(4):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        sock.sendall(f"GET /api/frame/cam0?after=-1 HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode() * 50)
        stuck.append(sock)
    try:
        for n in range(1, 601):  # more than the store holds
            rig.send_frame("cam0", n)
            time.sleep(0.002)  # ~400 Hz
        rig.taken("cam0", 600, 10)
        feed = rig.monitor.state.feeds["cam0"]
        assert feed.newest_index == 600
        assert feed.received + feed.skipped + feed.drop_notices + feed.lost == 601
        assert feed.received > 1 and feed.lost == 0
        assert rig.state()["monitor"]["frames_lost"] == {"cam0": 0, "cam1": 0}
        assert rig.get("/api/state")[0] == 200  # the server still answers others
    finally:
        for sock in stuck:
            sock.close()


def test_held_frames_keep_their_own_pixels_in_reused_buffers(rig: Rig) -> None:
    """The monitor copies each frame into a buffer of a per-camera pool reused in ring order
    (and the history's own): after several laps of the pool, every frame it holds still shows
    its own pixels, and every buffer is one of the pool's."""
    feed = rig.monitor.state.feeds["cam1"]
    count = 5 * RING_FRAMES + 4 * feed.step * RING_FRAMES
    for n in range(count):
        rig.send_frame("cam1", n)
        rig.taken("cam1", n)
    with rig.monitor.state.lock:
        ring, history = list(feed.ring), list(feed.history)
    assert len(ring) == RING_FRAMES and len(history) >= 4
    assert feed.received == count and feed.skipped == feed.lost == 0
    cam = rig.rig.camera("cam1")
    for h, px in history + ring:
        np.testing.assert_array_equal(px, frame_pixels(cam.height, cam.width, h.trigger_index),
                                      err_msg=f"frame {h.trigger_index}")
    assert all(any(px is b for b in feed._pool) for _, px in ring)
    assert all(any(px is b for b in feed._history_pool) for _, px in history)
    assert [h.trigger_index for h, _ in ring] == list(range(count - RING_FRAMES, count))


def test_a_frame_overwritten_while_the_monitor_copies_it_is_counted_lost(rig: Rig) -> None:
    store = rig.monitor.frames.stores["cam1"]
    cap = store.capacity
    read_header = store.header
    lapped: list[int] = []

    def header_then_lap(index: int) -> Any:  # the writer laps the ring right after the check
        fields = read_header(index)
        if index == 0 and not lapped:
            lapped.append(index)
            rig.fake.stores["cam1"].write(cap, frame_pixels(cam.height, cam.width, 7), frame_id=cap,
                                          t_camera_ns=0, t_pi_ns=0, t_host_ns=0, flags=0)
        return fields

    cam = rig.rig.camera("cam1")
    store.header = header_then_lap  # type: ignore[method-assign]
    rig.send_frame("cam1", 0)
    rig.taken("cam1", cap)  # the next turn takes the frame that overwrote it
    feed = rig.monitor.state.feeds["cam1"]
    assert lapped == [0]
    assert feed.lost == 1 and [h.trigger_index for h, _ in feed.ring] == [cap]
    assert feed.skipped == cap - 1 and feed.received == 1
    assert rig.state()["monitor"]["frames_lost"] == {"cam0": 0, "cam1": 1}


# -- access ---------------------------------------------------------------------------------------


def test_network_host_without_token_is_refused(run_dir: str) -> None:
    with pytest.raises(InputError, match="reachable from the network, so a token is required"):
        Monitor(load_rig(), run_dir, host="0.0.0.0", port=0)


def test_token_is_required_when_set(run_dir: str) -> None:
    r = Rig(_rig(), run_dir, host="0.0.0.0", token="s3cret-token")
    try:
        assert r.monitor.url is not None and r.monitor.url.endswith("?token=s3cret-token")
        status, _, body = r.get("/api/state")
        assert status == 401 and "token is required" in json.loads(body)["error"]
        assert r.get("/api/state?token=wrong")[0] == 403
        assert r.get("/api/state", headers={"X-Monitor-Token": "wrong"})[0] == 403
        assert r.get("/api/state", headers={"X-Monitor-Token": "s3cret-token"})[0] == 200
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        status, _, page = r.get("/?token=s3cret-token", opener=browser)
        assert status == 200 and b"rigstream monitor" in page
        assert [c.name for c in jar] == ["rigstream_monitor_token"]
        assert r.get("/api/config", opener=browser)[0] == 200  # the cookie alone
    finally:
        r.close()


def test_loopback_answers_only_loopback_host_names(rig: Rig) -> None:
    assert rig.get("/api/state", headers={"Host": "evil.example:80"})[0] == 403
    assert rig.get("/api/state", headers={"Host": "localhost"})[0] == 200


# -- buttons ----------------------------------------------------------------------------------------


def test_clip_button_pushes_an_event_to_the_ring_buffer(rig: Rig) -> None:
    pull = rig.ctx.socket(zmq.PULL)
    pull.bind(bind_address(rig.rig.address("events", rig.run)))
    try:
        status, reply = rig.post("/api/clip")
        assert status == 200 and reply["ok"]
        assert pull.poll(5000)
        event = protocol.decode(pull.recv(), Event)
        assert (event.source, event.trigger_index) == ("monitor", None)
        assert event.data == {}  # no window of its own: the rig's, merged with overlapping ones
        assert any("save clip now" in e["text"] for e in rig.state()["events"])
        status, reply = rig.post("/api/clip", content_type="application/x-www-form-urlencoded")
        assert status == 403 and "expected a JSON request" in reply["error"]
        assert not pull.poll(200)
    finally:
        pull.close(linger=0)


def _fake_trigger(ctx: zmq.Context, address: str, got: list[Command]) -> threading.Thread:
    rep = ctx.socket(zmq.REP)
    rep.bind(bind_address(address))

    def serve() -> None:
        try:
            if rep.poll(10000):
                cmd = protocol.decode(rep.recv(), Command)
                got.append(cmd)
                rep.send(protocol.encode(Reply(ok=True, data={
                    "index": 4, "t_command_ns": 1_000_000, "t_edge_ns": 1_250_000,
                    "t_fall_due_ns": 11_250_000,
                    "merged": False})))
        finally:
            rep.close(linger=1000)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_ttl_button_sends_a_ttl_command_and_reports_the_reply(rig: Rig) -> None:
    got: list[Command] = []
    fake = _fake_trigger(rig.ctx, rig.rig.address("trigger_control", rig.run), got)
    status, reply = rig.post("/api/ttl", {"width_ms": 10})
    fake.join(5)
    assert status == 200 and reply["ok"] and reply["data"]["t_edge_ns"] == 1_250_000
    assert [(c.cmd, c.args) for c in got] == [("ttl", {"width_ms": 10.0})]
    texts = [e["text"] for e in rig.state()["events"]]
    assert any("test TTL #4 (10 ms pulse): rising edge 0.25 ms after" in t for t in texts), texts
    status, reply = rig.post("/api/ttl", {"width_ms": -1})
    assert status == 400 and "width_ms" in reply["error"]


def test_ttl_button_without_a_trigger_daemon_says_so(rig: Rig) -> None:
    t0 = time.monotonic()
    status, reply = rig.post("/api/ttl")
    assert status == 504 and "did not answer" in reply["error"]
    assert time.monotonic() - t0 < 5


# -- helpers --------------------------------------------------------------------------------------


def test_latency_histogram_bins_every_series_on_round_edges() -> None:
    h = latency_histogram({"a": [1.0, 2.0, 3.0, float("nan")], "b": [40.0, 1000.0]}, bins=10)
    assert h["edges_ms"][0] == 0.0 and h["edges_ms"][-1] == nice_ceiling(max(h["edges_ms"]))
    assert sum(h["counts"]["a"]) == 3 and sum(h["counts"]["b"]) == 2
    assert h["stats"]["a"]["n"] == 3 and h["stats"]["b"]["max"] == 1000.0
    assert [nice_ceiling(x) for x in (0.7, 1.0, 1.2, 3.0, 7.0, 120.0)] == [1.0, 1.0, 2.0, 5.0, 10.0, 200.0]


def test_skeleton_falls_back_to_the_simulated_rat_then_to_points() -> None:
    assert skeleton_for([["a", "b"]], ["a", "b"]) == [("a", "b")]
    assert ("snout", "left_ear") in skeleton_for([], ["snout", "left_ear", "neck"])
    assert skeleton_for([], ["nose", "tail"]) == []


def test_a_rig_without_rules_has_no_regions() -> None:
    assert rule_regions(with_overrides(load_rig(), rules=[])) == []


# -- the command --------------------------------------------------------------------------------


def test_cli_makes_a_token_for_a_network_host_and_stops_on_sigterm(run_dir: str) -> None:
    env_free = {k: v for k, v in os.environ.items() if k != "RIGSTREAM_MONITOR_TOKEN"}
    proc = subprocess.Popen([sys.executable, "-m", "rigstream", "monitor", "--run", run_dir, "--port", "0",
                             "--host", "0.0.0.0"], stderr=subprocess.PIPE, text=True, env=env_free)
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("monitor: http://"):
                break
        url = lines[-1].split(" ", 1)[1].strip()
        assert "?token=" in url and len(url.split("?token=")[1]) >= 20, lines
        port = int(url.split(":")[2].split("/")[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/config?token={url.split('?token=')[1]}",
                                    timeout=10) as r:
            assert r.status == 200
        proc.terminate()
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
