"""Receiving camera frames: the part every consumer shares.

On one host, :class:`CameraStores` opens every camera's shared-memory frame store
(:mod:`rigstream.framestore`) as soon as its camera node has made it, and subscribes to the
node's small header messages only to be woken when frames arrive (a lost header loses nothing:
the store is read by index). Lossless readers take a :class:`~rigstream.framestore.StoreCursor`
per camera; latest-wins readers read the newest index in place.

Between hosts, a :class:`FrameReceiver` subscribes to camera nodes that send [header, pixels],
decodes them without copying, rejects malformed messages (logged and counted, never fatal),
detects gaps in each camera's sequence numbers (frames lost between node and consumer) and
knows when every camera has ended its stream (the bridge uses it to fill a local store).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from rigstream import protocol
from rigstream.config import RigConfig
from rigstream.framestore import FrameStore, StoreError, StoreMissing, store_name
from rigstream.protocol import FLAG_DROPPED, FLAG_EOS, FLAG_INCOMPLETE, FLAG_TIMING, FrameHeader
from rigstream.transport import subscriber

logger = logging.getLogger(__name__)

FRAME_COLUMNS = ("camera", "frame_id", "trigger_index", "t_camera_ns", "t_pi_ns", "t_host_ns",
                 "video_frame", "dropped", "incomplete", "timing_flag", "lost_in_transport",
                 "overrun")
"""frames.csv (and a clip's frames.csv): ``dropped`` is 1 for every row without a frame, whatever
the reason: the camera's own drop notice (``incomplete`` if it delivered a partial image), no
record at all (``lost_in_transport``), or overwritten in the store before the recorder read it
(``overrun``). ``video_frame`` is -1 for those and for every row with ``recording.video: off``."""


def frame_row(h: FrameHeader, video_frame: int, lost: bool = False,
              overrun: bool = False) -> tuple[Any, ...]:
    """A frames.csv row (:data:`FRAME_COLUMNS`) for a header."""
    return (h.camera, h.frame_id, h.trigger_index, h.t_camera_ns, h.t_pi_ns, h.t_host_ns,
            video_frame, int(bool(h.flags & FLAG_DROPPED) or lost or overrun),
            int(bool(h.flags & FLAG_INCOMPLETE)), int(bool(h.flags & FLAG_TIMING)), int(lost),
            int(overrun))


def no_frame_row(camera: str, index: int, lost: bool) -> tuple[Any, ...]:
    """The row of an index without a record: lost (never came) or overrun (overwritten)."""
    return (camera, -1, index, -1, -1, -1, -1, 1, 0, 0, int(lost), int(not lost))



@dataclass
class Received:
    header: FrameHeader
    pixels: np.ndarray | None
    """(height, width[, 3]) view into ``parts[1]``; None for drop and end-of-stream notices."""
    parts: list[Any]
    """The raw zmq frames (keep them to forward the pixels without a copy)."""


class FrameReceiver:
    def __init__(self, rig: RigConfig, run: str, ctx: zmq.Context, where: str,
                 cameras: list[str] | None = None) -> None:
        self.cameras = cameras or [c.name for c in rig.cameras]
        self.where = where
        addresses = [rig.frames_address(c, run) for c in self.cameras]
        self.sock = subscriber(ctx, addresses, hwm=rig.transport.frame_hwm)
        self.malformed = protocol.MalformedCounter(where)
        self.next_seq: dict[str, int] = {}
        self.seq_gaps: Counter[str] = Counter()
        """Messages lost between the camera nodes and this consumer, per camera."""
        self.seq_restarts: Counter[str] = Counter()
        self.ended: set[str] = set()
        self.unknown_cameras: Counter[str] = Counter()

    @property
    def all_ended(self) -> bool:
        return self.ended.issuperset(self.cameras)

    def recv(self, timeout_ms: int) -> Received | None:
        """The next valid message, or None when nothing valid came within the timeout."""
        while self.sock.poll(timeout_ms, zmq.POLLIN):
            timeout_ms = 0
            parts = self.sock.recv_multipart(copy=False)
            try:
                header, pixels = protocol.decode_frame_parts(parts)
            except protocol.ProtocolError as err:
                self.malformed(err)
                continue
            if header.camera not in self.cameras:
                self.unknown_cameras[header.camera] += 1
                self.malformed(protocol.ProtocolError(
                    "unknown-camera", f"camera {header.camera!r} is not in this rig"))
                continue
            expected = self.next_seq.get(header.camera)
            if expected is not None and header.seq != expected:
                if header.seq > expected:
                    self.seq_gaps[header.camera] += header.seq - expected
                    logger.warning("%s: %d message(s) from camera %s lost in transport "
                                   "(seq %d -> %d)", self.where, header.seq - expected,
                                   header.camera, expected - 1, header.seq)
                else:
                    self.seq_restarts[header.camera] += 1
                    logger.warning("%s: camera %s sequence restarted (seq %d after %d): "
                                   "node restarted?", self.where, header.camera, header.seq,
                                   expected - 1)
            self.next_seq[header.camera] = header.seq + 1
            if header.flags & FLAG_EOS:
                self.ended.add(header.camera)
            return Received(header, pixels, parts)
        return None

    def stats(self) -> dict[str, Any]:
        return {"malformed": self.malformed.as_dict(), "seq_gaps": dict(self.seq_gaps),
                "seq_restarts": dict(self.seq_restarts)}

    def close(self) -> None:
        self.sock.close()


class CameraStores:
    """The rig's camera stores, read-only, each opened as soon as its writer has made it.

    The header subscription of a camera is connected only once its store is open, so a camera
    node that waits for its consumers' subscriptions knows they can read its store.
    ``wait(timeout_ms)`` blocks until a header arrives (or the timeout), drains the headers and
    opens stores not open yet; the caller then reads the stores.
    """

    def __init__(self, rig: RigConfig, run: str, ctx: zmq.Context, where: str,
                 cameras: list[str] | None = None) -> None:
        self.rig = rig
        self.run = run
        self.where = where
        self.cameras = cameras or [c.name for c in rig.cameras]
        self.stores: dict[str, FrameStore] = {}
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 10_000)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.malformed = protocol.MalformedCounter(f"{where} headers")
        self.headers = 0
        self.open_pending()

    @property
    def all_open(self) -> bool:
        return len(self.stores) == len(self.cameras)

    def open_pending(self) -> list[str]:
        """Open the stores whose writers have made them since; returns the cameras opened."""
        opened = []
        for cam in self.cameras:
            if cam in self.stores:
                continue
            try:
                store = FrameStore.attach(store_name(self.run, cam))
            except StoreMissing:
                continue
            except StoreError as exc:
                logger.error("%s: %s", self.where, exc)
                continue
            cfg = self.rig.camera(cam)
            if (store.layout.width, store.layout.height, store.layout.channels) != (
                    cfg.width, cfg.height, cfg.channels):
                logger.error("%s: store of camera %s holds %dx%dx%d frames, the rig says %dx%dx%d",
                             self.where, cam, store.layout.width, store.layout.height,
                             store.layout.channels, cfg.width, cfg.height, cfg.channels)
                store.close()
                continue
            self.stores[cam] = store
            # The store names where its writer (the camera node, or a bridge from another host)
            # publishes its headers on this host.
            self.sock.connect(store.wake_address or self.rig.frames_address(cam, self.run))
            opened.append(cam)
        return opened

    def wait(self, timeout_ms: int) -> int:
        """Block up to ``timeout_ms`` for a header; drain all that came. Returns how many."""
        if not self.all_open:
            self.open_pending()
            if not self.all_open:
                timeout_ms = min(timeout_ms, 20)
        got = 0
        while self.sock.poll(timeout_ms, zmq.POLLIN):
            timeout_ms = 0
            parts = self.sock.recv_multipart(copy=False)
            try:
                protocol.decode_frame_parts(parts)
            except protocol.ProtocolError as err:
                self.malformed(err)
                continue
            got += 1
        self.headers += got
        return got

    def stats(self) -> dict[str, Any]:
        return {"malformed": self.malformed.as_dict(), "stores_open": sorted(self.stores)}

    def close(self) -> None:
        self.sock.close()
        for store in self.stores.values():
            store.close()
        self.stores.clear()
