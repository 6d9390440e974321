"""What the pose engine does when a rule fires, without ever waiting on the pose loop.

For each :class:`~rigstream.inference.rules.Firing`, :meth:`ActionRunner.fire`:

- ``ttl``: sends the trigger daemon a ``ttl`` command on a DEALER socket (the daemon's REP socket
  answers it like a REQ), so the command leaves at once and the reply (which the daemon sends
  once the line is high) is collected on a later turn of the loop (:meth:`ActionRunner.poll`).
  A TTL that the daemon merged into a pulse already on the line (two rules firing on one pose)
  ends its chain when its command arrived: the line was high then;
- ``clip``: pushes an :class:`~rigstream.protocol.Event` to the ring buffer, whose ``data["clip"]``
  asks for exactly ``[n - pre, n + post]`` around the firing's pulse ``n``;
- every firing is published on ``transport.rule_events`` as an Event (named by its ``event``
  action, else by the rule) with the latency chain so far and, with an ``event`` action, the pose.

Every firing is timed step by step on one clock (the host's monotonic clock; the simulated
trigger daemon's and, on one host, the Pi's): trigger pulse -> last camera frame in -> frame set
in the pose engine -> Pose2D -> Pose3D -> rule decision -> TTL rising edge. ``firings.csv`` holds
one row per firing; :meth:`ActionRunner.summary` the p50/p99/max of each step.

With a real Raspberry Pi the pulse and the TTL edge are both on the Pi's clock, so pulse -> TTL
is exact; the host steps between them are on the host's clock, whose offset to the Pi's is not
removed here (the steps are then exact only as differences within one clock).
"""

from __future__ import annotations

import collections
import csv
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from rigstream import protocol
from rigstream.config import RigConfig
from rigstream.inference.rules import Firing
from rigstream.latency import LatencySamples, latency_stats
from rigstream.protocol import Command
from rigstream.transport import CurveClientKeys, Publisher

logger = logging.getLogger(__name__)

STEPS = ("frames", "assemble", "pose2d", "pose3d", "rule", "ttl")
"""The steps of a firing's chain: pulse -> frames in (the set's last camera frame), -> the set in
the pose engine, -> Pose2D, -> Pose3D (3D rules), -> the rule's decision, -> the TTL edge."""

TTL_REPLY_TIMEOUT_S = 2.0
"""A TTL command without a reply this long is counted as lost (the daemon is gone or busy)."""

COLUMNS = ("rule", "trigger_index", "t_pi_ns", "actions", "t_frames_ns", "t_set_ns", "t_pose2d_ns",
           "t_pose3d_ns", "t_rule_ns", "ttl_index", "ttl_merged", "t_ttl_command_ns", "t_ttl_ns",
           "t_ttl_fall_due_ns", *(f"{s}_ms" for s in STEPS), "infer_ms", "queued_ms", "total_ms",
           "ttl_error", "outputs")
"""``t_ttl_ns``: when this firing's TTL line was high: the pulse's rising edge, or for a TTL
merged into a pulse already on the line (``ttl_merged`` 1), its command's arrival. The falling
edge's own time is in ``pulses.csv`` (line ``ttl-fall``, index ``ttl_index``). ``outputs``: the
named outputs the firing started, ``name:index`` (their edges are in ``pulses.csv`` as
``out:name``); a refused one is in ``ttl_error``."""


