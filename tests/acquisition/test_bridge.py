"""The bridge over real tcp on loopback: a remote camera node's [header, pixels] into a local store.

The test plays the remote camera node itself: a :class:`~rigstream.transport.Publisher` bound
to the camera's tcp address sends [header, pixels] with :func:`protocol.send_frame`, as a node
whose address is not local does (a real node on ``tcp://localhost`` sends no pixels). It can
skip messages (their sequence numbers too, as a network that loses them) and send malformed
ones between the valid ones.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import msgspec
import numpy as np
import pytest
import zmq

from rigstream import protocol
from rigstream.acquisition.bridge import Bridge
from rigstream.app.cli import build_parser
from rigstream.app.commands import cmd_bridge
from rigstream.config import ConfigError, RigConfig
from rigstream.frames import CameraStores
from rigstream.framestore import SHM_DIR, FrameStore, Record, StoreCursor, store_name
from rigstream.protocol import FLAG_DROPPED, FLAG_EOS, FLAG_INCOMPLETE, FrameHeader
from rigstream.transport import Publisher, is_local_address, subscriber
from tests.conftest import run_in_thread, small_rig

N = 40
"""Trigger indices in the bridged stream: 0..N-1."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rig_with_address(address: str) -> RigConfig:
    rig = small_rig(cameras=2)
    return msgspec.structs.replace(rig, cameras=[
        msgspec.structs.replace(c, address=address) if c.name == "cam0" else c for c in rig.cameras])


class RemoteNode:
    """What a camera node on another host puts on the wire for camera ``cam0``."""

    def __init__(self, rig: RigConfig, ctx: zmq.Context, address: str) -> None:
        self.cfg = rig.camera("cam0")
        self.capacity = rig.store_frames()
        self.pub = Publisher(ctx, address, hwm=0)
        self.seq = 0
        self.frames: dict[int, tuple[FrameHeader, np.ndarray]] = {}
        self.notices: dict[int, FrameHeader] = {}

    def header(self, n: int, flags: int = 0, width: int | None = None) -> FrameHeader:
        h = FrameHeader(camera="cam0", seq=self.seq, frame_id=1000 + n, trigger_index=n,
                        t_camera_ns=n * 10_000_000 + 7, t_host_ns=n * 10_000_000 + 5,
                        t_pi_ns=n * 10_000_000 + 1, width=width or self.cfg.width,
                        height=self.cfg.height, exposure_us=1000.0, flags=flags, truth_index=n,
                        slot=n % self.capacity)
        self.seq += 1
        return h

    def frame(self, n: int) -> None:
        px = np.random.default_rng(n).integers(0, 256, (self.cfg.height, self.cfg.width), np.uint8)
        h = self.header(n)
        protocol.send_frame(self.pub.sock, h, px)
        self.frames[n] = (h, px)

    def notice(self, n: int, flags: int = FLAG_DROPPED) -> None:
        h = self.header(n, flags)
        protocol.send_frame(self.pub.sock, h, None)
        self.notices[n] = h

    def lose(self, n: int) -> None:
        """Index ``n``'s message is lost on the network: its sequence number goes by unsent."""
        self.seq += 1

    def eos(self, last: int) -> None:
        h = self.header(last, FLAG_EOS)
        h.slot = -1
        protocol.send_frame(self.pub.sock, h, None)

    def close(self) -> None:
        self.pub.close()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def made(zctx: zmq.Context) -> Iterator[list[object]]:
    """Things to close at the end of a test (remote nodes, bridges, readers)."""
    things: list[object] = []
    yield things
    for thing in reversed(things):
        thing.close()  # type: ignore[attr-defined]


def check_record(rec: Record, remote: RemoteNode, lost: set[int]) -> None:
    n = rec.index
    if n in remote.frames:
        h, px = remote.frames[n]
        assert rec.state == "frame", f"index {n}"
        assert rec.pixels is not None and np.array_equal(rec.pixels, px), f"index {n}: pixels differ"
        assert (rec.field("frame_id"), rec.field("t_camera_ns"), rec.field("t_pi_ns"),
                rec.field("t_host_ns"), rec.field("flags"), rec.field("truth_index"),
                rec.field("exposure_ns")) == (h.frame_id, h.t_camera_ns, h.t_pi_ns, h.t_host_ns,
                                              0, n, 1_000_000), f"index {n}"
    elif n in remote.notices:
        h = remote.notices[n]
        assert rec.state == "notice", f"index {n}"
        assert (rec.field("frame_id"), rec.field("flags"), rec.field("t_pi_ns")) == (
            h.frame_id, h.flags, h.t_pi_ns), f"index {n}"
    else:
        assert n in lost, f"index {n} was neither sent nor lost"
        assert rec.state == "notice" and rec.field("flags") == FLAG_DROPPED, f"index {n}"
        assert rec.field("frame_id") == -1, f"index {n}"


