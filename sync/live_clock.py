"""Neural time while the session runs: the recorder's sync edges streamed live, matched to the
Pi's, and a running fit from Pi time to the recorder's.

After a session, :mod:`rigstream.sync.align` matches the whole sync train and fits a spline
(the final mapping). While it runs, rules and monitors want ``t_neural`` now. This module keeps
a :class:`LiveClock`: Pi sync edges (``t_pi_ns``, from the trigger's pulse stream) and recorder
edges (sample numbers, from the recorder's stream) go in as they arrive, in any order between
the two; edges are matched and a straight line is fitted through the last ``window`` pairs, so
the recorder's slow drift is followed. Until the first match (a few sync pulses after the
start) times map to NaN.

Matching. The recorder's unknown offset is found once, from the differences between every
recent recorder edge and every recent Pi edge (in seconds, through the recorder's sample
rate): the true offset is the one most pairs agree on within ``tolerance_s``, because the sync
intervals are random. At least ``MIN_LOCK_PAIRS`` must agree, and no other offset as well. From
then on each new Pi edge is predicted on the recorder's clock by the running fit and paired with
the recorder edge within the tolerance. A Pi edge the recorder missed, or a recorder edge the
Pi never sent (a glitch), stays unpaired and is counted. If no edge has paired for
``RELOCK_AFTER`` Pi edges in a row, the offset is searched again.

Sources (all publish the Open Ephys GUI Event Broadcaster's documented JSON format, so one
reader serves the real GUI and the simulation): :class:`OpenEphysEvents` reads a GUI's Event
Broadcaster (ZeroMQ PUB, a two-part message: the type, ``0`` for a TTL event, and a JSON object
with ``event_type``, ``stream``, ``sample_rate``, ``sample_number``, ``line``, ``state``).
:class:`SimRecorderStream` is the simulated recorder
(:class:`~rigstream.sync.sim_recorder.SimRecorder`: offset, drift, missed and spurious edges)
publishing live in that format.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from rigstream import protocol

logger = logging.getLogger(__name__)

MIN_LOCK_PAIRS = 4
KEEP_EDGES = 64
"""Recent edges kept per side for the offset search and matching."""
RELOCK_AFTER = 8


@dataclass(frozen=True)
class RecorderEdge:
    sample_number: int
    sample_rate: float
    line: int
    state: int
    stream: str = ""


# ---------------------------------------------------------------------------------------------
# The Event Broadcaster's format


def encode_ttl_event(sample_number: int, sample_rate: float, line: int, state: int,
                     stream: str = "sim-ephys", source_node: int = 100) -> list[bytes]:
    """One TTL event as the Event Broadcaster sends it in JSON mode: ``[b"0", json]``."""
    body = {"event_type": "ttl", "stream": stream, "source_node": source_node, "sample_rate": sample_rate,
            "channel_name": "TTL Event Channel", "sample_number": int(sample_number), "line": int(line),
            "state": int(state)}
    return [b"0", json.dumps(body).encode()]


def _message_type(part: bytes) -> int | None:
    """The first part: the documented type number (0 TTL, 1 spike), as ASCII digits or a
    little-endian integer (the page does not say which, so both are taken)."""
    text = part.strip()
    if text.isdigit():
        return int(text)
    if 1 <= len(part) <= 8:
        return int.from_bytes(part, "little")
    return None


def decode_event(parts: list[bytes]) -> RecorderEdge | None:
    """A TTL event from an Event Broadcaster message; None for another kind (a spike); raises
    :class:`rigstream.protocol.ProtocolError` for a message that is not one."""
    if len(parts) != 2:
        raise protocol.ProtocolError("invalid", f"expected 2 parts (type, JSON), got {len(parts)}")
    kind = _message_type(parts[0])
    if kind is None:
        raise protocol.ProtocolError("invalid", f"unreadable message type {parts[0][:16]!r}")
    if kind != 0:
        return None
    try:
        body = json.loads(parts[1])
    except (UnicodeDecodeError, ValueError) as exc:
        raise protocol.ProtocolError("invalid", f"the event is not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("event_type", "ttl") != "ttl":
        return None
    try:
        return RecorderEdge(sample_number=int(body["sample_number"]), sample_rate=float(body["sample_rate"]),
                            line=int(body["line"]), state=int(body["state"]),
                            stream=str(body.get("stream", "")))
    except (KeyError, TypeError, ValueError) as exc:
        raise protocol.ProtocolError("invalid", f"TTL event without a usable {exc}: {body}") from None


class OpenEphysEvents:
    """A subscriber to an Event Broadcaster: the rising edges of the sync ``line`` (of ``stream``,
    when given). Spikes, other lines and falling edges are counted and skipped."""

    def __init__(self, ctx: zmq.Context, address: str, line: int, stream: str | None = None) -> None:
        self.line = line
        self.stream = stream
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(address)
        self.malformed = protocol.MalformedCounter("neural recorder events")
        self.skipped = 0
        self.sample_rate: float | None = None

    def poll(self) -> list[RecorderEdge]:
        edges = []
        while True:
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return edges
            try:
                edge = decode_event(parts)
            except protocol.ProtocolError as err:
                self.malformed(err)
                continue
            if (edge is None or edge.line != self.line or edge.state != 1
                    or (self.stream is not None and edge.stream != self.stream)):
                self.skipped += 1
                continue
            self.sample_rate = edge.sample_rate
            edges.append(edge)

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------------------------------
# The running mapping


class LiveClock:
    """Pi ns -> recorder units (samples), from the sync edges seen so far (see the module)."""

    def __init__(self, tolerance_s: float = 0.002, window: int = 30) -> None:
        self.tolerance_s = tolerance_s
        self.window = window
        self.rate: float | None = None
        self._pi: deque[int] = deque(maxlen=KEEP_EDGES)  # unpaired Pi edges, ns
        self._rec: deque[int] = deque(maxlen=KEEP_EDGES)  # unpaired recorder edges, samples
        self._pairs: deque[tuple[int, int]] = deque(maxlen=window)
        self.offset_s: float | None = None
        self.paired = 0
        self.unpaired_pi = 0
        self.unpaired_recorder = 0
        self._misses = 0
        self._fit: tuple[int, float, float] | None = None  # (t0 ns, samples at t0, samples per ns)

    @property
    def locked(self) -> bool:
        return self._fit is not None

    def add_pi(self, t_ns: int) -> None:
        self._pi.append(int(t_ns))
        self._match()

    def add_recorder(self, sample_number: int, sample_rate: float) -> None:
        self.rate = float(sample_rate)
        self._rec.append(int(sample_number))
        self._match()

    def to_neural(self, t_ns: int) -> float:
        """The recorder's sample position at Pi time ``t_ns``; NaN before the first match."""
        if self._fit is None:
            return math.nan
        t0, s0, slope = self._fit
        return s0 + slope * (t_ns - t0)

    def summary(self) -> dict[str, Any]:
        return {"locked": self.locked, "paired": self.paired, "unpaired_pi": self.unpaired_pi,
                "unpaired_recorder": self.unpaired_recorder,
                "drift_ppm": None if self._fit is None or self.rate is None
                else round((self._fit[2] * 1e9 / self.rate - 1) * 1e6, 3)}

    def _match(self) -> None:
        if self.rate is None:
            return
        if self.offset_s is None:
            self._lock()
            if self.offset_s is None:
                return
        tol = self.tolerance_s * self.rate
        while self._pi:
            t = self._pi[0]
            predicted = (self.to_neural(t) if self._fit is not None
                         else (t / 1e9 + self.offset_s) * self.rate)
            # recorder edges too early for any Pi edge left are glitches
            while self._rec and self._rec[0] < predicted - tol:
                self._rec.popleft()
                self.unpaired_recorder += 1
            if not self._rec:
                return  # the recorder's edge may still come
            if abs(self._rec[0] - predicted) <= tol:
                self._pair(self._pi.popleft(), self._rec.popleft())
                continue
            # the recorder's next edge is later: this Pi edge was missed by the recorder
            self._pi.popleft()
            self.unpaired_pi += 1
            self._misses += 1
            if self._misses >= RELOCK_AFTER:
                logger.warning("live clock: %d sync edges in a row unpaired; searching the offset again",
                               self._misses)
                self.offset_s = None
                self._fit = None
                self._pairs.clear()
                self._misses = 0
                return

    def _pair(self, t_ns: int, sample: int) -> None:
        self._misses = 0
        self.paired += 1
        self._pairs.append((t_ns, sample))
        t = np.array([p[0] for p in self._pairs], dtype=np.int64)
        s = np.array([p[1] for p in self._pairs], dtype=np.float64)
        t0 = int(t[-1])
        x = (t - t0).astype(np.float64)
        if len(t) >= 2 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, s, 1)
        else:
            slope, intercept = self.rate / 1e9, float(s[-1])  # type: ignore[operator]
        self._fit = (t0, float(intercept), float(slope))

    def _lock(self) -> None:
        """The offset most recent pairs agree on (the differences cluster only at the true one)."""
        if len(self._pi) < MIN_LOCK_PAIRS or len(self._rec) < MIN_LOCK_PAIRS:
            return
        assert self.rate is not None
        pi_s = np.array(self._pi, dtype=np.float64) / 1e9
        rec_s = np.array(self._rec, dtype=np.float64) / self.rate
        diffs = np.sort((rec_s[:, None] - pi_s[None, :]).ravel())
        width = 2 * self.tolerance_s
        ends = np.searchsorted(diffs, diffs + width, side="right")
        counts = ends - np.arange(len(diffs))
        best = int(np.argmax(counts))
        if counts[best] < MIN_LOCK_PAIRS:
            return
        runner_up = counts[np.abs(diffs - diffs[best]) > width]
        if runner_up.size and runner_up.max() >= counts[best]:
            return  # two offsets as good: wait for more edges
        self.offset_s = float(np.median(diffs[best:ends[best]]))
        logger.info("live clock: recorder offset %.6f s from %d agreeing sync edges", self.offset_s,
                    int(counts[best]))


