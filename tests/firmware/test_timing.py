"""The pulse train keeps its period over 100 000 pulses: deadlines are absolute, so a late
pulse is late on its own and the error never accumulates.

Each test runs the daemon's train at 20 kHz (5 s) on a backend and fits the recorded rising
edges ``t_k`` against ``k``. Least squares through every pulse is no good on a shared machine:
the OS holds the thread up for whole milliseconds now and then, and a stall early or late in
the run tilts the line (by 1e-4 relative, measured here). A pulse is never early, though, so the
train's schedule is the lower envelope of the edge times, and :func:`schedule_fit` (Theil-Sen
through the least-late pulse of every block) recovers its slope to better than 1e-6 of the
period while a scheduler that adds each pulse's lateness to the next drifts off by far more
(checked on the same data at the end of each test).

Python's cyclic garbage collector is off while the train runs: the fakes keep every call in
growing lists of tuples and dicts, and full collections over them hold the pulse thread for
60-90 ms each on their own (measured on the 2-core test machine; 2-5 ms worst case with the
collector off). That is the recording, not the daemon, whose loop allocates no tracked objects.
"""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest
import zmq

from rigstream.config import CameraConfig, RigConfig, SyncLineConfig, TriggerConfig
from rigstream.firmware.backends import make_pins
from rigstream.firmware.pins import SimPins
from rigstream.firmware.trigger import TriggerDaemon

from .fake_rpigpio import FakeGPIO
from .test_trigger import schedule_fit

RATE_HZ = 20_000.0
PERIOD_NS = 50_000
PULSES = 100_000
BLOCK = 100
"""Pulses per block of the lower envelope (5 ms at 20 kHz)."""

pytestmark = pytest.mark.slow


def fast_rig(backend: str) -> RigConfig:
    return RigConfig(
        name="fast",
        cameras=[CameraConfig(name="cam0", role="primary", width=8, height=8, exposure_us=20)],
        trigger=TriggerConfig(rate_hz=RATE_HZ, backend=backend, pulse_width_us=10.0),  # type: ignore[arg-type]
        sync_line=SyncLineConfig(min_interval_s=0.05, max_interval_s=0.2, pulse_width_ms=1.0),
    )


def run_train(
    rig: RigConfig, run: str, ctx: zmq.Context
) -> tuple[int, dict[str, Any], np.ndarray | None]:
    """Run ``PULSES`` pulses; ``(t0_ns, status, SimPins edges or None)``."""
    pins = make_pins(rig, run, ctx, sim_log=4 * PULSES)  # every edge of the run
    with pins, TriggerDaemon(rig, pins, ctx, run) as daemon:
        gc.disable()
        try:
            t0 = daemon.start(max_pulses=PULSES)
            assert daemon.wait(60.0)
        finally:
            gc.enable()
        status = daemon.status()
        edges = pins.edges(18) if isinstance(pins, SimPins) else None
    return t0, status, edges


def check_no_accumulation(t0: int, rises: np.ndarray) -> None:
    assert len(rises) == PULSES
    k = np.arange(PULSES)
    slope, _ = schedule_fit(k, rises, PERIOD_NS, block=BLOCK)
    assert slope == pytest.approx(PERIOD_NS, rel=1e-6), (slope - PERIOD_NS) / PERIOD_NS

    # No trend: the typical lateness at the end is no more than it was in the calmest tenth of
    # the train. (Lateness that carries over grows to the end; a burst of load on the shared
    # machine makes some tenth late for a while without a trend, so the first tenth alone is
    # not the reference: a 1 ms stall in the first half second once failed it in CI.)
    late = rises - (t0 + k * PERIOD_NS)
    assert np.all(late >= 0)  # never early
    tenths = np.median(late.reshape(10, -1), axis=1)
    assert tenths[-1] - tenths.min() < 20_000, tenths
    assert tenths[-1] < 100_000

    # The same data scheduled the naive way (each pulse one period after the previous one,
    # so every lateness carries over) is caught by the same fit.
    drifting = t0 + k * PERIOD_NS + np.cumsum(late)
    naive, _ = schedule_fit(k, drifting, PERIOD_NS, block=BLOCK)
    assert abs(naive - PERIOD_NS) / PERIOD_NS > 1e-5


def test_sim_backend_keeps_the_period_over_100k_pulses(run_dir: str, ctx: zmq.Context) -> None:
    t0, status, edges = run_train(fast_rig("sim"), run_dir, ctx)
    assert status["pulses_sent"] == PULSES and status["sync_pulses_sent"] > 0
    assert edges is not None
    assert edges[0::2, 1].all() and not edges[1::2, 1].any()
    check_no_accumulation(t0, edges[0::2, 0])


def test_rpigpio_backend_keeps_the_period_over_100k_pulses(
    fake_gpio: FakeGPIO, run_dir: str, ctx: zmq.Context
) -> None:
    t0, status, _ = run_train(fast_rig("rpigpio"), run_dir, ctx)
    assert status["pulses_sent"] == PULSES
    history = np.array(fake_gpio.history[18][1:], dtype=np.int64)  # [0]: setup's initial level
    assert history[0::2, 1].all() and not history[1::2, 1].any()
    check_no_accumulation(t0, history[0::2, 0])
