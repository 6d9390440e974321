"""The apparatus's named outputs (pulses, trains) and inputs on the simulated pins, through the
daemon's publish hook: every edge written when due and logged with its index."""

from __future__ import annotations

import threading
import time
from typing import Any

import msgspec
import numpy as np
import pytest

from rigstream.config import RigConfig, load_rig
from rigstream.firmware.apparatus import Apparatus, ApparatusError
from rigstream.firmware.pins import SimPins


def rig_with(**lines: Any) -> RigConfig:
    doc = msgspec.to_builtins(load_rig())
    doc.update(lines)
    return msgspec.convert(doc, RigConfig)


class Published:
    def __init__(self) -> None:
        self.edges: list[tuple[str, int, int]] = []
        self.lock = threading.Lock()

    def __call__(self, *edges: tuple[str, int, int]) -> None:
        with self.lock:
            self.edges.extend(edges)

    def lines(self, prefix: str) -> list[tuple[str, int, int]]:
        with self.lock:
            return [e for e in self.edges if e[0].startswith(prefix)]


def wait_for(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_train_gives_count_pulses_on_deadlines_each_logged() -> None:
    rig = rig_with(outputs=[{"name": "laser", "pin": 12}])
    pins, pub = SimPins(), Published()
    app = Apparatus(rig, pins, pub)
    try:
        reply = app.output("laser", width_ms=2.0, count=5, rate_hz=100.0)
        assert reply["index"] == 0 and reply["count"] == 5
        with pytest.raises(ApparatusError, match="busy"):
            app.output("laser", width_ms=1.0)
        wait_for(lambda: len(pub.lines("out:laser")) == 10)
    finally:
        app.close()
    edges = pins.edges(12)
    assert [int(v) for v in edges[:, 1]] == [1, 0] * 5
    rises, falls = edges[0::2, 0], edges[1::2, 0]
    # every rise is due at first + i * 10 ms: late by the scheduler at most, never early
    due = rises[0] + 10_000_000 * np.arange(5)
    assert (rises >= due).all() and (rises - due < 5_000_000).all()
    widths = falls - rises
    assert (widths >= 2_000_000).all()
    lines = pub.lines("out:laser")
    names = ("out:laser", "out:laser-fall")
    assert [(line, n) for line, n, _ in lines] == [(name, i) for i in range(5) for name in names]
    assert [t for _, _, t in lines] == [int(t) for t in edges[:, 0]]
    assert app.status()["outputs"]["laser"] == {"pulses": 5, "busy": False}


def test_output_commands_are_checked() -> None:
    rig = rig_with(outputs=[{"name": "reward", "pin": 12, "active": "low", "max_width_ms": 50}])
    pins = SimPins()
    app = Apparatus(rig, pins, Published())
    try:
        assert pins.level(12) == 1  # an active-low line rests high
        with pytest.raises(ApparatusError, match="no output 'valve'"):
            app.output("valve", width_ms=1.0)
        with pytest.raises(ApparatusError, match=r"width_ms must be in \(0, 50\]"):
            app.output("reward", width_ms=60.0)
        with pytest.raises(ApparatusError, match="needs rate_hz"):
            app.output("reward", width_ms=1.0, count=3)
        with pytest.raises(ApparatusError, match="shorter than the train's period"):
            app.output("reward", width_ms=20.0, count=3, rate_hz=100.0)
        app.output("reward", width_ms=5.0)
    finally:
        app.close()  # finishes the pulse: the line rests high again
    assert [int(v) for v in pins.edges(12)[:, 1]] == [0, 1]


def test_inputs_publish_activations_and_releases_with_their_times() -> None:
    rig = rig_with(inputs=[{"name": "lever", "pin": 5, "pull": "up", "active": "low", "debounce_us": 1000}])
    pins, pub = SimPins(), Published()
    app = Apparatus(rig, pins, pub)
    try:
        assert app.status()["inputs"]["lever"] == {"state": 0, "activations": 0}  # pulled up: released
        ms = 1_000_000
        for t, level in ((10, 0), (10.2, 1), (11, 0), (20, 1), (30, 0), (40, 1)):  # a 0.2 ms bounce at 10
            pins.inject(5, level, round(t * ms))
        pins.settle(50 * ms)
    finally:
        app.close()
    assert pub.lines("input:") == [("input:lever", 0, 11 * ms), ("input:lever-off", 0, 20 * ms),
                                   ("input:lever", 1, 30 * ms), ("input:lever-off", 1, 40 * ms)]
    assert app.status()["inputs"]["lever"] == {"state": 0, "activations": 2}
