"""The component lifecycle: what the supervisor hears (ready, running, done or error), the two
stop policies, and close() after every ending."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import zmq

from rigstream import protocol
from rigstream.component import Component
from rigstream.protocol import Command, Status
from rigstream.transport import ControlListener, Publisher, StatusReporter


class Counting(Component):
    """Counts turns; 'work' is a list of turns that make progress; ends when told."""

    name = "counting"

    def __init__(self, ctx: zmq.Context, status: str, control: str | None = None,
                 drains: bool = True, work: int = 0, fail_at: int | None = None,
                 end_at: int | None = None) -> None:
        self.status = StatusReporter(ctx, status, "counting")
        self.control = ControlListener(ctx, control, "counting")
        self.drains = drains
        self.idle_s = 0.1
        self.turns = self.work = 0
        self.budget, self.fail_at, self.end_at = work, fail_at, end_at
        self.started = self.closed = 0
        self.finished_with: dict[str, Any] | None = None

    def start(self) -> None:
        self.started += 1

    def turn(self) -> bool:
        self.turns += 1
        if self.fail_at is not None and self.turns >= self.fail_at:
            raise RuntimeError(f"broke at turn {self.turns}")
        if self.work < self.budget:
            self.work += 1
            return True
        threading.Event().wait(0.005)
        return False

    def finished(self) -> bool:
        return self.end_at is not None and self.turns >= self.end_at

    def summary(self) -> dict[str, Any]:
        return {"turns": self.turns, "work": self.work}

    def finish(self) -> dict[str, Any]:
        self.finished_with = {**self.summary(), "final": True}
        return self.finished_with

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def supervisor(tmp_path: Any) -> Any:
    ctx = zmq.Context.instance()
    address = f"ipc://{tmp_path}/status"
    pull = ctx.socket(zmq.PULL)
    pull.bind(address)
    yield ctx, address, pull
    pull.close(linger=0)


def reports(pull: zmq.Socket) -> list[Status]:
    out = []
    while pull.poll(200):
        out.append(protocol.decode(pull.recv(), Status))
    return out


def test_a_finished_component_reports_ready_then_done_with_its_final_summary(supervisor: Any) -> None:
    ctx, address, pull = supervisor
    c = Counting(ctx, address, end_at=5)
    assert c.run_forever() == {"turns": 5, "work": 0, "final": True}
    got = reports(pull)
    assert [r.state for r in got] == ["ready", "done"]
    assert got[-1].stats == {"turns": 5, "work": 0, "final": True}
    assert (c.started, c.closed) == (1, 1)


def test_a_draining_component_waits_out_its_progress_after_a_stop(supervisor: Any) -> None:
    ctx, address, pull = supervisor
    stop = threading.Event()
    stop.set()  # stopped before it starts: it still does all the work that keeps coming
    c = Counting(ctx, address, work=300)
    c.run_forever(stop)
    assert c.work == 300 and c.turns > 300  # then idle_s with nothing, then done
    assert [r.state for r in reports(pull)][-1] == "done"


def test_a_source_stops_at_once_on_the_stop_command(supervisor: Any, tmp_path: Any) -> None:
    ctx, address, _ = supervisor
    control = Publisher(ctx, f"ipc://{tmp_path}/control")
    c = Counting(ctx, address, control=control.address, drains=False, work=10**9)
    assert control.wait_for_subscribers(1, 5)
    result: dict[str, Any] = {}
    th = threading.Thread(target=lambda: result.update(c.run_forever()))
    th.start()
    while c.turns < 50:
        threading.Event().wait(0.01)
    control.send(Command(cmd="stop", args={"pulses": 7}))
    th.join(10)
    assert not th.is_alive() and result["final"]
    assert c.work < 10**9  # did not drain its "input"
    assert c.waiting.command is not None and c.waiting.command.args == {"pulses": 7}
    control.close()


def test_an_error_is_reported_with_the_summary_then_closed_and_raised(supervisor: Any) -> None:
    ctx, address, pull = supervisor
    c = Counting(ctx, address, fail_at=3)
    with pytest.raises(RuntimeError, match="broke at turn 3"):
        c.run_forever()
    got = reports(pull)
    assert [r.state for r in got] == ["ready", "error"]
    assert got[-1].stats == {"turns": 3, "work": 0, "error": "RuntimeError: broke at turn 3"}
    assert c.closed == 1 and c.finished_with is None


def test_latency_samples_keep_a_session_in_fixed_memory() -> None:
    """A session's latencies in a reservoir: bounded memory, exact count and max, percentiles
    of the whole session within a small error."""
    from rigstream.latency import LatencySamples, latency_stats

    rng = np.random.default_rng(1)
    values = rng.gamma(2.0, 5.0, 400_000)
    samples = LatencySamples(capacity=20_000)
    for v in values:
        samples.append(float(v))
    samples.append(float("nan"))  # not counted
    assert samples.values().size == 20_000 and len(samples) == 400_000
    stats = latency_stats(samples, count=True)
    assert stats["n"] == 400_000 and stats["max"] == round(float(values.max()), 3)
    assert stats["p50"] == pytest.approx(np.percentile(values, 50), rel=0.03)
    assert stats["p99"] == pytest.approx(np.percentile(values, 99), rel=0.05)
