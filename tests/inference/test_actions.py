"""Rule actions on real ZeroMQ sockets: a TTL command that leaves at once and completes when the
trigger daemon answers, clip events with their window, published firings, firings.csv."""

from __future__ import annotations

import collections
import csv
import threading
import time
from pathlib import Path

import pytest
import zmq

from rigstream import protocol
from rigstream.inference import actions
from rigstream.inference.actions import ActionRunner, Chain
from rigstream.inference.rules import Firing, parse_rules
from rigstream.protocol import Command, Event, Pose3D, Reply
from rigstream.transport import bind_address, subscriber
from tests.conftest import small_rig

KP = ["snout", "paw"]


class FakeTrigger:
    """The daemon's REP control socket: answers ``ttl`` once the line is high, as the daemon does;
    with ``merge`` every TTL after the first joins the first pulse."""

    def __init__(self, ctx: zmq.Context, address: str, ok: bool = True) -> None:
        self.sock = ctx.socket(zmq.REP)
        self.sock.bind(bind_address(address))
        self.ok = ok
        self.merge = False
        self.received = threading.Event()
        self.commands: list[Command] = []
        self.edges: list[int] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(20):
                continue
            cmd = protocol.decode(self.sock.recv(), Command)
            t_edge = time.monotonic_ns()
            self.commands.append(cmd)
            self.edges.append(t_edge)
            self.received.set()
            # as the daemon: the reply comes once the line is high; a merged TTL names the
            # pulse already on the line (its edge came before this command)
            merged = len(self.edges) > 1 and self.merge
            n = len(self.edges) - 1 - merged
            reply = (Reply(ok=True, data={"index": n, "t_command_ns": t_edge,
                                          "t_edge_ns": self.edges[n], "merged": merged,
                                          "t_fall_due_ns": t_edge + round(cmd.args["width_ms"] * 1e6)})
                     if self.ok else Reply(ok=False, error="ttl: pins closed"))
            self.sock.send(protocol.encode(reply))

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close(linger=0)


def rules(actions_yaml: str):
    when = "{in_box: {keypoint: paw, min: [0, 0, 0], max: [1, 1, 1]}}"
    return parse_rules(f"[{{name: reach, when: {when}, actions: {actions_yaml}}}]")