@dataclass
class Chain:
    """One firing's times, ns on the host's monotonic clock (-1: not applicable or unknown)."""

    t_pulse_ns: int
    t_frames_ns: int
    t_set_ns: int
    t_pose2d_ns: int
    t_pose3d_ns: int
    t_rule_ns: int
    infer_ms: float = float("nan")
    queued_ms: float = float("nan")
    """Of ``assemble``: how long the set was complete in the stores while the engine was still
    busy with the set before it (queued behind that set's inference), not waiting for sets."""
    t_ttl_ns: int = -1
    ttl: dict[str, Any] = field(default_factory=dict)
    ttl_error: str = ""
    outputs: list[str] = field(default_factory=list)
    t_neural: float | None = None
    """The firing's pulse on the neural recorder's clock, mapped live."""

    def steps_ms(self) -> dict[str, float]:
        """Each step's duration (ms); a step with an unknown end is left out, a skipped one
        (``pose3d`` for a 2D rule) counts from the previous known time."""
        marks = [("frames", self.t_frames_ns), ("assemble", self.t_set_ns),
                 ("pose2d", self.t_pose2d_ns), ("pose3d", self.t_pose3d_ns),
                 ("rule", self.t_rule_ns), ("ttl", self.t_ttl_ns)]
        out: dict[str, float] = {}
        last = self.t_pulse_ns
        for name, t in marks:
            if t < 0 or last < 0:
                continue
            out[name] = round((t - last) / 1e6, 4)
            last = t
        return out

    @property
    def t_action_ns(self) -> int:
        """When the last action was done: the TTL edge, else the decision."""
        return self.t_ttl_ns if self.t_ttl_ns >= 0 else self.t_rule_ns

    def total_ms(self) -> float:
        if self.t_pulse_ns < 0:
            return float("nan")
        return (self.t_action_ns - self.t_pulse_ns) / 1e6


@dataclass
class _Pending:
    firing: Firing
    chain: Chain
    expect: collections.deque[str]
    """The replies still to come, in the order their commands went (``ttl``, ``output``)."""
    t_sent: float