# ---------------------------------------------------------------------------------------------
# The simulated recorder, live


class SimRecorderStream:
    """The simulated recorder's digital input on the Pi's sync line, published live as Event
    Broadcaster TTL events. Attached to the simulated pins like the simulated apparatus
    (``pins.watch`` on the sync pin); each edge is converted and sent from a thread of its own."""

    def __init__(self, recorder: Any, ctx: zmq.Context, address: str, line: int = 0,
                 stream: str = "sim-ephys") -> None:
        from rigstream.transport import bind_address

        self.recorder = recorder
        self.line = line
        self.stream = stream
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 1000)
        self.pub.bind(bind_address(address))
        self.truth: list[tuple[int, float]] = []
        """(Pi ns, the true sample position) of every sync edge sent, for tests."""
        self._queue: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sim-recorder", daemon=True)
        self._thread.start()

    def attach(self, pins: Any, sync_pin: int) -> None:
        pins.watch(sync_pin, lambda level, t_ns: self._queue.put((level, t_ns)))

    def _run(self) -> None:
        rec = self.recorder
        while True:
            item = self._queue.get()
            if item is None:
                return
            level, t_ns = item
            t_s = t_ns / 1e9
            if level:
                self.truth.append((t_ns, float(rec.true_samples(t_s))))
            samples, truth = rec.record(np.array([t_s]))  # draws its missed and spurious edges
            for sample, index in zip(samples.tolist(), truth.tolist(), strict=True):
                state = level if index >= 0 else 1  # a glitch is a rising edge of its own
                self.pub.send_multipart(encode_ttl_event(sample, rec.rate_hz, self.line, state, self.stream))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(5.0)
        self.pub.close()