def test_bridge_fills_the_local_store_over_tcp(zctx: zmq.Context, run_dir: str, port: int,
                                               made: list[object]) -> None:
    address = f"tcp://localhost:{port}"
    rig = rig_with_address(address)
    assert is_local_address(address)  # so a real node would send no pixels: RemoteNode does
    assert rig.store_frames() > N  # nothing overwritten before the reader reads
    remote = RemoteNode(rig, zctx, address)
    made.append(remote)
    bridge = Bridge(rig, "cam0", run_dir, zctx)
    made.append(bridge)
    reader = FrameStore.attach(store_name(run_dir, "cam0"))
    made.append(reader)
    headers = subscriber(zctx, rig.address("local_headers", run_dir, camera="cam0"))
    made.append(headers)
    assert bridge.pub.wait_for_subscribers(1, 10), "header subscriber never subscribed"
    assert remote.pub.wait_for_subscribers(1, 10), "bridge never subscribed over tcp"
    th, result = run_in_thread(bridge.run_forever)

    lost = {12, 13, 14, 38, 39}
    for n in range(N - 2):
        if n in lost:
            remote.lose(n)
        elif n == 3:
            remote.notice(n)
        elif n == 21:
            remote.notice(n, FLAG_DROPPED | FLAG_INCOMPLETE)
        else:
            remote.frame(n)
        if n == 5:  # malformed: each counted, the bridge goes on
            remote.pub.sock.send(b"\xc1garbage")
            h = remote.header(6)
            remote.seq -= 1  # does not decode: the receiver never sees its sequence number
            remote.pub.sock.send_multipart([protocol.encode(h), b"\x00" * 10])  # truncated pixels
            protocol.send_frame(remote.pub.sock, remote.header(6), None)  # slot, but no pixels
            wide = remote.header(6, width=rig.camera("cam0").width + 1)
            protocol.send_frame(remote.pub.sock, wide, np.zeros(wide.shape, np.uint8))
        if n == 20:  # an index that went back: not stored, counted
            protocol.send_frame(remote.pub.sock, remote.header(10),
                                np.zeros(remote.frames[10][1].shape, np.uint8))
    remote.lose(38)
    remote.lose(39)
    remote.eos(N - 1)
    th.join(30)
    assert not th.is_alive(), "bridge did not end at the end of stream"
    assert "error" not in result, result.get("error")
    s = result["value"]

    assert s["ended"] is True
    assert s["lost_on_network"] == 5 and s["lost_indices"] == [12, 13, 14, 38, 39]
    assert s["seq_gaps"] == {"cam0": 5}
    assert s["malformed"] == {"undecodable": 1, "truncated": 1, "no-pixels": 1, "wrong-shape": 1}
    assert s["out_of_order_indices"] == [10]
    assert s["frames"] == len(remote.frames) == N - 5 - 2 and s["notices"] == 2
    assert reader.end == N and reader.head == N

    cursor = StoreCursor(reader)
    out = np.empty(reader.layout.frame_shape, np.uint8)
    read = []
    while (rec := cursor.take(out=out)) is not None:
        check_record(rec, remote, lost)
        read.append(rec.index)
    assert read == list(range(N)) and cursor.done and cursor.overruns == 0

    # Every index's header republished with its slot, in order, consecutive, then the end.
    got = []
    while headers.poll(2000, zmq.POLLIN):
        h = protocol.decode(headers.recv(), FrameHeader)
        got.append(h)
        if h.flags & FLAG_EOS:
            break
    assert [h.trigger_index for h in got] == [*range(N), N - 1]
    assert [h.seq for h in got] == list(range(N + 1))
    assert all(h.slot == h.trigger_index % reader.capacity for h in got[:-1])
    assert got[-1].flags & FLAG_EOS and got[-1].slot == -1
    assert [h.trigger_index for h in got if h.flags & FLAG_DROPPED] == [3, 12, 13, 14, 21, 38, 39]
    assert not (SHM_DIR / reader.name).exists(), "bridge left its store behind"