class ActionRunner:
    """Carries out rule firings for the pose engine: TTL commands, clip events, rule events."""

    def __init__(self, rig: RigConfig, run: str, ctx: zmq.Context, out: Path | None,
                 curve: CurveClientKeys | None = None, neural_column: str | None = None) -> None:
        self.rig = rig
        self.neural_column = neural_column
        """firings.csv's column of the live neural time (None: no column)."""
        self.fps = rig.trigger.rate_hz
        self.pub = Publisher(ctx, rig.address("rule_events", run), hwm=1000)
        self.clips = ctx.socket(zmq.PUSH)
        self.clips.setsockopt(zmq.LINGER, 2000)
        self.clips.setsockopt(zmq.SNDHWM, 1000)
        self.clips.connect(rig.address("events", run))
        self.ttl_sock: zmq.Socket | None = None
        self._ttl_address = rig.address("trigger_control", run)
        self._curve = curve
        self._ctx = ctx
        self._pending: collections.deque[_Pending] = collections.deque()
        self.finished = 0
        """Firings done (their chain complete or given up on): a row of firings.csv each."""
        self._step_ms = {s: LatencySamples() for s in STEPS}
        """Each finished firing's steps, kept as they finish (the summary runs every heartbeat), in
        fixed memory: a rule that fires every few frames for hours must not grow the engine."""
        self._total_ms = LatencySamples()
        self._ttl_total_ms = LatencySamples()
        self._infer_ms = LatencySamples()
        self._infer_share = LatencySamples()
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        self.counts: collections.Counter[str] = collections.Counter()
        self.malformed = protocol.MalformedCounter("rule actions (ttl replies)")
        self._file = self._csv = None
        self._closed = False
        if out is not None:
            path = Path(out) / "firings.csv"
            fresh = not path.is_file() or path.stat().st_size == 0  # a restarted engine appends
            self._file = open(path, "w" if fresh else "a", newline="")  # noqa: SIM115 (close())
            self._csv = csv.writer(self._file)
            if fresh:
                self._csv.writerow([*COLUMNS, *([neural_column] if neural_column else [])])

    # -- on the pose loop ------------------------------------------------------------------------

    def fire(self, firing: Firing, chain: Chain, pose: protocol.Pose3D | protocol.Pose2D | None) -> None:
        """Carry out ``firing``'s actions now (TTL first: it is the latency-critical one; then the
        named outputs). ``pose`` is None for a rule fired by an input's edge."""
        expect: collections.deque[str] = collections.deque()
        commands: list[tuple[str, dict[str, Any]]] = [("ttl", {"width_ms": a.ttl.width_ms})
                                                      for a in firing.actions if a.ttl is not None]
        for a in firing.actions:
            if a.output is not None:
                o = a.output
                args: dict[str, Any] = {"name": o.name, "width_ms": o.width_ms, "count": o.count}
                if o.rate_hz is not None:
                    args["rate_hz"] = o.rate_hz
                commands.append(("output", args))
        for cmd, args in commands:
            if self._send(cmd, args):
                expect.append(cmd)
            else:
                chain.ttl_error = f"{cmd} command not sent (the trigger daemon is not taking commands)"
        clip = next((a.clip for a in firing.actions if a.clip is not None), None)
        event = firing.event()
        event.data["kind"] = ("input" if pose is None else "3d" if isinstance(pose, protocol.Pose3D)
                              else "2d")
        event.data["chain_ms"] = chain.steps_ms()
        if pose is not None and any(a.event is not None for a in firing.actions):
            event.data["pose"] = _pose_data(pose)
        if clip is not None:
            event.data["clip"] = {"pre_s": clip.pre_s, "post_s": clip.post_s}
            try:
                self.clips.send(protocol.encode(event), zmq.NOBLOCK)
                self.counts["clips_requested"] += 1
            except zmq.Again:
                self.counts["clips_not_sent"] += 1
                logger.error("rule %s: clip event for pulse %d not sent (ring buffer not taking events)",
                             firing.rule, firing.trigger_index)
        self.pub.send(event)
        self.counts["firings"] += 1
        pending = _Pending(firing, chain, expect, time.monotonic())
        if expect:
            self._pending.append(pending)
        else:
            self._finish(pending)

    def _send(self, cmd: str, args: dict[str, Any]) -> bool:
        """A command to the trigger daemon, without waiting; False if it could not be sent."""
        if self.ttl_sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 100)
            if self._curve is not None:
                self._curve.apply(sock)
            sock.connect(self._ttl_address)
            self.ttl_sock = sock
        request = protocol.encode(Command(cmd=cmd, args=args))
        try:  # an empty delimiter, then the request: what a REQ socket would send
            self.ttl_sock.send_multipart([b"", request], zmq.NOBLOCK)
            self.counts[f"{cmd}_sent"] += 1
            return True
        except zmq.Again:
            self.counts[f"{cmd}_not_sent"] += 1
            logger.error("rule %s not sent: the trigger daemon's control socket is not taking "
                         "commands", cmd)
            return False

    def poll(self) -> None:
        """Collect TTL replies (each completes the oldest firing waiting for one) and give up on
        those that waited longer than TTL_REPLY_TIMEOUT_S."""
        while self.ttl_sock is not None:
            try:
                parts = self.ttl_sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                reply = protocol.decode(parts[-1], protocol.Reply)
            except protocol.ProtocolError as err:
                self.malformed(err)
                reply = protocol.Reply(ok=False, error=str(err))
            if not self._pending:
                self.counts["ttl_replies_unexpected"] += 1
                continue
            p = self._pending[0]
            kind = p.expect.popleft()
            if kind == "output":
                if reply.ok:
                    p.chain.outputs.append(f"{reply.data.get('output')}:{reply.data.get('index')}")
                    self.counts["output_done"] += 1
                else:
                    p.chain.ttl_error = "; ".join(e for e in (p.chain.ttl_error, reply.error) if e)
                    self.counts["output_refused"] += 1
                    logger.error("rule %s: the trigger refused the output: %s", p.firing.rule, reply.error)
            elif reply.ok and p.chain.t_ttl_ns < 0:  # the first TTL's edge ends the chain
                key = "t_command_ns" if reply.data.get("merged") else "t_edge_ns"
                p.chain.t_ttl_ns = int(reply.data.get(key, -1))
                p.chain.ttl = dict(reply.data)
                self.counts["ttl_done"] += 1
            elif not reply.ok:
                p.chain.ttl_error = reply.error
                self.counts["ttl_refused"] += 1
                logger.error("rule %s: the trigger refused the TTL: %s", p.firing.rule, reply.error)
            if not p.expect:
                self._finish(self._pending.popleft())
        now = time.monotonic()
        while self._pending and now - self._pending[0].t_sent > TTL_REPLY_TIMEOUT_S:
            p = self._pending.popleft()
            p.chain.ttl_error = f"no reply within {TTL_REPLY_TIMEOUT_S:g} s"
            self.counts["ttl_lost"] += 1
            logger.error("rule %s (pulse %d): no TTL reply from the trigger daemon within %g s",
                         p.firing.rule, p.firing.trigger_index, TTL_REPLY_TIMEOUT_S)
            self._finish(p)
            if self.ttl_sock is not None:  # replies that come later would pair with the wrong firing
                self.ttl_sock.close()
                self.ttl_sock = None
                for q in self._pending:
                    q.chain.ttl_error = "TTL command dropped when the trigger stopped answering"
                while self._pending:
                    self._finish(self._pending.popleft())

    def _finish(self, p: _Pending) -> None:
        c, f = p.chain, p.firing
        self.finished += 1
        steps = c.steps_ms()
        total = c.total_ms()
        for s, v in steps.items():
            self._step_ms[s].append(v)
        self._total_ms.append(total)
        self._infer_ms.append(c.infer_ms)
        if c.t_ttl_ns >= 0 and c.t_pulse_ns >= 0:
            self._ttl_total_ms.append(total)
            if np.isfinite(c.infer_ms) and total > 0:
                self._infer_share.append(c.infer_ms / total)
        self.recent.append({"rule": f.rule, "trigger_index": f.trigger_index,
                            "actions": [a.kind for a in f.actions], "steps_ms": steps,
                            "total_ms": round(total, 3), "ttl_error": c.ttl_error})
        if self._csv is not None:
            ttl = c.ttl
            self._csv.writerow([
                f.rule, f.trigger_index, f.t_pi_ns, "+".join(a.kind for a in f.actions), c.t_frames_ns,
                c.t_set_ns, c.t_pose2d_ns, c.t_pose3d_ns, c.t_rule_ns, ttl.get("index", ""),
                int(ttl["merged"]) if "merged" in ttl else "", ttl.get("t_command_ns", ""),
                c.t_ttl_ns if c.t_ttl_ns >= 0 else "", ttl.get("t_fall_due_ns", ""),
                *(steps.get(s, "") for s in STEPS), _fmt(c.infer_ms), _fmt(c.queued_ms), _fmt(total),
                c.ttl_error, " ".join(c.outputs),
                *([] if self.neural_column is None else ["" if c.t_neural is None else f"{c.t_neural:.3f}"])])

    def flush(self) -> None:
        """Hand firings.csv's buffered rows to the OS (the pose engine calls this on its flush
        schedule, so a killed engine loses at most that interval of firings)."""
        if self._file is not None:
            self._file.flush()

    # -- reporting -------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        share = self._infer_share.values()
        return {
            "firings": self.counts["firings"],
            "counts": dict(self.counts),
            "pulse_to_ttl_ms": latency_stats(self._ttl_total_ms, count=True),
            "pulse_to_action_ms": latency_stats(self._total_ms, count=True),
            "steps_ms": {s: latency_stats(v, count=True) for s, v in self._step_ms.items()},
            "infer_ms": latency_stats(self._infer_ms, count=True),
            "infer_share_of_pulse_to_ttl": round(float(np.median(share)), 3) if share.size else None,
            "ttl_pending": len(self._pending),
            "recent": list(self.recent),
        }

    def close(self) -> None:
        """Wait briefly for outstanding TTL replies, record what is left, close the sockets."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + 0.5
        while self._pending and time.monotonic() < deadline:
            if self.ttl_sock is not None:
                self.ttl_sock.poll(20)
            self.poll()
        while self._pending:
            p = self._pending.popleft()
            p.chain.ttl_error = p.chain.ttl_error or "session ended before the TTL reply"
            self._finish(p)
        if self._file is not None:
            self._file.close()
            self._file = self._csv = None
        for sock in (self.ttl_sock, self.clips):
            if sock is not None:
                sock.close()
        self.ttl_sock = None
        self.pub.close()


def _fmt(v: float) -> str:
    return f"{v:.4f}" if np.isfinite(v) else ""


def _pose_data(pose: protocol.Pose3D | protocol.Pose2D) -> dict[str, Any]:
    if isinstance(pose, protocol.Pose3D):
        return {"keypoints": pose.keypoints, "xyz": pose.xyz, "score": pose.score}
    return {"keypoints": pose.keypoints, "views": pose.views}