# ---------------------------------------------------------------------------------------------
# For a session's consumers


class LiveNeuralTime:
    """The recorder's live events and the Pi's sync edges, to a running mapping: what the pose
    engine stamps each pose and firing with. Feed the Pi's sync rising edges to
    :meth:`add_pi` and call :meth:`poll` often."""

    def __init__(self, ctx: zmq.Context, address: str, line: int, stream: str | None,
                 units: str) -> None:
        self.address = address
        self.units = units
        self.reader = OpenEphysEvents(ctx, address, line, stream)
        self.clock = LiveClock()

    def add_pi(self, t_ns: int) -> None:
        self.clock.add_pi(t_ns)

    def poll(self) -> None:
        for edge in self.reader.poll():
            self.clock.add_recorder(edge.sample_number, edge.sample_rate)

    def at(self, t_pi_ns: int) -> float | None:
        """``t_pi_ns`` on the recorder's clock, or None (not locked yet, or no pulse time)."""
        if t_pi_ns < 0:
            return None
        v = self.clock.to_neural(t_pi_ns)
        return None if math.isnan(v) else v

    def summary(self) -> dict[str, Any]:
        return {**self.clock.summary(), "address": self.address, "malformed": self.reader.malformed.total}

    def close(self) -> None:
        self.reader.close()


def live_neural_time(rig: Any, run: str, ctx: zmq.Context) -> LiveNeuralTime | None:
    """The rig's live neural time: the simulated recorder's stream, or a real recorder's Event
    Broadcaster (``neural_clock.events_address``); None when the rig has neither (or no sync line)."""
    nc = rig.neural_clock
    if nc is None or not nc.live or not rig.sync_line.enabled:
        return None
    address = nc.events_address or (rig.address("neural_events", run) if nc.kind == "sim" else None)
    if address is None:
        logger.info("neural clock: no live events address (neural_clock.events_address); neural time "
                    "only after the session")
        return None
    return LiveNeuralTime(ctx, address, nc.sync_input_line, nc.events_stream, nc.units)
