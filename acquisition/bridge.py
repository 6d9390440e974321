"""The bridge: a camera of another host, written into this host's frame store.

A camera node whose frame address is reachable from other hosts (tcp) sends each header with
its pixels. On a consumer host, one bridge per camera receives them
(:class:`~rigstream.frames.FrameReceiver`: decoded without a copy, malformed messages counted,
sequence gaps counted), writes each frame or notice into a local store of the same name and
layout the camera node would have made here (:func:`~rigstream.framestore.store_name`), and
republishes each header, naming its slot, on ``transport.local_headers``, the wake-up address
the store names. Consumers on this host read the store as they would a local camera's
(:class:`~rigstream.frames.CameraStores` subscribes where each store says).

Nothing is lost silently: a trigger index the stream skips (its message lost on the network,
or malformed) gets a notice record (``FLAG_DROPPED``) and is counted as ``lost_on_network``
with its index; a header whose index is below the store's head (a restarted node, a duplicate)
is counted as ``out_of_order`` and not stored. The camera's end of stream ends the store.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
import zmq

from rigstream import protocol
from rigstream.component import Component
from rigstream.config import ConfigError, RigConfig
from rigstream.frames import FrameReceiver, Received
from rigstream.framestore import FrameStore, StoreLayout, store_name
from rigstream.protocol import FLAG_DROPPED, FLAG_EOS, FrameHeader
from rigstream.transport import ControlListener, Publisher, SignalStop, StatusReporter, is_local_address

logger = logging.getLogger(__name__)


class Bridge(Component):
    """Fills this host's store of ``camera`` from its node on another host.

    ``source`` (a tcp address) overrides where the node publishes (default: the rig's frame
    address of the camera). The store is created here and unlinked by :meth:`close`.
    """

    def __init__(self, rig: RigConfig, camera: str, run: str, ctx: zmq.Context | None = None,
                 status_address: str | None = None, source: str | None = None) -> None:
        self.rig = rig
        self.camera = camera
        cfg = rig.camera(camera)
        ctx = ctx or zmq.Context.instance()
        self.source = source or rig.frames_address(camera, run)
        if not self.source.startswith("tcp://"):
            what = "--source" if source else f"camera {camera}'s frame address"
            raise ConfigError(f"bridge {camera}: {what}: expected a tcp:// address of the camera "
                              f"node's host, got {self.source!r}")
        if is_local_address(self.source):
            logger.warning("bridge %s: %s is a loopback address: a camera node publishing there "
                           "sends no pixels (only nodes on a network address do)", camera, self.source)
        if source:
            rig = msgspec.structs.replace(rig, cameras=[
                msgspec.structs.replace(c, address=source) if c.name == camera else c
                for c in rig.cameras])
        self.where = self.name = f"bridge {camera}"
        self.frames = FrameReceiver(rig, run, ctx, self.where, cameras=[camera])
        self.pub = Publisher(ctx, self.rig.address("local_headers", run, camera=camera),
                             hwm=self.rig.transport.frame_hwm)
        self.status = StatusReporter(ctx, status_address, f"bridge:{camera}")
        self.control = ControlListener(ctx, status_address and self.rig.address("control", run),
                                       self.where)
        self._shape = (cfg.width, cfg.height, cfg.channels)
        self._encoder = msgspec.msgpack.Encoder()
        self._out = bytearray(512)
        """A republished header, encoded in place (no allocation per frame)."""
        self._notice = FrameHeader(camera=camera, seq=0, frame_id=-1, trigger_index=0,
                                   t_camera_ns=-1, t_host_ns=-1, width=cfg.width,
                                   height=cfg.height, channels=cfg.channels, flags=FLAG_DROPPED)
        """The header republished for an index lost on the network (reused)."""
        self.seq = 0
        """Sequence number of the next republished header (consecutive, lost indices included)."""
        self.frames_written = 0
        self.notices_written = 0
        self.lost_on_network: list[int] = []
        """Trigger indices no message came for: stored as FLAG_DROPPED notices."""
        self.out_of_order: list[int] = []
        """Trigger indices that came at or below the store's head: not stored."""
        self.eos = False
        """The camera's end of stream arrived."""
        self._closed = False
        self._final_head = -1
        # The store last: nothing after it can fail and leave it behind.
        self.store = FrameStore.create(store_name(run, camera), StoreLayout(
            rig.store_frames(), cfg.height, cfg.width, cfg.channels), wake_address=self.pub.address)

    # -- the loop (rigstream.component): until the camera's end of stream, or after a stop
    # until nothing came for a while; the store is ended and closed at the end ----------------

    def finished(self) -> bool:
        return self.eos

    def turn(self) -> bool:
        got = self.frames.recv(timeout_ms=20)
        if got is not None:
            self.put(got)
        self.pub.poll_subscriptions()
        return got is not None

    def finish(self) -> dict[str, Any]:
        if not self.eos:
            self._end_without_eos()
        return self.summary()

    def _end_without_eos(self) -> None:
        """A stop, and the camera's end of stream never came: end the store where it is."""
        logger.warning("%s: stopped without the camera's end of stream (from %s); the store ends "
                       "after trigger index %d", self.where, self.source, self.store.head - 1)
        self.store.finish(self.store.head)
        self._notice.seq, self._notice.trigger_index = self.seq, max(self.store.head - 1, -1)
        self._notice.flags, self._notice.slot = FLAG_EOS, -1
        self._send(self._notice)

    def close(self) -> None:
        """Close the sockets and the store (unlinking it); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._final_head = self.store.head
        for part in (self.frames, self.pub, self.control, self.status):
            part.close()
        self.store.close()

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- per message ---------------------------------------------------------------------------

    def put(self, got: Received) -> None:
        """Write one received frame, notice or end of stream into the store and republish its
        header (with its slot)."""
        h = got.header
        n = h.trigger_index
        head = self.store.head
        if h.flags & FLAG_EOS:  # indices [0, n] accounted for: the ones not here were lost
            self._lost(head, n + 1)
            self.store.finish(n + 1)
            self.eos = True
            h.seq, h.slot = self.seq, -1
            self._send(h)
            logger.info("%s: end of stream after trigger index %d (%d frames, %d notices, %d lost "
                        "on the network)", self.where, n, self.frames_written, self.notices_written,
                        len(self.lost_on_network))
            return
        if n < head:
            self.out_of_order.append(n)
            if len(self.out_of_order) <= 5:
                logger.error("%s: trigger index %d after %d (camera node restarted?): not stored",
                             self.where, n, head - 1)
            return
        if got.pixels is None and not h.flags & FLAG_DROPPED:
            self.frames.malformed(protocol.ProtocolError(
                "no-pixels", f"camera {h.camera} frame {h.frame_id} (trigger {n}) came without "
                f"its pixels (does its node's host see its address {self.source} as local?)"))
            return
        if got.pixels is not None and (h.width, h.height, h.channels) != self._shape:
            self.frames.malformed(protocol.ProtocolError(
                "wrong-shape", f"camera {h.camera} frame {h.frame_id} (trigger {n}) is "
                f"{h.width}x{h.height}x{h.channels}, the rig says {self._shape[0]}x"
                f"{self._shape[1]}x{self._shape[2]}"))
            return
        self._lost(head, n)
        h.slot = self.store.write(n, got.pixels, frame_id=h.frame_id, t_camera_ns=h.t_camera_ns,
                                  t_pi_ns=h.t_pi_ns, t_host_ns=h.t_host_ns, flags=h.flags,
                                  truth_index=h.truth_index, exposure_ns=round(h.exposure_us * 1e3))
        if got.pixels is None:
            self.notices_written += 1
        else:
            self.frames_written += 1
        h.seq = self.seq
        self._send(h)

    def _lost(self, start: int, stop: int) -> None:
        """Notices for trigger indices [start, stop), whose messages never came."""
        if stop <= start:
            return
        logger.warning("%s: trigger indices %d..%d of camera %s lost on the network: stored as "
                       "dropped", self.where, start, stop - 1, self.camera)
        h = self._notice
        h.flags = FLAG_DROPPED
        for n in range(start, stop):
            h.t_host_ns = time.monotonic_ns()
            h.slot = self.store.write(n, None, frame_id=-1, t_camera_ns=-1, t_pi_ns=-1,
                                      t_host_ns=h.t_host_ns, flags=FLAG_DROPPED)
            h.seq, h.trigger_index = self.seq, n
            self._send(h)
            self.lost_on_network.append(n)

    def _send(self, h: FrameHeader) -> None:
        """Republish a header alone (it names its slot) and count it."""
        self._encoder.encode_into(h, self._out)
        self.pub.sock.send(self._out, copy=True)
        self.seq += 1

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "frames": self.frames_written,
            "notices": self.notices_written,
            "lost_on_network": len(self.lost_on_network),
            "lost_indices": self.lost_on_network[-1000:],
            "out_of_order": len(self.out_of_order),
            "out_of_order_indices": self.out_of_order[-1000:],
            "head": self._final_head if self._closed else self.store.head,
            "ended": self.eos,
            "subscribers": self.pub.subscribers,
            "store": {"name": self.store.name, "slots": self.store.capacity,
                      "mib": round(self.store.layout.total_bytes / 2**20, 1)},
            **self.frames.stats(),
        }


def run_bridge(rig: RigConfig, camera: str, run: str, status_address: str | None = None,
               source: str | None = None) -> dict[str, Any]:
    """Run one camera's bridge until its end of stream or a stop (SIGINT/SIGTERM, or the
    supervisor's stop)."""
    stop = SignalStop().on_signals()
    ctx = zmq.Context()
    try:
        return Bridge(rig, camera, run, ctx, status_address=status_address,
                      source=source).run_forever(stop)
    finally:
        ctx.destroy(linger=2000)