def firing_and_pose(rule_list, n: int = 40) -> tuple[Firing, Chain, Pose3D]:
    t = time.monotonic_ns()
    pose = Pose3D(seq=0, frameset_seq=n, trigger_index=n, t_pi_ns=t - 50_000_000, t_host_ns=t,
                  keypoints=KP, xyz=[[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]], error=[0.1, 0.1], ncams=[2, 2],
                  score=[0.9, 0.9])
    firing = Firing(rule="reach", trigger_index=n, t_pi_ns=pose.t_pi_ns, actions=rule_list[0].actions,
                    t_eval_ns=t + 1000)
    chain = Chain(t_pulse_ns=pose.t_pi_ns, t_frames_ns=t - 40_000_000, t_set_ns=t - 30_000_000,
                  t_pose2d_ns=t - 1_000_000, t_pose3d_ns=t, t_rule_ns=t + 1000, infer_ms=25.0)
    return firing, chain, pose


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def wait_for(what, cond, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def setup(zctx: zmq.Context, run_dir: str, tmp_path: Path):
    rig = small_rig()
    trigger = FakeTrigger(zctx, rig.address("trigger_control", run_dir))
    clips = zctx.socket(zmq.PULL)
    clips.bind(bind_address(rig.address("events", run_dir)))
    runner = ActionRunner(rig, run_dir, zctx, tmp_path, curve=None)
    events = subscriber(zctx, rig.address("rule_events", run_dir))
    assert runner.pub.wait_for_subscribers(1, 5)
    yield rig, trigger, clips, runner, events
    runner.close()
    trigger.close()
    clips.close()
    events.close()


def test_ttl_leaves_at_once_and_the_reply_completes_the_chain(setup, tmp_path: Path) -> None:
    _, trigger, clips, runner, events = setup
    firing, chain, pose = firing_and_pose(rules("[{ttl: {width_ms: 50}}, {clip: {pre_s: 2, post_s: 1}}, "
                                                "{event: {name: reach_event}}]"))
    runner.fire(firing, chain, pose)
    # The command is at the daemon without a call to poll(): fire() does not wait for it.
    assert trigger.received.wait(2)
    assert trigger.commands[0].args == {"width_ms": 50.0}
    clip = protocol.decode(clips.recv(), Event)
    assert clip.trigger_index == 40 and clip.data["clip"] == {"pre_s": 2.0, "post_s": 1.0}
    published = protocol.decode(events.recv(), Event)
    assert published.name == "reach_event" and published.data["rule"] == "reach"
    assert published.data["kind"] == "3d" and published.data["pose"]["xyz"] == pose.xyz
    assert set(published.data["chain_ms"]) == {"frames", "assemble", "pose2d", "pose3d", "rule"}
    assert runner.summary()["ttl_pending"] == 1
    wait_for("the TTL reply", lambda: (runner.poll(), runner.summary()["ttl_pending"] == 0)[1])
    s = runner.summary()
    assert s["firings"] == 1 and s["counts"]["ttl_done"] == 1 and s["pulse_to_ttl_ms"]["n"] == 1
    assert s["recent"][0]["steps_ms"]["ttl"] >= 0
    runner.close()
    (row,) = read_rows(tmp_path / "firings.csv")
    assert int(row["t_ttl_ns"]) == trigger.edges[0] and row["ttl_index"] == "0"
    assert row["actions"] == "ttl+clip+event" and row["ttl_error"] == ""
    assert float(row["total_ms"]) == pytest.approx((trigger.edges[0] - chain.t_pulse_ns) / 1e6, abs=1e-3)
    assert 0 < s["infer_share_of_pulse_to_ttl"] < 1


def test_a_ttl_merged_into_the_pulse_on_the_line_ends_its_chain_at_its_command(
        setup, tmp_path: Path) -> None:
    """Two rules on one pose, one TTL pin: the second TTL joins the first pulse. Its chain ends when
    its command arrived (the line was high then), not at the earlier rising edge."""
    _, trigger, _, runner, _ = setup
    trigger.merge = True
    for n in (40, 40):
        runner.fire(*firing_and_pose(rules("[{ttl: {width_ms: 10}}]"), n=n))
    wait_for("both replies", lambda: (runner.poll(), runner.summary()["ttl_pending"] == 0)[1])
    runner.close()
    first, second = read_rows(tmp_path / "firings.csv")
    assert (first["ttl_merged"], second["ttl_merged"]) == ("0", "1")
    assert first["ttl_index"] == second["ttl_index"] == "0"
    assert int(first["t_ttl_ns"]) == trigger.edges[0]
    assert int(second["t_ttl_ns"]) == int(second["t_ttl_command_ns"]) == trigger.edges[1]
    assert int(second["t_ttl_fall_due_ns"]) == trigger.edges[1] + 10_000_000


def test_the_bench_splits_each_firings_overhead_into_its_queued_and_unqueued_parts(
        setup, tmp_path: Path) -> None:
    """firings.csv's queued_ms, written by the runner, read back by the closed-loop bench: overhead
    is pulse -> TTL minus the camera and inference, and the queued part comes off it."""
    from rigstream.app.bench import QUEUED_MS, firing_overheads

    _, trigger, _, runner, _ = setup
    sent = []
    for n, queued in ((10, 0.0), (20, 3.0), (30, QUEUED_MS / 2)):
        firing, chain, pose = firing_and_pose(rules("[{ttl: {width_ms: 1}}]"), n=n)
        chain.queued_ms = queued
        runner.fire(firing, chain, pose)
        sent.append(chain)
        wait_for("the TTL reply", lambda: (runner.poll(), runner.summary()["ttl_pending"] == 0)[1])
    runner.close()
    rows = read_rows(tmp_path / "firings.csv")
    assert [float(r["queued_ms"]) for r in rows] == [0.0, 3.0, QUEUED_MS / 2]
    totals = [(edge - c.t_pulse_ns) / 1e6 for edge, c in zip(trigger.edges, sent, strict=True)]
    overheads = [t - (c.t_frames_ns - c.t_pulse_ns) / 1e6 - c.infer_ms
                 for t, c in zip(totals, sent, strict=True)]
    o = firing_overheads(tmp_path)
    assert o["pulse_to_ttl_ms"]["n"] == o["overhead_ms"]["n"] == o["overhead_unqueued_ms"]["n"] == 3
    assert o["queued_firings"] == 1  # only the 3 ms wait is over the threshold
    assert o["overhead_ms"]["max"] == pytest.approx(max(overheads), abs=2e-3)
    unqueued = [ov - c.queued_ms for ov, c in zip(overheads, sent, strict=True)]
    assert o["overhead_unqueued_ms"]["max"] == pytest.approx(max(unqueued), abs=2e-3)
    assert o["queued_ms"]["max"] == 3.0


def test_a_refused_ttl_is_recorded_and_one_without_any_ttl_is_done_at_once(
        zctx: zmq.Context, run_dir: str, tmp_path: Path) -> None:
    rig = small_rig()
    trigger = FakeTrigger(zctx, rig.address("trigger_control", run_dir), ok=False)
    runner = ActionRunner(rig, run_dir, zctx, tmp_path)
    try:
        runner.fire(*firing_and_pose(rules("[{ttl: {width_ms: 1}}]"), n=10))
        runner.fire(*firing_and_pose(rules("[{event: {}}]"), n=20))  # no TTL: recorded at once
        assert runner.summary()["firings"] == 2 and runner.finished == 1
        wait_for("the refusal", lambda: (runner.poll(), runner.summary()["ttl_pending"] == 0)[1])
        assert runner.summary()["counts"]["ttl_refused"] == 1
    finally:
        runner.close()
        trigger.close()
    rows = read_rows(tmp_path / "firings.csv")
    assert [r["trigger_index"] for r in rows] == ["20", "10"]
    assert rows[1]["ttl_error"] == "ttl: pins closed" and rows[1]["t_ttl_ns"] == ""


def test_a_silent_trigger_daemon_is_given_up_on_and_a_restart_appends(
        zctx: zmq.Context, run_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actions, "TTL_REPLY_TIMEOUT_S", 0.2)
    rig = small_rig()
    runner = ActionRunner(rig, run_dir, zctx, tmp_path)  # nobody at the control address
    runner.fire(*firing_and_pose(rules("[{ttl: {width_ms: 1}}]"), n=7))
    wait_for("the TTL to be given up", lambda: (runner.poll(), runner.summary()["ttl_pending"] == 0)[1])
    assert runner.summary()["counts"]["ttl_lost"] == 1
    runner.close()
    again = ActionRunner(rig, run_dir, zctx, tmp_path)  # a restarted pose engine
    again.fire(*firing_and_pose(rules("[{event: {}}]"), n=9))
    again.close()
    text = (tmp_path / "firings.csv").read_text()
    assert text.count("trigger_index") == 1
    rows = read_rows(tmp_path / "firings.csv")
    assert [r["trigger_index"] for r in rows] == ["7", "9"]
    assert "no reply within 0.2 s" in rows[0]["ttl_error"]


def test_a_long_session_of_firings_keeps_the_runner_in_fixed_memory(
        zctx: zmq.Context, run_dir: str, tmp_path: Path) -> None:
    """Hours of firings: nothing kept per firing grows (the step statistics are fixed-size
    samples), and the summary still counts and times every firing."""
    runner = ActionRunner(small_rig(), run_dir, zctx, tmp_path)
    n = 300
    try:
        for i in range(n):
            firing, chain, pose = firing_and_pose(rules("[{event: {}}]"), n=i)
            runner.fire(firing, chain, pose)
        kept = {k: len(v) for k, v in vars(runner).items() if isinstance(v, (list, dict, collections.deque))}
        assert max(kept.values()) <= runner.recent.maxlen, kept
        s = runner.summary()
        assert runner.finished == s["firings"] == s["pulse_to_action_ms"]["n"] == n
        assert s["steps_ms"]["rule"]["n"] == s["infer_ms"]["n"] == n and s["pulse_to_ttl_ms"]["n"] == 0
        assert s["steps_ms"]["ttl"] == {"p50": None, "p99": None, "max": None, "n": 0}
        assert s["steps_ms"]["rule"]["max"] == pytest.approx(chain.steps_ms()["rule"], abs=1e-3)
    finally:
        runner.close()
    assert len(read_rows(tmp_path / "firings.csv")) == n
