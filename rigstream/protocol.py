"""Wire protocol: MessagePack messages with versioned, typed schemas validated on decode.

Every message is a map with ``type`` (the schema) and ``v`` (its version). On one host a
frame's pixels stay in its camera's shared-memory store (:mod:`rigstream.framestore`) and only
its :class:`FrameHeader` (naming the slot) travels. Between hosts frames travel as multipart
``[header, pixels]``, the pixels as the raw buffer, sent and received without copying. A
header alone without a slot is a notice: a dropped frame (``FLAG_DROPPED``) or the end of a
camera's stream (``FLAG_EOS``).

A receiver that gets something it cannot decode raises :class:`ProtocolError` with the reason;
:class:`MalformedCounter` logs and counts it so the receiver keeps running.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1

FLAG_DROPPED = 1
"""No pixels: the frame was lost in transport or arrived incomplete."""
FLAG_INCOMPLETE = 2
"""The camera delivered the image incomplete (always with FLAG_DROPPED)."""
FLAG_TIMING = 4
"""The frame's timestamp disagrees with its pulse by more than half a period."""
FLAG_EOS = 8
"""End of this camera's stream: no frames follow."""

FLAG_NAMES = {FLAG_DROPPED: "dropped", FLAG_INCOMPLETE: "incomplete", FLAG_TIMING: "timing",
              FLAG_EOS: "eos"}


def flag_names(flags: int) -> str:
    return "|".join(name for bit, name in FLAG_NAMES.items() if flags & bit)


INT64_MAX = 2**63 - 1
Int = Annotated[int, msgspec.Meta(ge=-INT64_MAX - 1, le=INT64_MAX)]
"""Every integer on the wire is an int64 (times in ns, indices, counters): the tables and numpy
hold it; a larger one is refused at decoding, not found later as an overflow."""

MAX_MESSAGE_BYTES = 1 << 20
"""The largest message :func:`decode` accepts (pixels travel beside messages, never in them; the
largest real message, a busy component's Status, is a few kB)."""


