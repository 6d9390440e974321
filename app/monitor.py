"""The live monitor: a web page that shows a running rig (``rigstream monitor``).

Two threads share one :class:`MonitorState`:

- the receive loop (:meth:`Monitor.run_forever`, the calling thread) drains every socket it
  reads on each turn: the cameras' frames, the pose engine's Pose2D/Pose3D, the rule firings
  and the supervisor's health. It is a latest-wins consumer: on each turn it copies each
  camera's newest frame, if it has not got it yet, out of the camera's shared-memory frame
  store (:mod:`rigstream.framestore`) into a buffer of its own (a pool per camera, reused in
  ring order; nothing is allocated per frame), keeps the newest :data:`RING_FRAMES` frames
  taken per camera and a thinned history of a few seconds (so a frame can be shown with its
  own keypoints while the pose engine runs behind) and lets the rest go. A monitor never holds
  back a camera node however slow its browsers are: readers of a store never make its writer
  wait.
- the web server (aiohttp, its own thread and event loop) serves the page and a JSON API.
  Frames are pulled: a tile asks ``/api/frame/<camera>?after=<trigger_index>`` and gets a
  newer frame as a JPEG (long-polled up to :data:`LONG_POLL_S`; while poses flow, the frame
  of the newest Pose2D, else the newest frame), at most
  :data:`MAX_FPS` new encodes per camera, downscaled to :data:`MAX_WIDTH_PX`; several
  browsers share one encode. A slow browser only asks less often; nothing queues for it.

The API (every route also answers a JSON error): ``GET /api/config`` (cameras, keypoints,
skeleton, rules and their regions), ``GET /api/state`` (health, pose, latency histogram,
rules, event log), ``GET /api/frame/<camera>?after=N`` (image/jpeg; headers
``X-Trigger-Index``, ``X-Pose-Index`` and ``X-Keypoints``: JSON ``[[x, y, conf] | null, ...]``
in JPEG pixels), ``GET /api/pose3d?after=N`` (the newest Pose3D, NaN as null), ``POST
/api/clip`` (an Event to the ring buffer) and ``POST /api/ttl`` (a ``ttl`` Command to the
trigger daemon; the reply is returned and logged). A POST body is decoded as a typed message
(:class:`ClipRequest`, :class:`TtlRequest`): anything else is a 400 naming what was wrong, a body
over :data:`MAX_BODY_BYTES` a 413. Only a stuck key or a script presses faster than the rig
should act: a clip request within :data:`CLIP_INTERVAL_S` of the last one sent is merged into
that clip or refused, test TTLs past :data:`TTLS_PER_S` a second are refused (429); each refusal
is answered with its reason and counted in the monitor's stats (``buttons``).

On loopback no token is needed (requests must then name a loopback host, so a web page
elsewhere cannot reach the monitor by DNS rebinding). Bound to any other address a token is
required: give it once
as ``?token=`` (it is kept in a cookie), or in the ``X-Monitor-Token`` header; a request
without it gets 401, with a wrong one 403. POSTs must be JSON from the page's own origin (a
cross-site form cannot press the buttons).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, TypeVar

import msgspec
import numpy as np
import zmq
from aiohttp import web

from rigstream import protocol
from rigstream.component import Component
from rigstream.config import InputError, RigConfig
from rigstream.frames import CameraStores
from rigstream.framestore import FrameStore
from rigstream.latency import latency_stats
from rigstream.protocol import Command, Event, FrameHeader, Pose2D, Pose3D, Status
from rigstream.transport import (
    ControlListener,
    CurveClientKeys,
    SignalStop,
    StatusReporter,
    received,
    request,
    subscriber,
    trigger_client_keys,
)

logger = logging.getLogger(__name__)

RING_FRAMES = 16
"""Newest frames taken kept per camera."""
TAKE_FPS = 30.0
"""Newest frames copied out of a camera's store per second, at most: twice what the page
shows (MAX_FPS), a small share of a 226 Hz camera. The frame of each Pose2D is copied as well
(:attr:`CameraFeed.posed`), so keypoints are drawn on their own frame."""
POSED_FRAMES = 16
"""Frames of the newest Pose2D messages kept per camera."""
RING_SPARE = 16
"""Pool buffers per camera beyond RING_FRAMES: a frame that left the ring is overwritten only
after this many newer frames, so one the web server picked just before is not torn while it
is encoded."""
HISTORY_SPARE = 4
"""The same for the history's buffers (which take HISTORY_FPS frames a second)."""
HISTORY_S = 5.0
HISTORY_FPS = 20.0
"""Older frames are kept, this many a second, for this long (the pose engine may lag)..."""
HISTORY_BYTES = 160 * 2**20
"""...within this much memory for all cameras together."""
POSES_KEPT = 64
"""Newest Pose2D kept for matching frames to keypoints."""
MAX_FPS = 15.0
"""New JPEGs encoded per camera and second, at most (however many browsers ask)."""
MAX_WIDTH_PX = 640
"""JPEGs wider than this are downscaled."""
JPEG_QUALITY = 80
LONG_POLL_S = 1.0
"""How long a frame or pose request waits for something newer before answering 204."""
LATENCY_SAMPLES = 500
"""Latencies kept for the histogram (per series)."""
EVENTS_KEPT = 200
EVENTS_SHOWN = 50
TOKEN_COOKIE = "rigstream_monitor_token"
TTL_WIDTH_MS = 10.0
"""Width of the test TTL pulse that the page's button fires."""
MAX_TTL_WIDTH_MS = 1000.0
"""The widest test TTL the page may ask for."""
TTLS_PER_S = 5
"""Test TTLs the page may fire in any one second, at most; more are refused, not queued. A
person pressing the button stays far below it, and each pulse drives the rig's output line (a
stimulus, a valve), so a stuck key or a script must not fire it hundreds of times."""
CLIP_INTERVAL_S = 1.0
"""The least time between two clip requests the page sends to the ring buffer. A press sooner
is merged into the last one's clip while that clip's window (``ring_buffer.post_s`` after it)
still holds the moment pressed, else refused: a flood of presses costs the ring buffer one clip,
never a rule's clip its rows."""
MAX_BODY_BYTES = 4096
"""The largest POST body the monitor reads (the buttons send a few bytes)."""


class ClipRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /api/clip``: nothing to ask (the clip has the rig's window)."""


class TtlRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /api/ttl``."""

    width_ms: Annotated[float, msgspec.Meta(gt=0, le=MAX_TTL_WIDTH_MS)] = TTL_WIDTH_MS


Body = TypeVar("Body", ClipRequest, TtlRequest)


class Refused(Exception):
    """A press the monitor does not act on: its HTTP status, a short reason and what to say."""

    def __init__(self, status: int, reason: str, text: str) -> None:
        super().__init__(text)
        self.status, self.reason, self.text = status, reason, text


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IPs (what no other machine can reach)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (browsers reject them in JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def nice_ceiling(x: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is >= ``x`` (``x`` > 0)."""
    exp = 10 ** math.floor(math.log10(x))
    for step in (1, 2, 5, 10):
        if step * exp >= x * (1 - 1e-9):
            return float(step * exp)
    return float(10 * exp)


def latency_histogram(series: dict[str, list[float]], bins: int = 25) -> dict[str, Any]:
    """Counts per series over shared bins from 0 to a round number above every series' p99;
    values beyond it count in the last bin."""
    finite = {k: np.asarray([v for v in vals if v is not None and math.isfinite(v)], float)
              for k, vals in series.items()}
    tops = [float(np.percentile(a, 99)) for a in finite.values() if a.size]
    top = nice_ceiling(max([*tops, 1.0]) * 1.1)
    edges = np.linspace(0.0, top, bins + 1)
    counts = {k: np.histogram(np.clip(a, 0.0, top), edges)[0].tolist() for k, a in finite.items()}
    return {"edges_ms": [round(float(e), 4) for e in edges], "counts": counts,
            "stats": {k: latency_stats(series[k], count=True) for k in series}}


# -- what the page shows, gathered by the receive loop -----------------------------------------


@dataclass
class ShownFrame:
    """A frame picked for a tile, with the 2D keypoints to draw on it."""

    header: FrameHeader
    pixels: np.ndarray
    """(height, width[, 3]) one of its camera feed's buffers (see RING_SPARE)."""
    pose_index: int | None = None
    """Trigger index of the Pose2D whose keypoints go with it (None: no recent pose)."""
    keypoints: list[list[float]] | None = None
    """(K, 3) x, y in full-frame pixels and confidence."""


Kept = tuple[FrameHeader, np.ndarray]


class CameraFeed:
    """The frames of one camera the monitor holds: every one of the newest RING_FRAMES it took,
    and before them a history thinned to HISTORY_FPS for HISTORY_S (so a frame can still be
    shown with its keypoints when the pose engine runs seconds behind), in at most
    ``budget_bytes``.

    The pixels live in buffers the feed owns, allocated once (on the first frame, in its
    store's shape) and reused in ring order: the receive loop copies a frame from the store
    into the buffer :meth:`claim` gives, then :meth:`add` holds it; a frame moving from the
    ring into the history is copied into the history's own buffers (at most HISTORY_FPS a
    second)."""

    def __init__(self, rate_hz: float, frame_bytes: int, budget_bytes: int) -> None:
        self.ring: collections.deque[Kept] = collections.deque(maxlen=RING_FRAMES)
        self.step = max(1, round(rate_hz / HISTORY_FPS))
        """Trigger indices between two history frames."""
        depth = max(1, min(round(HISTORY_S * HISTORY_FPS), budget_bytes // max(frame_bytes, 1)))
        self.history: collections.deque[Kept] = collections.deque(maxlen=depth)
        self.posed: collections.deque[Kept] = collections.deque(maxlen=POSED_FRAMES)
        """The frames of the newest Pose2D messages, copied from the store when each came."""
        self._posed_pool: list[np.ndarray] = []
        self._posed_taken = 0
        self.t_taken = 0.0
        """When the newest frame was last taken (monotonic s; TAKE_FPS)."""
        self._pool: list[np.ndarray] = []
        self._history_pool: list[np.ndarray] = []
        self._taken = 0
        self._kept = 0
        self.received = 0
        """Frames taken."""
        self.skipped = 0
        """Trigger indices passed over because a newer one was there first (latest-wins)."""
        self.lost = 0
        """Frames overwritten in the store while the monitor copied them."""
        self.drop_notices = 0
        self.newest_read = -1
        """The newest trigger index looked at (a frame taken or lost, or a notice)."""
        self.ended = False
        self.arrivals: collections.deque[float] = collections.deque(maxlen=256)
        """Receive times (monotonic s) of the latest frames, for the monitor's own frame rate."""

    def claim(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """The buffer the next frame is copied into: held by neither the ring nor the history,
        and not by any of the last RING_SPARE frames that left the ring."""
        if not self._pool:
            n = self.ring.maxlen or RING_FRAMES
            self._pool = [np.empty(shape, dtype) for _ in range(n + RING_SPARE)]
            self._history_pool = [np.empty(shape, dtype)
                                  for _ in range((self.history.maxlen or 1) + HISTORY_SPARE)]
        return self._pool[self._taken % len(self._pool)]

    def claim_posed(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """The buffer the next posed frame is copied into (as :meth:`claim`, for :attr:`posed`)."""
        if not self._posed_pool:
            self._posed_pool = [np.empty(shape, dtype) for _ in range(POSED_FRAMES + RING_SPARE)]
        return self._posed_pool[self._posed_taken % len(self._posed_pool)]

    def add_posed(self, header: FrameHeader, pixels: np.ndarray) -> None:
        """Hold the frame of a Pose2D; ``pixels`` is the buffer :meth:`claim_posed` returned."""
        self.posed.append((header, pixels))
        self._posed_taken += 1

    def holds(self, index: int) -> bool:
        return any(h.trigger_index == index for part in (self.posed, self.ring) for h, _ in part)

    def saw(self, index: int) -> None:
        """Trigger ``index`` is the newest looked at (what came between was skipped)."""
        self.skipped += max(0, index - self.newest_read - 1)
        self.newest_read = max(self.newest_read, index)

    def add(self, header: FrameHeader, pixels: np.ndarray) -> None:
        """Hold a frame; ``pixels`` is the buffer :meth:`claim` returned, filled."""
        if len(self.ring) == self.ring.maxlen:
            oldest = self.ring[0]
            if not self.history or oldest[0].trigger_index >= self.history[-1][0].trigger_index + self.step:
                kept = self._history_pool[self._kept % len(self._history_pool)]
                np.copyto(kept, oldest[1])
                self._kept += 1
                self.history.append((oldest[0], kept))
        self.ring.append((header, pixels))
        self._taken += 1
        self.received += 1
        self.arrivals.append(time.monotonic())

    def frames_after(self, after: int) -> list[Kept]:
        """Held frames newer than trigger index ``after``, oldest first."""
        frames = [f for part in (self.history, self.ring, self.posed) for f in part
                  if f[0].trigger_index > after]
        return sorted(frames, key=lambda f: f[0].trigger_index)

    @property
    def newest_index(self) -> int:
        return self.ring[-1][0].trigger_index if self.ring else -1

    def rx_fps(self, now: float) -> float | None:
        recent = [t for t in self.arrivals if now - t <= 1.0]
        return float(len(recent)) if self.arrivals else None


class MonitorState:
    """Everything the page shows; written by the receive loop, read by the web server."""

    def __init__(self, rig: RigConfig) -> None:
        self.rig = rig
        self.cameras = [c.name for c in rig.cameras]
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        budget = HISTORY_BYTES // len(rig.cameras)
        self.feeds = {c.name: CameraFeed(rig.trigger.rate_hz, c.width * c.height * c.channels, budget)
                      for c in rig.cameras}
        self.poses2d: collections.deque[Pose2D] = collections.deque(maxlen=POSES_KEPT)
        self.t_last_pose2d: float | None = None
        self.pose3d: Pose3D | None = None
        self.latency_3d_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        self.latency_ttl_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        self._ttl_seen: collections.deque[tuple[str, int]] = collections.deque(maxlen=200)
        self.health: dict[str, Any] | None = None
        self.t_health: float | None = None
        self._frame_history: collections.deque[tuple[float, dict[str, int]]] = collections.deque(maxlen=5)
        self.rule_firings: collections.Counter[str] = collections.Counter()
        self.rule_last: dict[str, int | None] = {}
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS_KEPT)
        self._clips_logged = 0
        """Clips saved by the ring buffer that the event log has shown."""
        self._failed_seen: dict[str, str] = {}
        self._restarts_seen: dict[str, int] = {}
        self.served = collections.Counter[str]()
        self.keypoints, self.card_skeleton = model_card_info(rig)
        self.edges_cache: tuple[tuple[str, ...], list[list[int]]] = ((), [])

    # -- the event log ---------------------------------------------------------------------

    def log(self, kind: str, text: str) -> None:
        """Add a line to the page's event log (kind: rule, clip, button, failed, info)."""
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
        with self.lock:
            self.events.append({"t": stamp, "t_s": round(time.monotonic() - self.t0, 3),
                                "kind": kind, "text": text})

    # -- inputs (receive loop) -------------------------------------------------------------

    def add_frame(self, header: FrameHeader, pixels: np.ndarray | None) -> None:
        """The newest index of a camera: a frame copied into its feed's :meth:`CameraFeed.claim`
        buffer, or a drop notice (no pixels)."""
        feed = self.feeds[header.camera]
        with self.lock:
            feed.saw(header.trigger_index)
            if pixels is None:
                feed.drop_notices += 1
            else:
                feed.add(header, pixels)

    def add_posed_frame(self, header: FrameHeader, pixels: np.ndarray) -> None:
        """The frame a Pose2D was computed on, copied from its store into
        :meth:`CameraFeed.claim_posed`'s buffer."""
        with self.lock:
            self.feeds[header.camera].add_posed(header, pixels)

    def holds_frame(self, camera: str, index: int) -> bool:
        with self.lock:
            return self.feeds[camera].holds(index)

    def frame_lost(self, camera: str, index: int) -> None:
        """The newest index of a camera was overwritten in its store while it was copied."""
        feed = self.feeds[camera]
        with self.lock:
            feed.saw(index)
            feed.lost += 1

    def camera_ended(self, camera: str) -> None:
        with self.lock:
            self.feeds[camera].ended = True

    def add_pose(self, msg: Pose2D | Pose3D) -> None:
        with self.lock:
            if isinstance(msg, Pose2D):
                self.poses2d.append(msg)
                self.t_last_pose2d = time.monotonic()
                return
            self.pose3d = msg
            if msg.t_pi_ns >= 0:
                self.latency_3d_ms.append((msg.t_host_ns - msg.t_pi_ns) / 1e6)

    def add_rule_event(self, event: Event) -> None:
        rule = str(event.data.get("rule", event.name))
        actions = event.data.get("actions", [])
        with self.lock:
            self.rule_firings[rule] += 1
            self.rule_last[rule] = event.trigger_index
        chain = event.data.get("chain_ms") or {}
        total = sum(v for v in chain.values() if isinstance(v, (int, float)))
        what = ", ".join(_action_name(a) for a in actions) if isinstance(actions, list) else str(actions)
        self.log("rule", f"rule {rule} fired at n={event.trigger_index} ({event.data.get('kind', '?')}; "
                         f"{what or 'no actions'}; pulse -> decision {total:.1f} ms)")

    def add_health(self, status: Status) -> None:
        stats = status.stats
        now = time.monotonic()
        frames = {c: _count(_get(stats, "components", f"camera:{c}", "stats", "frames"))
                  for c in self.cameras}
        with self.lock:
            self.health = stats
            self.t_health = now
            t_s = stats.get("t_s")
            if isinstance(t_s, (int, float)):
                if self._frame_history and t_s < self._frame_history[-1][0]:
                    self._frame_history.clear()  # a new session
                self._frame_history.append((float(t_s), frames))
        self._log_health_changes(stats)

    def _log_health_changes(self, stats: dict[str, Any]) -> None:
        ring = _dict(_get(stats, "components", "ringbuffer", "stats"))
        clips = ring["clips"] if isinstance(ring.get("clips"), list) else []
        saved = _count(ring.get("clips_saved", len(clips)))  # it lists only its newest
        if saved < self._clips_logged:  # a new session
            self._clips_logged = 0
        new = min(max(saved - self._clips_logged, 0), len(clips))
        for path in clips[len(clips) - new:]:
            self.log("clip", f"clip saved: {_short_path(path)}")
        self._clips_logged = max(saved, self._clips_logged)
        for name, why in _dict(stats.get("failed")).items():
            if self._failed_seen.get(name) != why:
                self._failed_seen[name] = why
                self.log("failed", f"{name} failed: {why}")
        for name, n in _dict(stats.get("restarts")).items():
            if n != self._restarts_seen.get(name, 0):
                self._restarts_seen[name] = n
                self.log("failed", f"{name} restarted ({n} time{'s' if n != 1 else ''})")
        recent = _get(stats, "components", "pose", "stats", "closed_loop", "recent", default=[]) or []
        with self.lock:
            for item in (_dict(i) for i in (recent if isinstance(recent, list) else [])):
                key = (str(item.get("rule")), _count(item.get("trigger_index")))
                total = item.get("total_ms")
                if key in self._ttl_seen or "ttl" not in (item.get("actions") or []):
                    continue
                self._ttl_seen.append(key)
                if isinstance(total, (int, float)) and not item.get("ttl_error"):
                    self.latency_ttl_ms.append(float(total))

    # -- outputs (web server) --------------------------------------------------------------

    def has_frame_after(self, camera: str, after: int) -> bool:
        return self.feeds[camera].newest_index > after

    def pose_live(self) -> bool:
        """A Pose2D came within the last second."""
        t = self.t_last_pose2d
        return t is not None and time.monotonic() - t < 1.0

    def has_posed_frame_after(self, camera: str, after: int) -> bool:
        return self._posed_frame(camera, after) is not None

    def _posed_frame(self, camera: str, after: int) -> ShownFrame | None:
        """The frame of the newest Pose2D newer than ``after`` (or the held frame nearest it,
        within half the history's spacing), with that pose's keypoints."""
        feed = self.feeds[camera]
        with self.lock:
            frames = feed.frames_after(after)
            poses = [p for p in self.poses2d if p.trigger_index > after and camera in p.views]
        if not frames:
            return None
        by_index = {h.trigger_index: (h, px) for h, px in frames}
        for pose in reversed(poses):
            n = pose.trigger_index
            match = by_index.get(n)
            if match is None:
                near = min(by_index, key=lambda i: abs(i - n))
                match = by_index[near] if abs(near - n) <= feed.step // 2 else None
            if match is not None:
                return ShownFrame(match[0], match[1], n, pose.views[camera])
        return None

    def pick_frame(self, camera: str, after: int) -> ShownFrame | None:
        """What a tile shows next: the frame of the newest Pose2D newer than ``after``, else
        the newest frame with the keypoints of a pose within 0.2 s of it, else without."""
        posed = self._posed_frame(camera, after)
        if posed is not None:
            return posed
        with self.lock:
            ring = self.feeds[camera].ring
            newest = ring[-1] if ring and ring[-1][0].trigger_index > after else None
            poses = {p.trigger_index: p for p in self.poses2d if camera in p.views}
        if newest is None:
            return None
        h, px = newest
        near = min(poses, key=lambda n: abs(n - h.trigger_index), default=None)
        if near is None or abs(near - h.trigger_index) > max(1, self.rig.frames_per(0.2)):
            return ShownFrame(h, px)
        return ShownFrame(h, px, near, poses[near].views[camera])

    def pose3d_after(self, after: int) -> Pose3D | None:
        p = self.pose3d
        return p if p is not None and p.trigger_index > after else None

    def snapshot(self) -> dict[str, Any]:
        """What ``/api/state`` returns (JSON-safe)."""
        now = time.monotonic()
        with self.lock:
            health = self.health or {}
            t_health = self.t_health
            history = list(self._frame_history)
            lat3d, latttl = list(self.latency_3d_ms), list(self.latency_ttl_ms)
            events = list(self.events)[-EVENTS_SHOWN:][::-1]
            pose3d = self.pose3d
            # the feeds change under the receive loop: read them under the lock
            cameras = {c: self._camera_view(c, health, history, now) for c in self.cameras}
        pose_stats = _dict(_get(health, "components", "pose", "stats"))
        closed_loop = _dict(pose_stats.get("closed_loop"))
        state = {
            "t_s": round(now - self.t0, 3),
            "session": self._session_view(health, t_health, now),
            "cameras": cameras,
            "pose": {
                "posed": pose_stats.get("framesets_posed"),
                "skipped": pose_stats.get("framesets_skipped"),
                "pulse_to_pose2d_ms": pose_stats.get("latency_ms"),
                "pulse_to_pose3d_ms": latency_stats(lat3d, count=True),
                "pulse_to_ttl_ms": closed_loop.get("pulse_to_ttl_ms") or latency_stats(latttl, count=True),
                "pulse_to_action_ms": closed_loop.get("pulse_to_action_ms"),
                "last_pose3d_index": pose3d.trigger_index if pose3d is not None else None,
            },
            "histogram": latency_histogram({"pulse_to_pose3d": lat3d, "pulse_to_ttl": latttl}),
            "rules": self._rules_view(_dict(pose_stats.get("rules"))),
            "events": events,
            "edges": self.edges_for(pose3d.keypoints) if pose3d is not None else [],
        }
        return json_safe(state)

    def _session_view(self, health: dict[str, Any], t_health: float | None, now: float) -> dict[str, Any]:
        comps = _dict(health.get("components"))
        return {
            "seen": t_health is not None,
            "age_s": round(now - t_health, 2) if t_health is not None else None,
            "t_s": health.get("t_s"), "pulses": health.get("pulses"), "rate_hz": health.get("rate_hz"),
            "components": {k: str(_dict(v).get("state", "?")) for k, v in comps.items()},
            "failed": _dict(health.get("failed")), "restarts": _dict(health.get("restarts")),
        }

    def _camera_view(self, camera: str, health: dict[str, Any], history: list[tuple[float, dict[str, int]]],
                     now: float) -> dict[str, Any]:
        comp = _dict(_get(health, "components", f"camera:{camera}"))
        stats = _dict(comp.get("stats"))
        fill = _get(health, "components", "ringbuffer", "stats", "ring_fill", camera)
        feed = self.feeds[camera]
        return {
            "state": comp.get("state"), "fps": _fps(history, camera), "frames": stats.get("frames"),
            "dropped": stats.get("dropped"), "last_index": stats.get("last_index"), "ring_fill": fill,
            "monitor_fps": feed.rx_fps(now), "monitor_frames": feed.received,
            "monitor_newest": feed.newest_index, "ended": feed.ended,
        }

    def _rules_view(self, stats: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for rule in rig_rules(self.rig):
            name = rule["name"]
            st = _dict(stats.get(name))
            out.append({
                "name": name, "kind": rule["kind"], "actions": rule["actions"],
                "fired": st.get("fired", self.rule_firings.get(name, 0)),
                "last_trigger_index": st.get("last_trigger_index", self.rule_last.get(name)),
                "armed": st.get("armed"), "active": st.get("active"),
            })
        return out

    def edges_for(self, keypoints: list[str]) -> list[list[int]]:
        """Skeleton edges as index pairs into ``keypoints`` (cached per keypoint list)."""
        key = tuple(keypoints)
        if self.edges_cache[0] != key:
            index = {k: i for i, k in enumerate(keypoints)}
            edges = [[index[a], index[b]] for a, b in skeleton_for(self.card_skeleton, keypoints)
                     if a in index and b in index]
            self.edges_cache = (key, edges)
        return self.edges_cache[1]


def _dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a dict, else an empty one (health contents are free-form)."""
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    """``value`` as an int if it is a number, else -1."""
    return int(value) if isinstance(value, (int, float)) and math.isfinite(value) else -1


def _action_name(action: Any) -> str:
    """``ttl`` for ``{"ttl": {...}}`` (an Action as sent), the text itself for a string."""
    if isinstance(action, dict) and action:
        return str(next(iter(action)))
    return str(action)


def _short_path(path: str) -> str:
    """The last two parts of a path (``clips/clip_001_n155``)."""
    parts = str(path).replace("\\", "/").rstrip("/").split("/")
    return "/".join(parts[-2:])


def _get(d: Any, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _fps(history: list[tuple[float, dict[str, int]]], camera: str) -> float | None:
    """Frames per second from the frame counts of the oldest and newest health messages."""
    if len(history) < 2:
        return None
    (t0, f0), (t1, f1) = history[0], history[-1]
    a, b = f0.get(camera, -1), f1.get(camera, -1)
    if t1 - t0 < 0.2 or a < 0 or b < a:
        return None
    return round((b - a) / (t1 - t0), 1)


# -- the rig's rules, keypoints and skeleton as the page draws them -------------------------------


def rig_rules(rig: RigConfig) -> list[dict[str, Any]]:
    """Name, kind (3d/2d), actions and the YAML form of each of the rig's rules."""
    out = []
    for rule in getattr(rig, "rules", None) or []:
        doc = msgspec.to_builtins(rule)
        actions = [next(iter(a)) for a in doc.get("actions", []) if isinstance(a, dict) and a]
        out.append({"name": doc.get("name", "?"), "kind": getattr(rule, "kind", "?"),
                    "actions": actions, "when": doc.get("when", {})})
    return out


def rule_regions(rig: RigConfig) -> list[dict[str, Any]]:
    """The boxes and spheres the rules test (3D in mm; 2D boxes in a camera's pixels)."""
    regions: list[dict[str, Any]] = []
    for rule in rig_rules(rig):
        for test, negated in _walk_condition(rule["when"], False):
            if "in_box" in test:
                box = test["in_box"]
                regions.append({"rule": rule["name"], "shape": "box", "keypoint": box.get("keypoint"),
                                "min": box.get("min"), "max": box.get("max"),
                                "camera": box.get("camera"), "negated": negated})
            elif "in_sphere" in test:
                sph = test["in_sphere"]
                regions.append({"rule": rule["name"], "shape": "sphere", "keypoint": sph.get("keypoint"),
                                "center": sph.get("center"), "radius_mm": sph.get("radius_mm"),
                                "camera": None, "negated": negated})
    return regions


def _walk_condition(cond: Any, negated: bool) -> Iterator[tuple[dict[str, Any], bool]]:
    if not isinstance(cond, dict):
        return
    for key in ("all", "any"):
        for sub in cond.get(key) or []:
            yield from _walk_condition(sub, negated)
    if isinstance(cond.get("not"), dict):
        yield from _walk_condition(cond["not"], not negated)
    if any(k in cond for k in ("in_box", "in_sphere")):
        yield cond, negated


def model_card_info(rig: RigConfig) -> tuple[list[str], list[list[str]]]:
    """Keypoints and skeleton of the rig's pose model card (the rig's keypoints and no edges
    when there is no card to read)."""
    if rig.pose is None:
        return [], []
    try:
        from rigstream.inference.modeldir import load_model, resolve_model_path

        card = load_model(resolve_model_path(rig.pose.model)).card
    except Exception as exc:  # the page works without it: the pose messages name the keypoints
        logger.info("monitor: no model card for the skeleton (%s)", exc)
        return list(rig.pose.keypoints or []), []
    return list(card.keypoints), [list(e) for e in card.skeleton]


def skeleton_for(card_skeleton: list[list[str]], keypoints: list[str]) -> list[tuple[str, str]]:
    """Edges to draw: the model card's skeleton, else the simulated rat's when the keypoint
    names are among its own, else none (points only)."""
    if card_skeleton:
        return [(e[0], e[1]) for e in card_skeleton if len(e) == 2]
    from rigstream.acquisition import sim_world

    if keypoints and set(keypoints) <= set(sim_world.KEYPOINTS):
        return list(sim_world.SKELETON)
    return []


# -- JPEG encoding --------------------------------------------------------------------------------


@dataclass
class Encoded:
    trigger_index: int
    pose_index: int | None
    jpeg: bytes
    headers: dict[str, str]
    t_encoded: float


def to_display(pixels: np.ndarray, pixel_format: str) -> np.ndarray:
    """8-bit grey or BGR for JPEG: uint16 scaled down, Bayer demosaiced, RGB reordered."""
    import cv2

    img = pixels
    if img.dtype != np.uint8:
        img = (img >> 8).astype(np.uint8)
    if pixel_format == "bayer_rg8" and img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_BayerBG2BGR)  # OpenCV's name for an RGGB sensor
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    return img


def encode_frame(shown: ShownFrame, pixel_format: str, max_width: int = MAX_WIDTH_PX,
                 quality: int = JPEG_QUALITY) -> Encoded:
    """JPEG of ``shown`` (downscaled to ``max_width``) and its headers, keypoints scaled to it."""
    import cv2

    img = to_display(shown.pixels, pixel_format)
    h, w = img.shape[:2]
    scale = min(1.0, max_width / w)
    if scale < 1.0:
        img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {shown.header.camera} frame {shown.header.frame_id}")
    head = shown.header
    headers = {
        "X-Camera": head.camera, "X-Trigger-Index": str(head.trigger_index),
        "X-T-Pi-Ns": str(head.t_pi_ns), "X-Frame-Size": f"{w}x{h}",
        "X-Image-Size": f"{img.shape[1]}x{img.shape[0]}",
    }
    if shown.pose_index is not None and shown.keypoints is not None:
        headers["X-Pose-Index"] = str(shown.pose_index)
        headers["X-Keypoints"] = json.dumps(
            [[round(x * scale, 1), round(y * scale, 1), round(c, 3)]
             if math.isfinite(x) and math.isfinite(y) else None for x, y, c in shown.keypoints],
            separators=(",", ":"))
    return Encoded(head.trigger_index, shown.pose_index, buf.tobytes(), headers, time.monotonic())


# -- the monitor process ------------------------------------------------------------------------


class Waker:
    """Lets web requests wait for news from the receive thread without polling."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}
        self._waiting: collections.Counter[str] = collections.Counter()
        self._scheduled: set[str] = set()

    def notify(self, key: str) -> None:
        """Called by the receive thread: wake the requests waiting on ``key``."""
        loop = self.loop
        if loop is None or not self._waiting.get(key) or key in self._scheduled:
            return
        self._scheduled.add(key)
        try:
            loop.call_soon_threadsafe(self._wake, key)
        except RuntimeError:  # the loop has closed
            self._scheduled.discard(key)

    def _wake(self, key: str) -> None:
        self._scheduled.discard(key)
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    async def wait_for(self, key: str, ready: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``ready()`` (re-checked on each notify of ``key``) or the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not ready():
            left = deadline - loop.time()
            if left <= 0:
                return False
            event = self._events.setdefault(key, asyncio.Event())
            self._waiting[key] += 1
            try:
                if ready():
                    return True
                await asyncio.wait_for(event.wait(), left)
            except asyncio.TimeoutError:
                return ready()
            finally:
                self._waiting[key] -= 1
        return True


class Monitor(Component):
    """Receives what a running rig publishes and serves the monitor page.

    ``start()`` binds the web server and returns its URL; ``run_forever()`` then runs the
    receive loop until a stop (the ``stop`` event or a ``stop`` command) and returns the
    monitor's summary. Use it as a context manager, or call ``close()``.
    """

    name = "monitor"
    drains = False  # a viewer: it stops at once

    def __init__(self, rig: RigConfig, run: str, ctx: zmq.Context | None = None,
                 status_address: str | None = None, host: str = "127.0.0.1", port: int = 8800,
                 token: str | None = None, curve: CurveClientKeys | None = None) -> None:
        if not is_loopback_host(host) and not token:
            raise InputError(
                f"monitor: host {host} is reachable from the network, so a token is required "
                f"(--token or RIGSTREAM_MONITOR_TOKEN); loopback (127.0.0.1) needs none")
        self.rig = rig
        self.run = run
        self.ctx = ctx or zmq.Context.instance()
        self.host, self.port, self.token = host, port, token or None
        self.curve = curve if curve is not None else trigger_client_keys(rig)
        self.state = MonitorState(rig)
        self.waker = Waker()
        self.frames = CameraStores(rig, run, self.ctx, "monitor frames")
        self.poses = subscriber(self.ctx, rig.address("poses", run), hwm=1000)
        self.rule_events = subscriber(self.ctx, rig.address("rule_events", run), hwm=1000)
        self.health = subscriber(self.ctx, rig.address("health", run), hwm=100)
        self.malformed = {name: protocol.MalformedCounter(f"monitor {name}")
                          for name in ("poses", "rule_events", "health")}
        self.status = StatusReporter(self.ctx, status_address, "monitor")
        self.control = ControlListener(self.ctx, status_address and rig.address("control", run),
                                       "monitor")
        self.web = WebServer(self)
        self.url: str | None = None
        self._poller: zmq.Poller | None = None
        self._closed = False

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> str:  # type: ignore[override]  # the URL, for callers that serve alone
        """Serve the page; returns its URL (with ``?token=`` when a token is set)."""
        if self.url is None:
            port = self.web.start(self.host, self.port)
            host = self.host if ":" not in self.host else f"[{self.host}]"
            if self.host in ("0.0.0.0", "::", ""):
                host = socket.gethostname()
            self.url = f"http://{host}:{port}/" + (f"?token={self.token}" if self.token else "")
            self.state.log("info", f"monitor serving on {host}:{port}")
        return self.url

    # -- the receive loop (rigstream.component; start() serves the page) ------------------------

    def turn(self) -> bool:
        if self._poller is None:
            self._poller = zmq.Poller()
            for sock in (self.frames.sock, self.poses, self.rule_events, self.health):
                self._poller.register(sock, zmq.POLLIN)
        self._poller.poll(50)
        self.drain()
        return True

    def ready_stats(self) -> dict[str, Any]:
        return {"url": self.url, **self.summary()}

    running_stats = ready_stats

    def finish(self) -> dict[str, Any]:
        return self.ready_stats()

    def drain(self) -> None:
        """Take what has arrived on every socket and each camera's newest frame (never
        blocks; one frame per camera, so a flood of frames cannot starve the other sockets)."""
        self.frames.wait(0)  # the camera headers only wake the loop; opens stores made since
        for camera, store in self.frames.stores.items():
            if self._take_newest(camera, store):
                self.waker.notify(camera)
        for msg in received(self.poses, (Pose2D, Pose3D), self.malformed["poses"]):
            if isinstance(msg, Pose2D):
                self._take_posed(msg)
            self.state.add_pose(msg)
            self.waker.notify("pose2d" if isinstance(msg, Pose2D) else "pose3d")
        for msg in received(self.rule_events, Event, self.malformed["rule_events"]):
            self._take("rule_events", self.state.add_rule_event, msg)
        for msg in received(self.health, Status, self.malformed["health"]):
            if msg.component == "session":
                self._take("health", self.state.add_health, msg)

    def _take_newest(self, camera: str, store: FrameStore) -> bool:
        """Copy the newest index of ``camera``'s store into its feed if the feed has not looked
        at it yet; True if a frame was taken. A frame overwritten while it was copied is counted
        as lost (its buffer is reused for the next)."""
        feed = self.state.feeds[camera]
        if not feed.ended and store.ended:
            self.state.camera_ended(camera)
        n = store.head - 1
        now = time.monotonic()
        if n <= feed.newest_read or now - feed.t_taken < 1 / TAKE_FPS:
            return False
        feed.t_taken = now
        layout = store.layout
        rec = store.read(n, out=feed.claim(layout.frame_shape, layout.dtype))
        if rec is None:
            return False
        if rec.state == "overrun":
            self.state.frame_lost(camera, n)
            return False
        self.state.add_frame(rec.header(camera, layout), rec.pixels)
        return rec.state == "frame"

    def _take_posed(self, pose: Pose2D) -> None:
        """Copy the frames ``pose`` was computed on from their stores (where they still are),
        so its keypoints are drawn on their own frame."""
        n = pose.trigger_index
        for camera in pose.views:
            store = self.frames.stores.get(camera)
            if store is None or camera not in self.state.feeds or self.state.holds_frame(camera, n):
                continue
            layout = store.layout
            rec = store.read(n, out=self.state.feeds[camera].claim_posed(layout.frame_shape,
                                                                          layout.dtype))
            if rec is not None and rec.state == "frame":
                self.state.add_posed_frame(rec.header(camera, layout), rec.pixels)

    def _take(self, name: str, add: Callable[[Any], None], msg: Event | Status) -> None:
        """``add(msg)``; free-form contents (Event.data, Status.stats) that do not have the
        shape the page expects are counted as malformed, not fatal."""
        try:
            add(msg)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            self.malformed[name](protocol.ProtocolError("invalid-contents", f"{type(exc).__name__}: {exc}"))

    def summary(self) -> dict[str, Any]:
        feeds = self.state.feeds
        return {
            "frames_received": {c: f.received for c, f in feeds.items()},
            "frames_skipped": {c: f.skipped for c, f in feeds.items()},
            "frames_lost": {c: f.lost for c, f in feeds.items()},
            "frames_served": dict(self.state.served),
            "malformed": {"frames": self.frames.malformed.as_dict(),
                          **{k: v.as_dict() for k, v in self.malformed.items()},
                          "control": self.control.malformed.as_dict()},
            "clients": self.web.clients,
            "buttons": self.web.button_stats(),
        }

    # -- the buttons (called on the web server's loop) ----------------------------------------

    def clip_event(self) -> Event:
        """The "save clip now" event: no window of its own, so the ring buffer gives it the
        rig's and merges it into a pending clip of the rig's window that it overlaps (never into
        a rule's clip, whose window stays exact)."""
        return Event(name="monitor", source="monitor", t_host_ns=time.monotonic_ns())

    def fire_ttl(self, width_ms: float) -> protocol.Reply:
        """Ask the trigger daemon for a TTL pulse (blocking; run it off the event loop)."""
        return request(self.ctx, self.rig.address("trigger_control", self.run),
                       Command(cmd="ttl", args={"width_ms": width_ms}), timeout_s=2.0, curve=self.curve)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.web.stop()
        self.frames.close()
        for sock in (self.poses, self.rule_events, self.health):
            sock.close(linger=0)
        self.status.close()
        self.control.close()


# -- the web server ----------------------------------------------------------------------------


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PAGE_FILES = {"/": ("index.html", "text/html"), "/monitor.js": ("monitor.js", "text/javascript"),
              "/monitor.css": ("monitor.css", "text/css")}


class WebServer:
    """The aiohttp app on its own thread and event loop."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.state = monitor.state
        self.clients = 0
        """Requests being answered now."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._encoder = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="monitor-jpeg")
        self._cache: dict[str, Encoded] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._push: zmq.Socket | None = None
        self.presses = {b: collections.Counter[str]() for b in ("clip", "ttl")}
        """Presses of each button by outcome: ``sent`` (or ``merged``, a clip)."""
        self.refused = {b: collections.Counter[str]() for b in ("clip", "ttl")}
        """Presses of each button refused, by reason."""
        self._refusal_logged = dict.fromkeys(self.refused, -math.inf)
        self._clip_sent_at = -math.inf
        """When the last clip request went to the ring buffer (monotonic s)."""
        self._ttls_sent: collections.deque[float] = collections.deque(maxlen=TTLS_PER_S)
        """When the newest test TTLs were sent (monotonic s)."""
        self._pages = {route: resources.files("rigstream.app").joinpath("monitor_page", name).read_bytes()
                       for route, (name, _) in PAGE_FILES.items()}
        self._config = self._make_config()

    def _make_config(self) -> dict[str, Any]:
        rig = self.monitor.rig
        keypoints = self.state.keypoints
        return json_safe({
            "rig": rig.name, "rate_hz": rig.trigger.rate_hz,
            "cameras": [{"name": c.name, "width": c.width, "height": c.height,
                         "pixel_format": c.pixel_format} for c in rig.cameras],
            "keypoints": keypoints,
            "skeleton": [list(e) for e in skeleton_for(self.state.card_skeleton, keypoints)],
            "rules": [{k: v for k, v in r.items() if k != "when"} for r in rig_rules(rig)],
            "regions": rule_regions(rig),
            "clip": {"pre_s": rig.ring_buffer.pre_s, "post_s": rig.ring_buffer.post_s},
            "ttl_width_ms": TTL_WIDTH_MS, "max_fps": MAX_FPS,
        })

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, host: str, port: int) -> int:
        """Start the server thread; returns the bound port. InputError if it cannot listen."""
        ready = threading.Event()
        result: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._serve, args=(host, port, ready, result),
                                        name="monitor-web", daemon=True)
        self._thread.start()
        ready.wait(30)
        if "error" in result:
            raise InputError(f"monitor: cannot listen on {host}:{port}: {result['error']}")
        if "port" not in result:
            raise InputError(f"monitor: the web server did not start on {host}:{port} within 30 s")
        return int(result["port"])

    def _serve(self, host: str, port: int, ready: threading.Event, result: dict[str, Any]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, host, port)
            loop.run_until_complete(site.start())
        except OSError as exc:
            result["error"] = str(exc)
            loop.run_until_complete(runner.cleanup())
            loop.close()
            ready.set()
            return
        self._stopping = asyncio.Event()
        self._push = self._push_socket()
        self.loop = loop
        self.monitor.waker.loop = loop
        result["port"] = runner.addresses[0][1]
        ready.set()
        try:
            loop.run_until_complete(self._stopping.wait())
        finally:
            self.monitor.waker.loop = None
            loop.run_until_complete(runner.cleanup())
            if self._push is not None:
                self._push.close()
            loop.close()

    def _push_socket(self) -> zmq.Socket:
        """PUSH to the ring buffer's events (used on the server's loop only)."""
        sock = self.monitor.ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.SNDHWM, 100)
        sock.connect(self.monitor.rig.address("events", self.monitor.run))
        return sock

    def stop(self) -> None:
        loop, stopping = self.loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._encoder.shutdown(wait=False)

    # -- the app ----------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._make_guard()], client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/", self._page)
        app.router.add_get("/monitor.js", self._page)
        app.router.add_get("/monitor.css", self._page)
        app.router.add_get("/api/config", self._get_config)
        app.router.add_get("/api/state", self._get_state)
        app.router.add_get("/api/frame/{camera}", self._get_frame)
        app.router.add_get("/api/pose3d", self._get_pose3d)
        app.router.add_post("/api/clip", self._post_clip)
        app.router.add_post("/api/ttl", self._post_ttl)
        return app

    def _error(self, status: int, message: str) -> web.Response:
        return web.json_response({"ok": False, "error": message}, status=status,
                                       headers={"Cache-Control": "no-store"})

    async def _guard_inner(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Token, same-origin POSTs and JSON errors for every request."""
        token = self.monitor.token
        if not token and not is_loopback_host(request.url.host or ""):
            return self._error(403, f"host {request.host!r} refused: without a token the monitor "
                                    f"answers only requests addressed to loopback")
        if token:
            given = (request.query.get("token") or request.headers.get("X-Monitor-Token")
                     or request.cookies.get(TOKEN_COOKIE))
            if not given:
                return self._error(401, "a token is required: open the URL that rigstream monitor "
                                        "printed (it ends in ?token=...)")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return self._error(403, "wrong token")
        if request.method == "POST":
            refused = self._refuse_post(request)
            if refused is not None:
                return self._error(403, refused)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if request.path.startswith("/api/") or exc.status >= 400:
                return self._error(exc.status, exc.reason)
            raise
        except Exception as exc:  # a bug answers one request with its reason; the page goes on
            logger.exception("monitor: %s %s failed", request.method, request.path)
            return self._error(500, f"{request.path}: {type(exc).__name__}: {exc}")
        if token and request.query.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    def _make_guard(self) -> Any:  # an aiohttp middleware
        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.clients += 1
            try:
                return await self._guard_inner(request, handler)
            finally:
                self.clients -= 1

        return guard

    @staticmethod
    def _refuse_post(request: web.Request) -> str | None:
        if request.content_type != "application/json":
            return f"expected a JSON request (Content-Type: application/json), got {request.content_type!r}"
        origin = request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1] != request.host:
            return f"cross-origin request from {origin} refused"
        return None

    async def _page(self, request: web.Request) -> web.StreamResponse:
        kind = PAGE_FILES[request.path][1]
        return web.Response(body=self._pages[request.path], content_type=kind,
                                  headers={"Cache-Control": "no-cache"})

    async def _get_config(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._config, headers={"Cache-Control": "no-store"})

    async def _get_state(self, request: web.Request) -> web.StreamResponse:
        state = self.state.snapshot()
        state["monitor"] = json_safe(self.monitor.summary())
        return web.json_response(state, headers={"Cache-Control": "no-store"})

    def _after(self, request: web.Request) -> int:
        raw = request.query.get("after", "-1")
        try:
            return int(raw)
        except ValueError:
            raise web.HTTPBadRequest(
                reason=f"after: expected an integer trigger index, got {raw!r}") from None

    async def _get_frame(self, request: web.Request) -> web.StreamResponse:
        camera = request.match_info["camera"]
        if camera not in self.state.feeds:
            return self._error(404, f"no camera named {camera!r} (cameras: {', '.join(self.state.cameras)})")
        after = self._after(request)
        waker, state = self.monitor.waker, self.state
        # With poses flowing, wait for a frame that has its keypoints (the pose engine may run
        # behind the cameras); else, or if none comes, the newest frame.
        posed = state.pose_live() and await waker.wait_for(
            "pose2d", lambda: state.has_posed_frame_after(camera, after), LONG_POLL_S)
        if not posed and not await waker.wait_for(
                camera, lambda: state.has_frame_after(camera, after), LONG_POLL_S):
            newest = str(state.feeds[camera].newest_index)
            return web.Response(status=204, headers={"Cache-Control": "no-store", "X-Newest-Index": newest})
        encoded = await self._encoded(camera, after)
        if encoded is None:
            return web.Response(status=204, headers={"Cache-Control": "no-store"})
        state.served[camera] += 1
        return web.Response(body=encoded.jpeg, content_type="image/jpeg",
                            headers={**encoded.headers, "Cache-Control": "no-store",
                                     "X-Newest-Index": str(state.feeds[camera].newest_index)})

    async def _encoded(self, camera: str, after: int) -> Encoded | None:
        """The JPEG for a request: the cached one if it is newer than ``after`` and young,
        else a new encode no sooner than 1 / MAX_FPS after the last."""
        lock = self._locks.setdefault(camera, asyncio.Lock())
        async with lock:
            cached = self._cache.get(camera)
            interval = 1.0 / MAX_FPS
            if cached is not None:
                age = time.monotonic() - cached.t_encoded
                if cached.trigger_index > after and age < interval:
                    return cached
                if age < interval:
                    await asyncio.sleep(interval - age)
            shown = self.state.pick_frame(camera, after)
            if shown is None:
                return cached if cached is not None and cached.trigger_index > after else None
            if cached is not None and (cached.trigger_index, cached.pose_index) == (
                    shown.header.trigger_index, shown.pose_index):
                return cached
            fmt = self.monitor.rig.camera(camera).pixel_format
            encoded = await asyncio.get_running_loop().run_in_executor(
                self._encoder, encode_frame, shown, fmt)
            self._cache[camera] = encoded
            return encoded

    async def _get_pose3d(self, request: web.Request) -> web.StreamResponse:
        after = self._after(request)
        if not await self.monitor.waker.wait_for(
                "pose3d", lambda: self.state.pose3d_after(after) is not None, LONG_POLL_S):
            return web.Response(status=204, headers={"Cache-Control": "no-store"})
        pose = self.state.pose3d_after(after)
        assert pose is not None
        body = {"trigger_index": pose.trigger_index, "t_pi_ns": pose.t_pi_ns, "keypoints": pose.keypoints,
                "xyz": pose.xyz, "score": pose.score, "edges": self.state.edges_for(pose.keypoints)}
        return web.json_response(json_safe(body), headers={"Cache-Control": "no-store"})

    # -- the buttons ------------------------------------------------------------------------

    def button_stats(self) -> dict[str, Any]:
        """Presses of each button sent, merged and refused (the monitor's stats, ``buttons``)."""
        return {b: {**self.presses[b], "refused": dict(self.refused[b])} for b in self.presses}

    async def _press(self, button: str, request: web.Request, kind: type[Body],
                     act: Callable[[Body], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """``act`` on the body decoded as ``kind``; a refusal is answered with its reason,
        counted and logged (once a second at most per button, so a flood of presses does not
        push the rules out of the page's event log)."""
        try:
            return await act(await self._body(request, kind))
        except Refused as refused:
            counts = self.refused[button]
            counts[refused.reason] += 1
            now = time.monotonic()
            if now - self._refusal_logged[button] >= 1.0:
                self._refusal_logged[button] = now
                text = f"{button} refused ({refused.reason}, {sum(counts.values())} so far): {refused.text}"
                logger.warning("monitor: %s", text)
                self.state.log("button", text)
            return web.json_response({"ok": False, "refused": refused.reason, "error": refused.text},
                                     status=refused.status, headers={"Cache-Control": "no-store"})

    async def _body(self, request: web.Request, kind: type[Body]) -> Body:
        """The POST body as a ``kind`` message (none: its defaults). Its fields are typed, so a
        non-object, a bool for a number, a value out of range, an unknown field or nesting are
        refused at the first byte that does not fit (nothing recurses into them)."""
        size = request.content_length
        try:
            if size is not None and size > MAX_BODY_BYTES:
                raise web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, size)
            raw = await request.read()  # client_max_size stops a body sent without a length
        except web.HTTPRequestEntityTooLarge:
            raise Refused(413, "too-large", f"body: expected at most {MAX_BODY_BYTES} bytes, got "
                                            f"{size if size is not None else 'more'}") from None
        try:
            return msgspec.json.decode(raw or b"{}", type=kind)
        except msgspec.DecodeError as exc:  # ValidationError included
            raise Refused(400, "invalid-body", f"body: {exc}") from None

    async def _post_clip(self, request: web.Request) -> web.StreamResponse:
        return await self._press("clip", request, ClipRequest, self._save_clip)

    async def _save_clip(self, body: ClipRequest) -> web.StreamResponse:
        now = time.monotonic()
        ago, post_s = now - self._clip_sent_at, self.monitor.rig.ring_buffer.post_s
        if ago < post_s:
            self.presses["clip"]["merged"] += 1
            return web.json_response({"ok": True, "merged": True, "message": (
                f"merged: this moment is in the clip asked {ago:.2f} s ago (its window holds "
                f"{post_s - ago:.2f} s more)")})
        if ago < CLIP_INTERVAL_S:
            raise Refused(429, "too-soon", f"a clip was asked {ago:.2f} s ago and its window has "
                                           f"closed; ask again in {CLIP_INTERVAL_S - ago:.2f} s")
        event = self.monitor.clip_event()
        assert self._push is not None
        try:
            self._push.send(protocol.encode(event), zmq.NOBLOCK)
        except zmq.Again:
            raise Refused(503, "ring-buffer-busy",
                          "the ring buffer is not taking events (is it running?)") from None
        self._clip_sent_at = now
        self.presses["clip"]["sent"] += 1
        ring = self.monitor.rig.ring_buffer
        self.state.log("button", f"save clip now: asked the ring buffer for [-{ring.pre_s:g} s, "
                                 f"+{ring.post_s:g} s] around its latest frame")
        return web.json_response({"ok": True, "event": msgspec.to_builtins(event)})

    async def _post_ttl(self, request: web.Request) -> web.StreamResponse:
        return await self._press("ttl", request, TtlRequest, self._fire_ttl)

    async def _fire_ttl(self, body: TtlRequest) -> web.StreamResponse:
        now, sent = time.monotonic(), self._ttls_sent
        if len(sent) == TTLS_PER_S and now - sent[0] < 1.0:
            raise Refused(429, "rate-limit", f"the page fires at most {TTLS_PER_S} test TTLs a "
                                             f"second; ask again in {1.0 - (now - sent[0]):.2f} s")
        sent.append(now)
        self.presses["ttl"]["sent"] += 1
        width_ms = body.width_ms
        loop = asyncio.get_running_loop()
        try:
            reply = await loop.run_in_executor(None, self.monitor.fire_ttl, width_ms)
        except TimeoutError as exc:
            self.state.log("button", f"test TTL: no reply ({exc})")
            return self._error(504, f"the trigger daemon did not answer: {exc}")
        except protocol.ProtocolError as exc:
            self.state.log("button", f"test TTL: bad reply ({exc})")
            return self._error(502, f"the trigger daemon's reply was malformed: {exc}")
        if not reply.ok:
            self.state.log("button", f"test TTL refused: {reply.error}")
            return web.json_response({"ok": False, "error": reply.error, "data": reply.data},
                                           status=502)
        data = reply.data
        if data.get("merged"):
            self.state.log("button", f"test TTL ({width_ms:g} ms) joined TTL #{data.get('index', '?')}, "
                                     "which was still high")
        else:
            self.state.log("button", f"test TTL #{data.get('index', '?')} ({width_ms:g} ms pulse): rising "
                                     f"edge {_ms_between(data.get('t_command_ns'), data.get('t_edge_ns'))} "
                                     "after the command reached the trigger daemon")
        return web.json_response({"ok": True, "data": json_safe(data)})


def _ms_between(a: Any, b: Any) -> str:
    if isinstance(a, int) and isinstance(b, int) and a >= 0 and b >= 0:
        return f"{(b - a) / 1e6:.2f} ms"
    return "?"


def run_monitor(rig: RigConfig, run: str, status_address: str | None = None, host: str = "127.0.0.1",
                port: int = 8800, token: str | None = None,
                announce: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the monitor until stopped (SIGINT/SIGTERM or the supervisor's stop); ``announce``
    gets the URL once the page is served."""
    stop = SignalStop().on_signals()
    ctx = zmq.Context()
    try:
        with Monitor(rig, run, ctx, status_address, host, port, token) as monitor:
            url = monitor.start()
            if announce is not None:
                announce(url)
            return monitor.run_forever(stop)
    finally:
        ctx.destroy(linger=0)
