"""SimPins, the simulated pin backend, and make_pins."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from rigstream import protocol, transport
from rigstream.config import ConfigError
from rigstream.firmware.backends import make_pins
from rigstream.firmware.pins import PinError, SimPins

from .conftest import make_rig, wait_for


def test_log_and_edges_hold_every_write_in_order() -> None:
    with SimPins() as pins:
        pins.setup_output(18)
        pins.setup_output(24, initial=1)
        times = [pins.write(18, level) for level in (1, 0, 1, 0)]
        t_ttl = pins.write(24, 0)

        assert pins.log == [
            (times[0], 18, 1),
            (times[1], 18, 0),
            (times[2], 18, 1),
            (times[3], 18, 0),
            (t_ttl, 24, 0),
        ]
        edges = pins.edges(18)
        assert edges.dtype == np.int64 and edges.shape == (4, 2)
        assert edges[:, 1].tolist() == [1, 0, 1, 0]
        assert edges[:, 0].tolist() == times
        assert np.all(np.diff(edges[:, 0]) >= 0)
        assert pins.edges(24).tolist() == [[t_ttl, 0]]
        assert pins.edges(5).shape == (0, 2)
        assert pins.rising_edges(18) == 2
        assert pins.level(18) == 0


def test_write_returns_monotonic_time_taken_after_the_write() -> None:
    import time

    with SimPins() as pins:
        pins.setup_output(18)
        before = time.monotonic_ns()
        t = pins.write(18, True)
        assert before <= t <= time.monotonic_ns()
        assert pins.log[-1] == (t, 18, 1)  # truthy levels are written as 1


def test_writing_a_pin_not_set_up_names_the_pin() -> None:
    with SimPins() as pins:
        pins.setup_output(18)
        with pytest.raises(PinError, match=r"pin 5 is not set up as an output.*18"):
            pins.write(5, 1)
        assert pins.log == []


def test_bad_setup_arguments() -> None:
    with SimPins() as pins:
        with pytest.raises(ValueError, match="pin number"):
            pins.setup_output(-1)
        with pytest.raises(ValueError, match="initial level"):
            pins.setup_output(18, initial=2)


def test_close_is_idempotent_and_final() -> None:
    pins = SimPins()
    pins.setup_output(18)
    pins.close()
    pins.close()
    assert pins.closed
    with pytest.raises(PinError, match="closed"):
        pins.write(18, 1)
    with pytest.raises(PinError, match="closed"):
        pins.setup_output(19)


def test_edges_reach_a_subscriber_with_truth_index(run_dir: str, ctx: zmq.Context) -> None:
    address = f"ipc://{run_dir}/line-trigger"
    with SimPins({18: "trigger", 24: "ttl"}, ctx, {"trigger": address}) as pins:
        pins.setup_output(18)
        pins.setup_output(24)
        sub = transport.subscriber(ctx, address)
        wait_for(lambda: pins.subscribers() == {"trigger": 1}, what="line subscriber")
        times = [pins.write(18, level) for level in (1, 0, 1, 1, 0, 0, 1)]
        pins.write(24, 1)  # a line without an address: logged, not published

        got = []
        while sub.poll(200):
            got.append(protocol.decode(sub.recv(), protocol.Edge))
        # Repeated levels are no edge: nothing travels for them.
        assert [(e.line, e.level, e.truth_index) for e in got] == [
            ("trigger", 1, 0),
            ("trigger", 0, 0),
            ("trigger", 1, 1),
            ("trigger", 0, 1),
            ("trigger", 1, 2),
        ]
        assert [e.t_ns for e in got] == [times[0], times[1], times[2], times[4], times[6]]
        assert len(pins.log) == 8
        sub.close()


def test_falling_edge_before_any_rising_has_no_index(run_dir: str, ctx: zmq.Context) -> None:
    address = f"ipc://{run_dir}/line-sync"
    with SimPins({23: "sync"}, ctx, {"sync": address}) as pins:
        pins.setup_output(23, initial=1)
        sub = transport.subscriber(ctx, address)
        wait_for(lambda: pins.subscribers()["sync"] == 1, what="line subscriber")
        pins.write(23, 0)
        assert sub.poll(1000)
        edge = protocol.decode(sub.recv(), protocol.Edge)
        assert (edge.level, edge.truth_index) == (0, -1)
        sub.close()


def test_sim_pins_argument_errors(ctx: zmq.Context) -> None:
    with pytest.raises(ValueError, match=r"zmq\.Context"):
        SimPins({18: "trigger"}, None, {"trigger": "inproc://x"})
    with pytest.raises(ValueError, match=r"\['strobe'\]"):
        SimPins({18: "trigger"}, ctx, {"strobe": "inproc://x"})
    with pytest.raises(ValueError, match="unique"):
        SimPins({18: "trigger", 19: "trigger"})


def test_log_limit_keeps_the_newest_writes() -> None:
    with SimPins(log_limit=10) as pins:
        pins.setup_output(18)
        for i in range(25):
            pins.write(18, i % 2)
        assert len(pins.log) <= 10
        assert pins.log[-1][2] == 0  # the 25th write (i = 24)
        assert pins.rising_edges(18) == 12


def test_make_pins_sim_publishes_the_rig_lines(run_dir: str, ctx: zmq.Context) -> None:
    rig = make_rig()
    with make_pins(rig, run_dir, ctx) as pins:
        assert isinstance(pins, SimPins)
        assert pins.lines == {18: "trigger", 23: "sync", 24: "ttl"}
        assert pins.subscribers() == {"trigger": 0, "sync": 0, "ttl": 0}
        sub = transport.subscriber(ctx, rig.address("sim_lines", run_dir, line="sync"))
        wait_for(lambda: pins.subscribers()["sync"] == 1, what="sync subscriber")
        sub.close()


def test_make_pins_refuses_two_roles_on_one_pin(run_dir: str, ctx: zmq.Context) -> None:
    rig = make_rig(ttl_pin=18)
    with pytest.raises(
        ConfigError,
        match=r"trigger.ttl_pin: pin 18 is already used as "
        r"trigger.camera_pin",
    ):
        make_pins(rig, run_dir, ctx)
    # A disabled sync line frees its pin.
    rig = make_rig(ttl_pin=23, sync={"enabled": False})
    with make_pins(rig, run_dir, ctx) as pins:
        assert isinstance(pins, SimPins)
        assert pins.lines == {18: "trigger", 23: "ttl"}