class ProtocolError(ValueError):
    """A message that does not decode to a known schema; ``reason`` is a short category."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _Message(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    v: Int = PROTOCOL_VERSION


class Pulse(_Message, tag="pulse", kw_only=True):
    """One edge of an output the Pi drives; ``index`` counts that output's pulses from 0 at
    session start (a falling edge has its pulse's index)."""

    index: Int
    t_pi_ns: Int
    """The edge on the Pi's monotonic clock (taken right after the pin write)."""
    line: str = "camera"
    """Which output and edge: ``camera`` / ``sync`` / ``ttl`` (rising edges of the camera
    trigger, the neural sync line, a closed-loop TTL), ``camera-fall`` / ``sync-fall`` /
    ``ttl-fall`` (their falling edges), ``ttl-command`` (when a TTL command arrived)."""


class Edge(_Message, tag="edge", kw_only=True):
    """A level change on a simulated electrical line (sim pin backend, camera strobes)."""

    line: str
    level: Int
    t_ns: Int
    truth_index: Int = -1
    """Simulation only: the pulse this edge stems from (a real wire carries no index)."""


class FrameHeader(_Message, tag="frame", kw_only=True):
    camera: str
    seq: Int
    """Publisher sequence number: a gap means frames were lost between node and consumer."""
    frame_id: Int
    """The camera's own frame counter (chunk data FrameID)."""
    trigger_index: Int
    """Pulse index n this frame belongs to, derived from frame_id."""
    t_camera_ns: Int
    t_host_ns: Int
    t_pi_ns: Int = -1
    """Time of pulse ``trigger_index`` on the Pi's clock; -1 if the pulse was not received."""
    width: Int
    height: Int
    channels: Int = 1
    dtype: Literal["uint8", "uint16"] = "uint8"
    exposure_us: float = 0.0
    flags: Int = 0
    truth_index: Int = -1
    """Simulation only: the pulse the simulated camera really exposed on."""
    slot: Int = -1
    """Where the pixels are in the camera's frame store on the node's host
    (:mod:`rigstream.framestore`; slot = trigger_index % capacity); -1: not in a store. A
    header with a slot travels alone on one host: the pixels stay in shared memory."""

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.channels * np.dtype(self.dtype).itemsize

    @property
    def shape(self) -> tuple[int, ...]:
        if self.channels == 1:
            return (self.height, self.width)
        return (self.height, self.width, self.channels)


class FrameSetHeader(_Message, tag="frameset", kw_only=True):
    """A frame set, as one single-part message: the trigger index, and for each present camera
    the FrameHeader naming the slot of its frame in that camera's frame store (the pixels stay
    in shared memory; a reader checks ``FrameStore.holds`` after reading them)."""

    seq: Int
    """Frame-set counter of the assembler (a gap: sets a latest-wins reader passed over)."""
    trigger_index: Int
    t_pi_ns: Int
    cameras: list[str]
    """Present cameras, in the rig's camera order."""
    missing: list[str] = []
    """Absent cameras, in the rig's camera order."""
    frames: list[FrameHeader] = []
    """One per camera of ``cameras``, same order, each with its ``slot``."""
    reasons: list[str] = []
    """Why each camera of ``missing`` is absent, same order: ``dropped``, ``incomplete``,
    ``timing`` (flagged), ``overrun`` (overwritten before the assembler read it),
    ``not-written`` (its camera went past the index without writing it), ``ended`` (its
    stream had ended), ``silent`` (nothing from it for the deadline), ``late`` (lagging past
    the longest wait)."""


class Event(_Message, tag="event", kw_only=True):
    """Something happened that may call for a clip: a rule, the CLI, a schedule."""

    name: str
    source: str = ""
    trigger_index: Int | None = None
    t_pi_ns: Int | None = None
    t_host_ns: Int = 0
    data: dict[str, Any] = {}


class Command(_Message, tag="command", kw_only=True):
    cmd: str
    args: dict[str, Any] = {}


class Reply(_Message, tag="reply", kw_only=True):
    ok: bool
    error: str = ""
    data: dict[str, Any] = {}


class Status(_Message, tag="status", kw_only=True):
    """A component's state and counters, pushed to the session's supervisor."""

    component: str
    state: Literal["ready", "running", "done", "error"]
    t_host_ns: Int = 0
    stats: dict[str, Any] = {}


class Pose2D(_Message, tag="pose2d", kw_only=True):
    """Keypoints of one frame set from the live pose engine, in full-frame pixels."""

    seq: Int
    """Pose message counter; FrameSetHeader.seq is in ``frameset_seq``."""
    frameset_seq: Int
    trigger_index: Int
    t_pi_ns: Int
    """The frame set's pulse on the Pi's clock (-1 if unknown)."""
    t_host_ns: Int
    """When this message was published (the pose host's monotonic clock)."""
    model: str
    keypoints: list[str]
    views: dict[str, list[list[float]]]
    """Per camera (K, 3): x, y in that camera's frame pixels and confidence in [0, 1]."""
    missing: list[str] = []
    """Cameras absent from the frame set (no keypoints)."""
    skipped: Int = 0
    """Frame sets skipped (latest-wins) since the previous Pose2D."""
    timing_ms: dict[str, float] = {}
    """wait, preprocess, infer, postprocess for this frame set."""
    t_neural: float | None = None
    """The pulse on the neural recorder's clock (its units), mapped live; None before the live
    clock has locked or without one."""


class Pose3D(_Message, tag="pose3d", kw_only=True):
    """Keypoints of one frame set in 3D, triangulated from its Pose2D with the rig's calibration."""

    seq: Int
    """Pose3D counter."""
    frameset_seq: Int
    trigger_index: Int
    t_pi_ns: Int
    """The frame set's pulse on the Pi's clock (-1 if unknown)."""
    t_host_ns: Int
    """When this message was published (the pose host's monotonic clock)."""
    keypoints: list[str]
    xyz: list[list[float]]
    """(K, 3) calibration units (mm); filtered when a filter is configured; NaN where there is
    no point (fewer than two confident views, or missing past the filter's gap)."""
    error: list[float]
    """(K,) mean reprojection error of the views used, px (NaN without a point)."""
    ncams: list[Int]
    """(K,) views used."""
    score: list[float]
    """(K,) mean confidence of the views used (0 without a point)."""
    xyz_raw: list[list[float]] | None = None
    """(K, 3) the unfiltered triangulation, when ``xyz`` is filtered."""
    filter: str = "none"
    predicted_ms: float = 0.0
    """``xyz`` is the filter's prediction this long after the pulse (0: at the pulse)."""
    timing_ms: dict[str, float] = {}
    """triangulate, filter for this frame set."""
    t_neural: float | None = None
    """The pulse on the neural recorder's clock, mapped live (see Pose2D.t_neural)."""


AnyMessage = (Pulse | Edge | FrameHeader | FrameSetHeader | Event | Command | Reply | Status | Pose2D
              | Pose3D)


class _Envelope(msgspec.Struct):
    type: str = "?"
    v: int = -1


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyMessage)
_envelope_decoder = msgspec.msgpack.Decoder(_Envelope)
_KNOWN_TYPES = {"pulse", "edge", "frame", "frameset", "event", "command", "reply", "status", "pose2d",
                "pose3d"}


