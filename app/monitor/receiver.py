"""The receive loop: what a running rig publishes, taken into the monitor's state.

Each turn drains every socket the monitor reads: the cameras' frame headers, the pose engine's
Pose2D/Pose3D, the rule firings and the supervisor's health. It is a latest-wins consumer: it
copies each camera's newest frame, if it has not got it yet and at most TAKE_FPS a second, out
of the camera's shared-memory frame store (:mod:`rigstream.framestore`) into a buffer of the
camera's feed (:mod:`.state`), and the frames each Pose2D was computed on, so keypoints are drawn
on their own frame; the rest it lets go. A monitor never holds back a camera node however slow
its browsers are: readers of a store never make its writer wait. News is announced through
``notify`` (a callable given in; the receiver knows nothing of the web server).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import zmq

from rigstream import protocol
from rigstream.app.monitor.state import MonitorState
from rigstream.config import RigConfig
from rigstream.frames import CameraStores
from rigstream.framestore import FrameStore
from rigstream.protocol import Event, Pose2D, Pose3D, Status
from rigstream.transport import received, subscriber

TAKE_FPS = 30.0
"""Newest frames copied out of a camera's store per second, at most: twice what the page
shows (MAX_FPS), a small share of a 226 Hz camera. The frame of each Pose2D is copied as well
(:attr:`CameraFeed.posed`), so keypoints are drawn on their own frame."""


class Receiver:
    """The monitor's sockets and one turn of its receive loop (run by the monitor's component,
    on the calling thread). ``notify(key)`` is called with a camera's name when a frame of it
    was taken, and with ``pose2d`` or ``pose3d`` when a pose came."""

    def __init__(self, rig: RigConfig, run: str, ctx: zmq.Context, state: MonitorState,
                 notify: Callable[[str], None]) -> None:
        self.state = state
        self.notify = notify
        self.frames = CameraStores(rig, run, ctx, "monitor frames")
        self.poses = subscriber(ctx, rig.address("poses", run), hwm=1000)
        self.rule_events = subscriber(ctx, rig.address("rule_events", run), hwm=1000)
        self.health = subscriber(ctx, rig.address("health", run), hwm=100)
        self.malformed = {name: protocol.MalformedCounter(f"monitor {name}")
                          for name in ("poses", "rule_events", "health")}
        self._poller: zmq.Poller | None = None

    def turn(self) -> bool:
        """Wait up to 50 ms for anything, then take what came (always progress: a viewer)."""
        if self._poller is None:
            self._poller = zmq.Poller()
            for sock in (self.frames.sock, self.poses, self.rule_events, self.health):
                self._poller.register(sock, zmq.POLLIN)
        self._poller.poll(50)
        self.drain()
        return True

    def drain(self) -> None:
        """Take what has arrived on every socket and each camera's newest frame (never
        blocks; one frame per camera, so a flood of frames cannot starve the other sockets)."""
        self.frames.wait(0)  # the camera headers only wake the loop; opens stores made since
        for camera, store in self.frames.stores.items():
            if self._take_newest(camera, store):
                self.notify(camera)
        for msg in received(self.poses, (Pose2D, Pose3D), self.malformed["poses"]):
            if isinstance(msg, Pose2D):
                self._take_posed(msg)
            self.state.add_pose(msg)
            self.notify("pose2d" if isinstance(msg, Pose2D) else "pose3d")
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
        except protocol.ProtocolError as err:  # already says what did not fit (health schemas)
            self.malformed[name](err)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            self.malformed[name](protocol.ProtocolError("invalid-contents", f"{type(exc).__name__}: {exc}"))

    def summary(self) -> dict[str, Any]:
        """Frames taken, skipped, lost and served per camera, and the malformed messages of the
        receiver's own sockets (the component adds its control channel's)."""
        feeds = self.state.feeds
        return {
            "frames_received": {c: f.received for c, f in feeds.items()},
            "frames_skipped": {c: f.skipped for c, f in feeds.items()},
            "frames_lost": {c: f.lost for c, f in feeds.items()},
            "frames_served": dict(self.state.served),
            "malformed": {"frames": self.frames.malformed.as_dict(),
                          **{k: v.as_dict() for k, v in self.malformed.items()}},
        }

    def close(self) -> None:
        self.frames.close()
        for sock in (self.poses, self.rule_events, self.health):
            sock.close(linger=0)
