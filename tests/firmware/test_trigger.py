"""The trigger daemon over real ZeroMQ sockets (ipc), driving SimPins.

Timing assertions are about the schedule (regression of pulse times on index, medians), not
single pulses: the test machine is shared and a descheduled thread can be late by
milliseconds now and then.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import zmq
from scipy.stats import theilslopes

from rigstream import protocol, transport
from rigstream.config import ConfigError
from rigstream.firmware.pins import SimPins
from rigstream.firmware.trigger import TriggerDaemon, run_trigger
from rigstream.protocol import Command, Pulse

from .conftest import DaemonHarness, make_rig, wait_for

Harness = Callable[..., DaemonHarness]


def receive(
    sock: zmq.Socket, n: int, timeout_ms: int = 2000, line: str | None = None
) -> list[Pulse]:
    """``n`` messages (or fewer if the stream goes quiet for ``timeout_ms``); with ``line``
    only those of that line are kept and counted."""
    got = []
    while len(got) < n and sock.poll(timeout_ms):
        msg = protocol.decode(sock.recv(), Pulse)
        if line is None or msg.line == line:
            got.append(msg)
    return got


def schedule_fit(
    index: np.ndarray, t_ns: np.ndarray, period_ns: int, block: int = 20
) -> tuple[float, np.ndarray]:
    """Slope (ns per index) of the schedule the pulses keep, and every pulse's residual (ns).

    The OS may hold the thread up at any time, and on a shared machine it does so for whole
    stretches, which tilts even a robust fit through all pulses. A pulse is never early, so
    the schedule is the lower envelope: in each block of ``block`` pulses the one least behind
    a nominal grid. Theil-Sen through those points gives the slope; with absolute deadlines it
    is the period, while a scheduler that adds each pulse's lateness to the next drifts away.
    """
    y = (t_ns - t_ns[0]).astype(float)
    behind = y - index * float(period_ns)
    picks = [
        start + int(np.argmin(behind[start : start + block]))
        for start in range(0, len(y) - block + 1, block)
    ]
    slope, intercept, _, _ = theilslopes(y[picks], index[picks].astype(float))
    return float(slope), y - (intercept + slope * index)


def test_pulse_train_arrives_in_order_on_schedule(harness: Harness) -> None:
    sync = {"min_interval_s": 0.02, "max_interval_s": 0.05, "pulse_width_ms": 2.0, "seed": 7}
    h = harness(make_rig(rate_hz=200, sync=sync))
    sub = h.pulses()

    started = h.ok("start", duration_s=0.5)
    assert started["period_ns"] == 5_000_000
    assert h.ok("status")["running"] is True
    assert h.daemon.wait(3.0)
    stopped = h.ok("stop")
    status = h.ok("status")
    msgs = receive(sub, 2 * (status["pulses_sent"] + status["sync_pulses_sent"]))

    camera = [m for m in msgs if m.line == "camera"]
    sync_pulses = [m for m in msgs if m.line == "sync"]
    assert {m.line for m in msgs} == {"camera", "camera-fall", "sync", "sync-fall"}
    index = np.array([m.index for m in camera])
    t = np.array([m.t_pi_ns for m in camera], dtype=np.int64)
    assert index.tolist() == list(range(100))  # ceil(0.5 s * 200 Hz), no gaps, in order
    assert stopped["pulses_sent"] == status["pulses_sent"] == 100
    assert status["running"] is False
    assert status["sync_pulses_sent"] == len(sync_pulses) > 0
    assert [m.index for m in sync_pulses] == list(range(len(sync_pulses)))

    # Absolute deadlines: the schedule's slope is the period, pulses sit on it.
    slope, residual = schedule_fit(index, t, 5_000_000)
    assert slope == pytest.approx(5_000_000, rel=1e-3)
    assert np.median(np.abs(residual)) < 1_000_000
    late = t - (started["t0_ns"] + index * 5_000_000)
    assert np.all(late >= 0)
    assert np.median(late) < 2_000_000
    assert status["late_median_us"] == pytest.approx(np.median(late) / 1000, abs=0.01)
    assert status["late_p99_us"] <= status["late_max_us"] == pytest.approx(late.max() / 1000)

    # The published times are the edges' times on the pin.
    edges = h.pins.edges(18)
    assert isinstance(h.pins, SimPins)
    assert edges[0::2, 1].tolist() == [1] * 100 and edges[1::2, 1].tolist() == [0] * 100
    assert edges[0::2, 0].tolist() == t.tolist()
    # So are the falling edges', each with the index of the pulse it ends.
    falls = [m for m in msgs if m.line == "camera-fall"]
    assert [m.index for m in falls] == list(range(100))
    assert [m.t_pi_ns for m in falls] == edges[1::2, 0].tolist()
    width = edges[1::2, 0] - edges[0::2, 0]
    assert np.all(width >= 100_000)
    assert np.median(width) < 1_000_000

    # Sync pulses: intervals drawn from the seeded generator, never shorter than drawn.
    t_sync = np.array([m.t_pi_ns for m in sync_pulses], dtype=np.int64)
    interval = np.diff(t_sync)
    drawn = np.round(np.random.default_rng(7).uniform(0.02, 0.05, 256) * 1e9)[1 : len(t_sync)]
    assert np.all(interval >= 20_000_000)
    assert np.all(interval >= drawn)
    assert np.median(interval - drawn) < 2_000_000
    assert np.all(interval <= 50_000_000 + 50_000_000)  # max_interval_s, plus a stall
    sync_edges = h.pins.edges(23)
    assert sync_edges[0::2, 0].tolist() == t_sync.tolist()
    sync_falls = [m for m in msgs if m.line == "sync-fall"]
    assert [m.index for m in sync_falls] == list(range(len(sync_pulses)))
    assert [m.t_pi_ns for m in sync_falls] == sync_edges[1::2, 0].tolist()
    assert np.all(sync_edges[1::2, 0] - sync_edges[0::2, 0] >= 2_000_000)


def test_deadlines_do_not_accumulate_error_at_1khz(harness: Harness) -> None:
    h = harness(make_rig(rate_hz=1000, sync={"enabled": False}))
    h.ok("start", max_pulses=400)
    assert h.daemon.wait(3.0)
    rises = h.pins.edges(18)[0::2, 0]  # type: ignore[attr-defined]
    assert len(rises) == 400

    slope, residual = schedule_fit(np.arange(400), rises, 1_000_000)
    assert slope == pytest.approx(1_000_000, rel=1e-3)
    # The schedule (the least-late pulse of every block of 20) lies on that line. Not every
    # pulse does: on a loaded machine the thread can be held up for tens of milliseconds and
    # the pulses after it catch up late (a CI run saw the median pulse 22.6 ms behind).
    # The test is that it is a line, not where the fit put it: once under full-suite load every
    # block's least-late pulse sat 79.23 ms (+-1 us) below the fitted line, a constant offset.
    envelope = residual.reshape(-1, 20).min(axis=1)
    assert np.median(np.abs(envelope - np.median(envelope))) < 1_000_000


class StallingPins(SimPins):
    """SimPins whose write of one rising edge on pin 18 hangs, as a descheduled thread would."""

    def __init__(self, stall_at: int, stall_s: float) -> None:
        super().__init__()
        self.stall_at = stall_at
        self.stall_s = stall_s

    def _do_write(self, pin: int, level: int) -> None:
        if pin == 18 and level and self.rising_edges(18) == self.stall_at:
            time.sleep(self.stall_s)


def test_a_stall_delays_pulses_but_skips_none_and_leaves_no_offset(
    run_dir: str, ctx: zmq.Context
) -> None:
    rig = make_rig(rate_hz=1000, sync={"enabled": False})
    with (
        StallingPins(stall_at=100, stall_s=0.02) as pins,
        TriggerDaemon(rig, pins, ctx, run_dir) as daemon,
    ):
        t0 = daemon.start(max_pulses=300)
        assert daemon.wait(3.0)
        status = daemon.status()
        edges = pins.edges(18)

    rises, falls = edges[0::2, 0], edges[1::2, 0]
    assert len(rises) == len(falls) == 300 == status["pulses_sent"]  # no index skipped
    late = rises - (t0 + np.arange(300) * 1_000_000)
    assert late[100] >= 20_000_000
    assert status["late_max_us"] >= 20_000 and status["overruns"] >= 1
    # Pulses owed during the stall go out at once, each still low for >= the pulse width...
    assert np.all(rises[1:] - falls[:-1] >= 100_000)
    assert np.all(falls - rises >= 100_000)
    # ...and then the train is back on its absolute schedule: the stall left no offset. (The
    # least-late pulse, not the median: on a loaded machine the OS once held the thread up again
    # for ~50 ms near pulse 200, and the pulses after it were catching up at the end.)
    assert np.min(late[-100:]) < 1_000_000


def test_edges_reach_simulated_cameras(harness: Harness, ctx: zmq.Context) -> None:
    h = harness(make_rig(rate_hz=500, sync={"enabled": False}))
    line = transport.subscriber(ctx, h.rig.address("sim_lines", h.run, line="trigger"))
    wait_for(lambda: h.ok("status")["line_subscribers"]["trigger"] == 1, what="line sub")
    h.ok("start", max_pulses=20)
    assert h.daemon.wait(2.0)
    edges = []
    while len(edges) < 40 and line.poll(1000):
        edges.append(protocol.decode(line.recv(), protocol.Edge))
    assert [(e.level, e.truth_index) for e in edges] == [
        (level, k) for k in range(20) for level in (1, 0)
    ]
    assert [[e.t_ns, e.level] for e in edges] == h.pins.edges(18).tolist()  # type: ignore[attr-defined]


def test_stop_midway_and_double_start(harness: Harness) -> None:
    h = harness(make_rig(rate_hz=500, sync={"enabled": False}))
    sub = h.pulses()
    h.ok("start")
    first = receive(sub, 20, line="camera")
    assert [m.index for m in first] == list(range(20))

    again = h.request("start", max_pulses=3)
    assert not again.ok and "already running" in again.error
    assert h.ok("status")["running"] is True

    sent = h.ok("stop")["pulses_sent"]
    rest = receive(sub, sent, timeout_ms=300, line="camera")
    assert [m.index for m in first + rest] == list(range(sent))
    assert h.ok("status")["running"] is False
    assert h.pins.level(18) == 0  # a stop never leaves the trigger line high

    # A new train starts from index 0.
    h.ok("start", max_pulses=3)
    assert h.daemon.wait(2.0)
    assert [m.index for m in receive(sub, 3, line="camera")] == [0, 1, 2]


def test_ttl_answers_once_the_line_is_high_and_a_ttl_on_a_high_line_joins_its_pulse(
        harness: Harness) -> None:
    h = harness(make_rig())
    data = h.ok("ttl", width_ms=500.0)
    assert data["merged"] is False and data["index"] == 0
    assert data["t_command_ns"] <= data["t_edge_ns"]
    assert data["t_fall_due_ns"] == data["t_edge_ns"] + 500_000_000
    # the control socket is not held for the width: status and a second TTL are answered at once
    assert h.pins.level(24) == 1 and h.ok("status")["ttl_pulses"] == 1
    joined = h.ok("ttl", width_ms=1.0)
    assert joined["merged"] is True and joined["index"] == 0
    assert joined["t_edge_ns"] == data["t_edge_ns"] < joined["t_command_ns"]
    assert joined["t_fall_due_ns"] == data["t_fall_due_ns"]  # 1 ms from now ends before the first
    wait_for(lambda: h.pins.level(24) == 0, timeout_s=5.0, what="the falling edge")
    (t_rise, up), (t_fall, down) = h.pins.edges(24).tolist()  # type: ignore[attr-defined]
    assert (up, down) == (1, 0) and t_rise == data["t_edge_ns"]
    assert t_fall >= data["t_fall_due_ns"]
    status = h.ok("status")
    assert (status["ttl_pulses"], status["ttl_merged"]) == (1, 1)
    again = h.ok("ttl")  # default width 1 ms, on a low line: a pulse of its own
    assert again["merged"] is False and again["index"] == 1
    bad = h.request("ttl", width_ms=0)
    assert not bad.ok and "width_ms" in bad.error


def test_a_ttl_that_joins_the_pulse_keeps_the_line_high_for_its_own_width(harness: Harness) -> None:
    h = harness(make_rig())
    first = h.ok("ttl", width_ms=100.0)  # long enough that the second comes while it is high
    later = h.ok("ttl", width_ms=300.0)
    assert later["merged"] is True and later["t_fall_due_ns"] >= later["t_command_ns"] + 300_000_000
    wait_for(lambda: h.pins.level(24) == 0, timeout_s=5.0, what="the falling edge")
    (rise, _), (fall, _) = h.pins.edges(24).tolist()  # type: ignore[attr-defined]
    assert rise == first["t_edge_ns"] and fall >= later["t_fall_due_ns"]


def test_malformed_requests_get_an_answer(harness: Harness, ctx: zmq.Context) -> None:
    h = harness(make_rig())
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(h.control)

    def raw(*parts: bytes) -> protocol.Reply:
        sock.send_multipart(list(parts))
        assert sock.poll(2000), "the daemon did not answer"
        return protocol.decode(sock.recv(), protocol.Reply)

    for parts in (
        [b"\xc1 not msgpack"],
        [protocol.encode(Pulse(index=0, t_pi_ns=0))],
        [protocol.encode(Command(cmd="status")), b"extra"],
    ):
        reply = raw(*parts)
        assert not reply.ok and reply.error.startswith("malformed request")
    sock.close()

    unknown = h.request("fire")
    assert not unknown.ok and "unknown command 'fire'" in unknown.error
    bad_args = h.request("start", max_pulses=-3)
    assert not bad_args.ok and "args.max_pulses" in bad_args.error
    extra = h.request("start", rate_hz=5)
    assert not extra.ok and "rate_hz" in extra.error

    status = h.ok("status")
    assert status["malformed"] == 3
    assert status["running"] is False
    assert h.daemon.malformed.as_dict() == {"undecodable": 1, "unexpected-type": 1, "invalid": 1}


def test_shutdown_and_stop_event_end_serve(
    harness: Harness, run_dir: str, ctx: zmq.Context
) -> None:
    h = harness(make_rig())
    h.ok("start")
    assert h.ok("shutdown")["pulses_sent"] >= 0
    h.thread.join(2.0)
    assert not h.thread.is_alive()
    assert not h.daemon.running

    rig = make_rig()
    with SimPins() as pins, TriggerDaemon(rig, pins, ctx, run_dir + "/b") as daemon:
        stop = threading.Event()
        thread = threading.Thread(target=daemon.serve, args=(stop,))
        thread.start()
        daemon.start()
        stop.set()
        thread.join(2.0)
        assert not thread.is_alive() and not daemon.running


def test_run_trigger_serves_until_stopped(run_dir: str, ctx: zmq.Context) -> None:
    rig = make_rig(rate_hz=500, sync={"enabled": False})
    stop = threading.Event()
    thread = threading.Thread(
        target=run_trigger, args=(rig, run_dir), kwargs={"stop": stop, "autostart": True}
    )
    thread.start()
    try:
        control = rig.address("trigger_control", run_dir)
        status = wait_for(
            lambda: transport.request(ctx, control, Command(cmd="status")).data, what="daemon up"
        )
        assert status["running"] is True
        wait_for(
            lambda: transport.request(ctx, control, Command(cmd="status")).data["pulses_sent"] > 10,
            what="pulses",
        )
    finally:
        stop.set()
        thread.join(3.0)
    assert not thread.is_alive()


def test_daemon_refuses_two_roles_on_one_pin(run_dir: str, ctx: zmq.Context) -> None:
    with SimPins() as pins, pytest.raises(ConfigError, match=r"sync_line\.pin: pin 18"):
        TriggerDaemon(make_rig(sync={"pin": 18}), pins, ctx, run_dir)