def encode(msg: _Message) -> bytes:
    return _encoder.encode(msg)


def decode(buf: bytes | memoryview, expected: type[Any] | tuple[type[Any], ...] | None = None) -> Any:
    """Decode one message; raises ProtocolError naming what was wrong, and nothing else (a
    receiver that counts ProtocolError survives any input)."""
    if len(buf) > MAX_MESSAGE_BYTES:
        raise ProtocolError("too-large", f"{len(buf)} bytes (at most {MAX_MESSAGE_BYTES})")
    try:
        msg = _decoder.decode(buf)
    except RecursionError:  # msgspec recurses once per nesting level of an ``Any`` field
        raise _too_deep(buf) from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        _raise_why(buf, exc)
    if msg.v != PROTOCOL_VERSION:
        raise ProtocolError(
            "unknown-version",
            f"{msg.type if hasattr(msg, 'type') else type(msg).__name__} v{msg.v} "
            f"(this build speaks v{PROTOCOL_VERSION})",
        )
    if expected is not None and not isinstance(msg, expected):
        names = expected.__name__ if isinstance(expected, type) else "/".join(
            e.__name__ for e in expected)
        raise ProtocolError("unexpected-type", f"expected {names}, got {type(msg).__name__}")
    return msg


def _too_deep(buf: bytes | memoryview) -> ProtocolError:
    return ProtocolError("too-deep", f"nested deeper than the interpreter allows ({len(buf)} bytes)")


def _raise_why(buf: bytes | memoryview, exc: Exception) -> None:
    try:
        env = _envelope_decoder.decode(buf)
    except RecursionError:  # skipping an unknown field's value recurses too
        raise _too_deep(buf) from None
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise ProtocolError("undecodable", f"not a MessagePack map with type and v ({exc})") from None
    if env.type not in _KNOWN_TYPES:
        raise ProtocolError("unknown-type", f"type {env.type!r}") from None
    if env.v != PROTOCOL_VERSION:
        raise ProtocolError(
            "unknown-version", f"{env.type} v{env.v} (this build speaks v{PROTOCOL_VERSION})"
        ) from None
    raise ProtocolError("invalid", f"{env.type}: {exc}") from None


def send_frame(sock: Any, header: FrameHeader, pixels: np.ndarray | None,
               track: bool = False) -> Any:
    """Send [header, pixels] without copying the pixels; a notice (no pixels) is one part.

    With ``track`` returns a zmq.MessageTracker: the pixel buffer may be reused once it is done.
    """
    head = _encoder.encode(header)
    if pixels is None:
        sock.send(head)
        return None
    if not pixels.flags.c_contiguous:
        raise ValueError("pixels must be C-contiguous to be sent without a copy")
    return sock.send_multipart([head, pixels.data], copy=False, track=track)


