from __future__ import annotations

import msgspec
import numpy as np
import pytest
import zmq

from rigstream import protocol
from rigstream.protocol import FLAG_DROPPED, FrameHeader, ProtocolError


def header(**kw: object) -> FrameHeader:
    base = dict(camera="cam0", seq=0, frame_id=3, trigger_index=3, t_camera_ns=1, t_host_ns=2,
                width=4, height=3)
    base.update(kw)
    return FrameHeader(**base)  # type: ignore[arg-type]


def test_every_schema_round_trips() -> None:
    msgs = [
        *valid_messages(),
        protocol.Pulse(index=5, t_pi_ns=123),
        protocol.Edge(line="trigger", level=1, t_ns=9, truth_index=2),
        header(),
        protocol.FrameSetHeader(seq=1, trigger_index=3, t_pi_ns=4, cameras=["a"], missing=["b"]),
        protocol.Event(name="reach", trigger_index=7, data={"kp": [1.0, 2.0]}),
        protocol.Command(cmd="start", args={"max_pulses": 10}),
        protocol.Reply(ok=False, error="nope"),
        protocol.Status(component="recorder", state="running", stats={"frames": 1}),
    ]
    for msg in msgs:
        assert protocol.decode(protocol.encode(msg)) == msg


@pytest.mark.parametrize(
    ("buf", "reason"),
    [
        (b"\xc1", "undecodable"),
        (b"", "undecodable"),
        (msgspec.msgpack.encode({"type": "pulse", "v": 2, "index": 1, "t_pi_ns": 1}),
         "unknown-version"),
        (msgspec.msgpack.encode({"type": "telemetry", "v": 1}), "unknown-type"),
        (msgspec.msgpack.encode({"type": "pulse", "v": 1, "index": "x", "t_pi_ns": 1}),
         "invalid"),
        (msgspec.msgpack.encode({"type": "pulse", "v": 1, "index": 1, "t_pi_ns": 1, "x": 0}),
         "invalid"),
        # an int64 is the widest integer the tables and numpy hold
        (msgspec.msgpack.encode({"type": "event", "v": 1, "name": "x", "t_pi_ns": 2**63}), "invalid"),
        (msgspec.msgpack.encode({"type": "event", "v": 1, "name": "x", "data": {"a": None}})[:-1]
         + b"\x91" * 5000 + b"\xc0", "too-deep"),
        (msgspec.msgpack.encode({"type": "event", "v": 1, "name": "x", "data": None})[:-1]
         + b"\x91" * 5000 + b"\xc0", "too-deep"),
        (msgspec.msgpack.encode({"type": "event", "v": 1, "name": "x",
                                 "data": {"blob": b"x" * protocol.MAX_MESSAGE_BYTES}}), "too-large"),
    ],
)
def test_bad_messages_are_rejected_with_a_reason(buf: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.decode(buf)
    assert info.value.reason == reason


def valid_messages() -> list[protocol.AnyMessage]:
    pose = dict(seq=1, frameset_seq=2, trigger_index=3, t_pi_ns=4, t_host_ns=5, keypoints=["a"])
    return [
        protocol.Pulse(index=5, t_pi_ns=123), protocol.Edge(line="trigger", level=1, t_ns=9),
        header(slot=2), protocol.FrameSetHeader(seq=1, trigger_index=3, t_pi_ns=4, cameras=["cam0"],
                                                frames=[header(slot=3)], missing=["b"], reasons=["late"]),
        protocol.Event(name="reach", trigger_index=7, data={"clip": {"pre_s": 1.0, "post_s": 2.0}}),
        protocol.Command(cmd="ttl", args={"width_ms": 2.0}), protocol.Reply(ok=True, data={"index": 1}),
        protocol.Status(component="recorder", state="running", stats={"frames": {"cam0": 1}}),
        protocol.Pose2D(**pose, model="m", views={"cam0": [[1.0, 2.0, 0.5]]}),
        protocol.Pose3D(**pose, xyz=[[1.0, 2.0, 3.0]], error=[0.1], ncams=[2], score=[0.9]),
    ]


def test_decoding_fuzz_raises_only_protocol_errors() -> None:
    """Truncations, byte flips, spliced and random bytes of every schema: decode returns a message
    or raises ProtocolError, never anything a receiving loop would not catch."""
    rng = np.random.default_rng(13)
    outcomes = {"decoded": 0, "refused": 0}
    for msg in valid_messages():
        buf = protocol.encode(msg)
        variants = [buf[:n] for n in range(len(buf))]
        for _ in range(300):
            b = bytearray(buf)
            for i in rng.integers(0, len(b), size=rng.integers(1, 4)):
                b[i] = int(rng.integers(0, 256))
            variants.append(bytes(b))
            cut = int(rng.integers(0, len(buf)))
            variants.append(buf[:cut] + rng.bytes(int(rng.integers(1, 40))) + buf[cut:])
        variants += [rng.bytes(int(n)) for n in rng.integers(1, 200, size=50)]
        for v in variants:
            try:
                protocol.decode(v)
                outcomes["decoded"] += 1
            except ProtocolError:
                outcomes["refused"] += 1
    assert outcomes["refused"] > 1000 and outcomes["decoded"] > 0


def test_unexpected_type() -> None:
    with pytest.raises(ProtocolError, match="expected Pulse, got Command"):
        protocol.decode(protocol.encode(protocol.Command(cmd="x")), protocol.Pulse)


def test_frame_parts_are_checked() -> None:
    h = header()
    head = protocol.encode(h)
    px = np.arange(12, dtype=np.uint8).reshape(3, 4)
    got, view = protocol.decode_frame_parts([head, px.tobytes()])
    assert got == h and view is not None and (view == px).all()
    with pytest.raises(ProtocolError, match="header without pixels"):
        protocol.decode_frame_parts([head])
    with pytest.raises(ProtocolError, match="pixel part has 5 bytes, header says 12"):
        protocol.decode_frame_parts([head, b"12345"])
    notice, none = protocol.decode_frame_parts([protocol.encode(header(flags=FLAG_DROPPED))])
    assert notice.flags == FLAG_DROPPED and none is None


def test_frames_cross_zeromq_without_copying_the_pixels() -> None:
    ctx = zmq.Context()
    try:
        push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
        pull.bind("inproc://frames")
        push.connect("inproc://frames")
        px = np.random.default_rng(0).integers(0, 255, (480, 640), dtype=np.uint8)
        tracker = protocol.send_frame(push, header(width=640, height=480), px, track=True)
        parts = pull.recv_multipart(copy=False)
        h, view = protocol.decode_frame_parts(parts)
        assert view is not None and (view == px).all()
        # Over inproc the receiver's array is the sender's very buffer: no copy on either side.
        assert view.__array_interface__["data"][0] == px.__array_interface__["data"][0]
        assert not tracker.done  # the buffer is still in use by the receiver
        del parts, view, h
        tracker.wait(2)
        assert tracker.done  # released: the camera's pool may reuse it
    finally:
        ctx.destroy(linger=0)


def test_malformed_counter_counts_by_reason(caplog: pytest.LogCaptureFixture) -> None:
    counter = protocol.MalformedCounter("test")
    for _ in range(3):
        counter(ProtocolError("truncated", "x"))
    counter(ProtocolError("unknown-version", "y"))
    assert counter.as_dict() == {"truncated": 3, "unknown-version": 1}
    assert counter.total == 4
    assert "dropped malformed message" in caplog.text
