"""Shared fixtures: small rigs and fake camera nodes that publish on real ZeroMQ sockets."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import zmq

from rigstream import protocol
from rigstream.config import RigConfig, load_rig
from rigstream.framestore import FrameStore, StoreLayout, store_name
from rigstream.protocol import FLAG_DROPPED, FLAG_EOS, FrameHeader
from rigstream.transport import Publisher

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def small_rig(cameras: int = 2, width: int = 64, height: int = 48, **top: Any) -> RigConfig:
    """The embedded sim rig shrunk for tests (tiny frames, short ring buffer)."""
    doc = msgspec.to_builtins(load_rig())
    template = doc["cameras"][0]
    doc["cameras"] = [dict(template, name=f"cam{i}", role="primary" if i == 0 else "secondary",
                           width=width, height=height) for i in range(cameras)]
    doc["ring_buffer"] = {"pre_s": 0.05, "post_s": 0.03, "margin_s": 0.2}
    doc["calibration"] = None  # the shipped one is for 640x480; sim cameras fall back to a ring
    doc["rules"] = []  # the shipped rule is 3D, on the shipped model's keypoints
    doc.update(top)
    return msgspec.convert(doc, type=RigConfig, strict=True)


@pytest.fixture
def run_dir(tmp_path: Path) -> str:
    d = tmp_path / "run"
    d.mkdir()
    return str(d)


class FakeCameras:
    """Stands in for the camera nodes: makes each camera's frame store (real shared memory),
    binds its frame address, and writes frames and notices into the store, publishing their
    headers as a camera node does."""

    def __init__(self, rig: RigConfig, run: str, ctx: zmq.Context) -> None:
        self.rig = rig
        self.pubs = {c.name: Publisher(ctx, rig.frames_address(c.name, run), hwm=0)
                     for c in rig.cameras}
        self.stores = {c.name: FrameStore.create(store_name(run, c.name), StoreLayout(
            rig.store_frames(), c.height, c.width, c.channels)) for c in rig.cameras}
        self.seq = dict.fromkeys(self.pubs, 0)

    def wait(self, subscribers: int = 1) -> None:
        for pub in self.pubs.values():
            assert pub.wait_for_subscribers(subscribers, 10), "consumer never subscribed"

    def header(self, camera: str, n: int, flags: int = 0, **kw: Any) -> FrameHeader:
        cfg = self.rig.camera(camera)
        h = FrameHeader(camera=camera, seq=self.seq[camera], frame_id=n, trigger_index=n,
                        t_camera_ns=n * 10_000_000, t_host_ns=n * 10_000_000 + 5,
                        t_pi_ns=n * 10_000_000 + 1, width=cfg.width, height=cfg.height,
                        flags=flags, truth_index=n, **kw)
        self.seq[camera] += 1
        return h

    @staticmethod
    def pixels(camera_index: int, n: int, shape: tuple[int, int]) -> np.ndarray:
        rng = np.random.default_rng((camera_index, n))
        return rng.integers(0, 256, shape, dtype=np.uint8)

    def _store(self, h: FrameHeader, pixels: np.ndarray | None) -> None:
        h.slot = self.stores[h.camera].write(
            h.trigger_index, pixels, frame_id=h.frame_id, t_camera_ns=h.t_camera_ns,
            t_pi_ns=h.t_pi_ns, t_host_ns=h.t_host_ns, flags=h.flags, truth_index=h.truth_index)

    def frame(self, camera: str, n: int, flags: int = 0) -> np.ndarray:
        cfg = self.rig.camera(camera)
        idx = [c.name for c in self.rig.cameras].index(camera)
        px = self.pixels(idx, n, (cfg.height, cfg.width))
        h = self.header(camera, n, flags)
        self._store(h, px)
        protocol.send_frame(self.pubs[camera].sock, h, None)
        return px

    def drop(self, camera: str, n: int) -> None:
        h = self.header(camera, n, FLAG_DROPPED)
        self._store(h, None)
        protocol.send_frame(self.pubs[camera].sock, h, None)

    def eos(self, camera: str, n: int) -> None:
        """End of stream after trigger index ``n`` (indices [0, n] accounted for)."""
        self.stores[camera].finish(n + 1)
        protocol.send_frame(self.pubs[camera].sock, self.header(camera, n, FLAG_EOS), None)

    def raw(self, camera: str, parts: list[bytes]) -> None:
        self.pubs[camera].sock.send_multipart(parts)

    def close(self) -> None:
        for pub in self.pubs.values():
            pub.close()
        for store in self.stores.values():
            store.close()


@pytest.fixture
def zctx() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def fake(zctx: zmq.Context, run_dir: str) -> Iterator[Callable[[RigConfig], FakeCameras]]:
    """``make(rig)``: FakeCameras for the rig in this test's run folder, closed (stores
    unlinked) after the test."""
    made: list[FakeCameras] = []

    def make(rig: RigConfig) -> FakeCameras:
        made.append(FakeCameras(rig, run_dir, zctx))
        return made[-1]

    yield make
    for f in made:
        f.close()


def malformed_messages(fake: FakeCameras, camera: str) -> list[list[bytes]]:
    """One of each kind of bad message a consumer must survive."""
    good = fake.header(camera, 10_000)
    fake.seq[camera] -= 1  # the bad ones do not count as published
    head = protocol.encode(good)
    future = msgspec.msgpack.encode({**msgspec.to_builtins(good), "v": 99})
    return [
        [b"\xc1garbage"],                                      # not MessagePack
        [head],                                                # header without its pixels
        [head, b"\x00" * 10],                                  # truncated pixels
        [future, b"\x00" * good.nbytes],                       # unknown schema version
        [msgspec.msgpack.encode({"type": "nope", "v": 1})],    # unknown message type
        [msgspec.msgpack.encode({"type": "frame", "v": 1})],   # missing fields
        [head, b"\x00" * good.nbytes, b"extra"],               # too many parts
    ]


def run_in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def go() -> None:
        try:
            result["value"] = target()
        except BaseException as exc:  # surfaced by the test
            result["error"] = exc

    th = threading.Thread(target=go, daemon=True)
    th.start()
    return th, result