def test_consumers_of_a_remote_camera_wake_on_bridged_headers(zctx: zmq.Context, run_dir: str,
                                                              port: int, made: list[object]) -> None:
    """A camera whose rig address is another host's: the bridge takes ``source``, and
    CameraStores here reads the bridge's store, woken by its republished headers."""
    rig = rig_with_address(f"tcp://acq-host.invalid:{port}")
    source = f"tcp://127.0.0.1:{port}"
    remote = RemoteNode(rig, zctx, source)
    made.append(remote)
    bridge = Bridge(rig, "cam0", run_dir, zctx, source=source)
    made.append(bridge)
    stores = CameraStores(rig, run_dir, zctx, "test consumer", cameras=["cam0"])
    made.append(stores)
    assert stores.all_open
    # The only subscriber the bridge's address can have is CameraStores.
    assert bridge.pub.wait_for_subscribers(1, 10), "CameraStores did not subscribe to the bridge"
    assert remote.pub.wait_for_subscribers(1, 10), "bridge never subscribed to its source"
    th, result = run_in_thread(bridge.run_forever)

    cursor = StoreCursor(stores.stores["cam0"])
    out = np.empty(cursor.store.layout.frame_shape, np.uint8)
    read: list[int] = []
    deadline = time.monotonic() + 30
    sent = 0
    while not cursor.done and time.monotonic() < deadline:
        if sent < N:  # a few at a time, read while the bridge writes
            for n in range(sent, min(sent + 7, N)):
                remote.frame(n)
            sent = min(sent + 7, N)
            if sent == N:
                remote.eos(N - 1)
        stores.wait(200)
        while (rec := cursor.take(out=out)) is not None:
            check_record(rec, remote, set())
            read.append(rec.index)
    assert read == list(range(N)) and cursor.done and cursor.overruns == 0
    while stores.headers < N + 1 and time.monotonic() < deadline:
        stores.wait(200)
    assert stores.headers == N + 1  # every frame's header and the end of stream
    th.join(30)
    assert "error" not in result, result.get("error")
    assert result["value"]["frames"] == N and result["value"]["lost_on_network"] == 0


def test_stop_without_end_of_stream_ends_the_store(zctx: zmq.Context, run_dir: str, port: int,
                                                   made: list[object]) -> None:
    address = f"tcp://localhost:{port}"
    rig = rig_with_address(address)
    remote = RemoteNode(rig, zctx, address)
    made.append(remote)
    bridge = Bridge(rig, "cam0", run_dir, zctx)
    bridge.idle_s = 0.2  # the wait after a stop with nothing arriving
    made.append(bridge)
    reader = FrameStore.attach(store_name(run_dir, "cam0"))
    made.append(reader)
    assert remote.pub.wait_for_subscribers(1, 10)
    stop = threading.Event()
    th, result = run_in_thread(lambda: bridge.run_forever(stop))
    for n in range(5):
        remote.frame(n)
    deadline = time.monotonic() + 10
    while reader.head < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    th.join(30)
    assert not th.is_alive()
    assert "error" not in result, result.get("error")
    assert result["value"]["ended"] is False and result["value"]["frames"] == 5
    assert reader.end == 5  # local readers finish instead of waiting for a writer that is alive


def test_source_must_be_tcp(zctx: zmq.Context, run_dir: str) -> None:
    rig = small_rig(cameras=1)
    with pytest.raises(ConfigError, match=r"bridge cam0: --source: expected a tcp:// address"):
        Bridge(rig, "cam0", run_dir, zctx, source="ipc:///tmp/x")
    with pytest.raises(ConfigError, match=r"camera cam0's frame address: expected a tcp://"):
        Bridge(rig, "cam0", run_dir, zctx)
    assert not (SHM_DIR / store_name(run_dir, "cam0")).exists()


def test_cli_declares_bridge() -> None:
    args = build_parser().parse_args(["bridge", "--run", "/tmp/r", "--camera", "cam1",
                                      "--source", "tcp://acq-host:5551"])
    assert (args.func, args.camera, args.source, args.run) == (cmd_bridge, "cam1",
                                                               "tcp://acq-host:5551", "/tmp/r")