def decode_frame_parts(parts: list[Any]) -> tuple[FrameHeader, np.ndarray | None]:
    """Decode [header] or [header, pixels] (zmq.Frame or bytes); the pixels are a view."""
    if not parts:
        raise ProtocolError("truncated", "empty multipart message")
    header = decode(_buffer(parts[0]), FrameHeader)
    if len(parts) == 1:
        if not header.flags & (FLAG_DROPPED | FLAG_EOS) and header.slot < 0:
            raise ProtocolError(
                "truncated", f"{header.camera} frame {header.frame_id}: header without pixels"
            )
        return header, None
    if len(parts) != 2:
        raise ProtocolError("invalid", f"frame message has {len(parts)} parts, expected 2")
    buf = _buffer(parts[1])
    if len(buf) != header.nbytes:
        raise ProtocolError(
            "truncated" if len(buf) < header.nbytes else "invalid",
            f"{header.camera} frame {header.frame_id}: pixel part has {len(buf)} bytes, "
            f"header says {header.nbytes} ({header.width}x{header.height}x{header.channels} "
            f"{header.dtype})",
        )
    pixels = np.frombuffer(buf, dtype=header.dtype).reshape(header.shape)
    return header, pixels


def _buffer(part: Any) -> memoryview:
    if isinstance(part, (bytes, bytearray, memoryview)):
        return memoryview(part)
    return part.buffer  # zmq.Frame


class MalformedCounter:
    """Counts rejected messages by reason and logs them without flooding the log."""

    def __init__(self, where: str, log_first: int = 5) -> None:
        self.where = where
        self.counts: Counter[str] = Counter()
        self._log_first = log_first
        self._last_log = 0.0

    def __call__(self, err: ProtocolError) -> None:
        self.counts[err.reason] += 1
        n = self.counts[err.reason]
        now = time.monotonic()
        if n <= self._log_first or now - self._last_log > 10:
            self._last_log = now
            logger.warning("%s: dropped malformed message (#%d of %s): %s",
                           self.where, n, err.reason, err)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


def decode_frameset(parts: list[Any]) -> tuple[FrameSetHeader, list[FrameHeader]]:
    """Decode a frame-set message into its header and the FrameHeader of each present camera
    (in ``cameras`` order; each names its frame's slot). Raises ProtocolError with the reason."""
    if len(parts) != 1:
        raise ProtocolError(
            "truncated" if not parts else "invalid",
            f"frame set message has {len(parts)} parts, expected 1")
    part = parts[0]
    head = decode(part.buffer if hasattr(part, "buffer") else part, FrameSetHeader)
    n = head.trigger_index
    if len(head.frames) != len(head.cameras):
        raise ProtocolError(
            "truncated" if len(head.frames) < len(head.cameras) else "invalid",
            f"frame set {n}: {len(head.frames)} frame headers for cameras {head.cameras}")
    if len(set(head.cameras) | set(head.missing)) != len(head.cameras) + len(head.missing):
        raise ProtocolError(
            "invalid", f"frame set {n}: a camera named twice (cameras {head.cameras}, missing "
            f"{head.missing})")
    if head.reasons and len(head.reasons) != len(head.missing):
        raise ProtocolError(
            "invalid", f"frame set {n}: {len(head.reasons)} reasons for missing {head.missing}")
    for cam, h in zip(head.cameras, head.frames, strict=True):
        if h.camera != cam or h.trigger_index != n or h.slot < 0:
            raise ProtocolError(
                "invalid", f"frame set {n}: expected camera {cam}'s frame {n} with a slot, got "
                f"{h.camera}'s frame {h.trigger_index} in slot {h.slot}")
    return head, head.frames
