"""The state store: everything the monitor page shows, gathered by the receive loop.

The receive loop (:mod:`.receiver`) writes into a :class:`MonitorState`: each camera's frames (a
:class:`CameraFeed` of buffers the feed owns, reused in ring order, so nothing is allocated per
frame), the newest poses, the rule firings, the supervisor's health and the page's event log.
The web server reads from it: the frame a tile shows next (:meth:`MonitorState.pick_frame`,
matched with the keypoints of its own Pose2D where one came) and ``/api/state``'s snapshot. One
lock guards what the two threads share; this module knows neither of them.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from rigstream.app.monitor.page import json_safe, latency_histogram, model_card_info, rig_rules, skeleton_for
from rigstream.config import RigConfig
from rigstream.health import SessionHealth, decode_session_health
from rigstream.latency import latency_stats
from rigstream.protocol import Event, FrameHeader, Pose2D, Pose3D, Status

RING_FRAMES = 16
"""Newest frames taken kept per camera."""
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
LATENCY_SAMPLES = 500
"""Latencies kept for the histogram (per series)."""
EVENTS_KEPT = 200
EVENTS_SHOWN = 50


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
        """When the newest frame was last taken (monotonic s; the receiver's TAKE_FPS)."""
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
        self.health: SessionHealth | None = None
        self.components: dict[str, Any] = {}
        """Each component's last stats from the health message, as its struct (rigstream.health)."""
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
        """Take the supervisor's health message; ProtocolError (counted by the receiver) for one
        that does not fit its schema, after keeping every component's stats that did."""
        health = decode_session_health(status.stats)
        comps, errors = health.decoded()
        now = time.monotonic()
        frames = {c: comps[f"camera:{c}"].frames if f"camera:{c}" in comps else -1 for c in self.cameras}
        with self.lock:
            self.health = health
            self.components = comps
            self.t_health = now
            if health.t_s is not None:
                if self._frame_history and health.t_s < self._frame_history[-1][0]:
                    self._frame_history.clear()  # a new session
                self._frame_history.append((health.t_s, frames))
        self._log_health_changes(health, comps)
        if errors:
            raise errors[0]

    def _log_health_changes(self, health: SessionHealth, comps: dict[str, Any]) -> None:
        ring = comps.get("ringbuffer")
        if ring is not None:
            saved = ring.clips_saved  # it lists only its newest clips
            if saved < self._clips_logged:  # a new session
                self._clips_logged = 0
            new = min(max(saved - self._clips_logged, 0), len(ring.clips))
            for path in ring.clips[len(ring.clips) - new:]:
                self.log("clip", f"clip saved: {_short_path(path)}")
            self._clips_logged = max(saved, self._clips_logged)
        for name, why in health.failed.items():
            if self._failed_seen.get(name) != why:
                self._failed_seen[name] = why
                self.log("failed", f"{name} failed: {why}")
        for name, n in health.restarts.items():
            if n != self._restarts_seen.get(name, 0):
                self._restarts_seen[name] = n
                self.log("failed", f"{name} restarted ({n} time{'s' if n != 1 else ''})")
        pose = comps.get("pose")
        recent = pose.closed_loop.recent if pose is not None and pose.closed_loop is not None else []
        with self.lock:
            for item in (_dict(i) for i in recent):
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
            health, comps = self.health, self.components
            t_health = self.t_health
            history = list(self._frame_history)
            lat3d, latttl = list(self.latency_3d_ms), list(self.latency_ttl_ms)
            events = list(self.events)[-EVENTS_SHOWN:][::-1]
            pose3d = self.pose3d
            # the feeds change under the receive loop: read them under the lock
            cameras = {c: self._camera_view(c, health, comps, history, now) for c in self.cameras}
        pose = comps.get("pose")
        loop = pose.closed_loop if pose is not None else None
        state = {
            "t_s": round(now - self.t0, 3),
            "session": self._session_view(health, t_health, now),
            "cameras": cameras,
            "pose": {
                "posed": pose.framesets_posed if pose is not None else None,
                "skipped": pose.framesets_skipped if pose is not None else None,
                "pulse_to_pose2d_ms": msgspec.to_builtins(pose.latency_ms) if pose is not None else None,
                "pulse_to_pose3d_ms": latency_stats(lat3d, count=True),
                # the engine's own figure once it has one, else the firings the monitor saw
                "pulse_to_ttl_ms": (msgspec.to_builtins(loop.pulse_to_ttl_ms)
                                    if loop is not None and loop.pulse_to_ttl_ms.n
                                    else latency_stats(latttl, count=True)),
                "pulse_to_action_ms": (msgspec.to_builtins(loop.pulse_to_action_ms) if loop is not None
                                       else None),
                "last_pose3d_index": pose3d.trigger_index if pose3d is not None else None,
            },
            "histogram": latency_histogram({"pulse_to_pose3d": lat3d, "pulse_to_ttl": latttl}),
            "rules": self._rules_view(pose.rules if pose is not None else {}),
            "events": events,
            "edges": self.edges_for(pose3d.keypoints) if pose3d is not None else [],
        }
        return json_safe(state)

    def _session_view(self, health: SessionHealth | None, t_health: float | None,
                      now: float) -> dict[str, Any]:
        h = health or SessionHealth()
        return {
            "seen": t_health is not None,
            "age_s": round(now - t_health, 2) if t_health is not None else None,
            "t_s": h.t_s, "pulses": h.pulses, "rate_hz": h.rate_hz,
            "components": {k: v.state for k, v in h.components.items()},
            "failed": dict(h.failed), "restarts": dict(h.restarts),
        }

    def _camera_view(self, camera: str, health: SessionHealth | None, comps: dict[str, Any],
                     history: list[tuple[float, dict[str, int]]], now: float) -> dict[str, Any]:
        name = f"camera:{camera}"
        state = health.components[name].state if health is not None and name in health.components else None
        cam = comps.get(name)
        ring = comps.get("ringbuffer")
        feed = self.feeds[camera]
        return {
            "state": state, "fps": _fps(history, camera),
            "frames": cam.frames if cam is not None else None,
            "dropped": cam.dropped if cam is not None else None,
            "last_index": cam.last_index if cam is not None else None,
            "ring_fill": ring.ring_fill.get(camera) if ring is not None else None,
            "monitor_fps": feed.rx_fps(now), "monitor_frames": feed.received,
            "monitor_newest": feed.newest_index, "ended": feed.ended,
        }

    def _rules_view(self, stats: dict[str, Any]) -> list[dict[str, Any]]:
        """Each of the rig's rules with the engine's state of it (RuleHealth), or what the
        monitor counted from the rule events before the engine reported."""
        out = []
        for rule in rig_rules(self.rig):
            name = rule["name"]
            st = stats.get(name)
            out.append({
                "name": name, "kind": rule["kind"], "actions": rule["actions"],
                "fired": st.fired if st is not None else self.rule_firings.get(name, 0),
                "last_trigger_index": st.last_trigger_index if st is not None else self.rule_last.get(name),
                "armed": st.armed if st is not None else None,
                "active": st.active if st is not None else None,
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


def _fps(history: list[tuple[float, dict[str, int]]], camera: str) -> float | None:
    """Frames per second from the frame counts of the oldest and newest health messages."""
    if len(history) < 2:
        return None
    (t0, f0), (t1, f1) = history[0], history[-1]
    a, b = f0.get(camera, -1), f1.get(camera, -1)
    if t1 - t0 < 0.2 or a < 0 or b < a:
        return None
    return round((b - a) / (t1 - t0), 1)

