"""The RPi.GPIO backend against a faithful fake of RPi.GPIO: the exact calls a Pi receives."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
import zmq

from rigstream.config import ConfigError
from rigstream.firmware.backends import make_pins
from rigstream.firmware.pins import PinError
from rigstream.firmware.rpigpio import RPiGPIOPins
from rigstream.firmware.trigger import TriggerDaemon

from .conftest import make_rig
from .fake_rpigpio import FakeGPIO

BCM, OUT, HIGH, LOW = FakeGPIO.BCM, FakeGPIO.OUT, FakeGPIO.HIGH, FakeGPIO.LOW


# -- the fake is as strict as the real module ------------------------------------------------


def test_fake_refuses_setup_before_setmode(fake_gpio: FakeGPIO) -> None:
    with pytest.raises(
        RuntimeError,
        match=r"Please set pin numbering mode using "
        r"GPIO.setmode\(GPIO.BOARD\) or GPIO.setmode",
    ):
        fake_gpio.setup(18, fake_gpio.OUT)


def test_fake_refuses_a_second_mode(fake_gpio: FakeGPIO) -> None:
    fake_gpio.setmode(fake_gpio.BCM)
    fake_gpio.setmode(fake_gpio.BCM)  # the same mode again is fine
    with pytest.raises(ValueError, match="A different mode has already been set!"):
        fake_gpio.setmode(fake_gpio.BOARD)


def test_fake_checks_channels_and_directions(fake_gpio: FakeGPIO) -> None:
    fake_gpio.setmode(fake_gpio.BCM)
    with pytest.raises(ValueError, match="channel sent is invalid"):
        fake_gpio.setup(54, fake_gpio.OUT)
    with pytest.raises(RuntimeError, match="not been set up as an OUTPUT"):
        fake_gpio.output(18, fake_gpio.HIGH)
    fake_gpio.setup(18, fake_gpio.IN)
    with pytest.raises(RuntimeError, match="not been set up as an OUTPUT"):
        fake_gpio.output(18, fake_gpio.HIGH)
    with pytest.warns(RuntimeWarning, match="already in use"):
        fake_gpio.setup(18, fake_gpio.OUT, initial=fake_gpio.HIGH)
    assert fake_gpio.input(18) == 1
    fake_gpio.cleanup([18])
    assert fake_gpio.getmode() is None  # no channel left: the mode is unset, as on a Pi


# -- the driver ------------------------------------------------------------------------------


def test_setup_write_close_call_sequence(fake_gpio: FakeGPIO) -> None:
    with RPiGPIOPins() as pins:
        pins.setup_output(18)
        pins.setup_output(24, initial=1)
        t = pins.write(18, 1)
        pins.write(18, 0)
        pins.write(24, 0)
    pins.close()  # idempotent: no second cleanup

    assert fake_gpio.sequence() == [
        ("setwarnings", (False,), {}),
        ("setmode", (BCM,), {}),
        ("setup", (18, OUT), {"initial": LOW}),
        ("setup", (24, OUT), {"initial": HIGH}),
        ("output", (18, HIGH), {}),
        ("output", (18, LOW), {}),
        ("output", (24, LOW), {}),
        ("cleanup", ([18, 24],), {}),
    ]
    assert fake_gpio.calls[4].t_ns <= t  # the edge's time is taken right after the write
    assert fake_gpio.directions == {}


def test_bcm_pin_numbers_are_checked_before_the_pi_sees_them(fake_gpio: FakeGPIO) -> None:
    with RPiGPIOPins() as pins:
        for bad in (28, -1):
            with pytest.raises(ValueError, match=r"0\.\.27"):
                pins.setup_output(bad)
        with pytest.raises(PinError, match="pin 18 is not set up"):
            pins.write(18, 1)
    assert [c.name for c in fake_gpio.calls] == ["setwarnings", "setmode"]  # no cleanup of none


def test_missing_rpigpio_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, ctx: zmq.Context
) -> None:
    monkeypatch.setitem(sys.modules, "RPi", None)  # import RPi -> ImportError
    monkeypatch.setitem(sys.modules, "RPi.GPIO", None)
    with pytest.raises(ImportError, match=r"install rigstream\[pi\] on the Raspberry Pi"):
        RPiGPIOPins()
    with pytest.raises(ImportError, match=r"install rigstream\[pi\]"):
        make_pins(make_rig(backend="rpigpio"), "unused", ctx)


def test_rpigpio_off_a_pi_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    class OffPi:
        """Behaves as RPi.GPIO's import does on a machine that is not a Pi."""

        def find_spec(self, name: str, path: Any, target: Any = None) -> None:
            if name == "RPi" or name.startswith("RPi."):
                raise RuntimeError("This module can only be run on a Raspberry Pi!")

    monkeypatch.delitem(sys.modules, "RPi", raising=False)
    monkeypatch.delitem(sys.modules, "RPi.GPIO", raising=False)
    monkeypatch.setattr(sys, "meta_path", [OffPi(), *sys.meta_path])
    with pytest.raises(RuntimeError, match=r"only be run on a Raspberry Pi.*trigger\.backend: sim"):
        RPiGPIOPins()


def test_pulse_train_call_sequence(fake_gpio: FakeGPIO, run_dir: str, ctx: zmq.Context) -> None:
    rig = make_rig(
        rate_hz=200,
        backend="rpigpio",
        pulse_width_us=300,
        sync={"min_interval_s": 1.0, "max_interval_s": 2.0},
    )
    with make_pins(rig, run_dir, ctx) as pins:
        assert isinstance(pins, RPiGPIOPins)
        with TriggerDaemon(rig, pins, ctx, run_dir) as daemon:
            daemon.start(max_pulses=5)
            assert daemon.wait(2.0)
            assert daemon.pulses_sent == 5
            daemon.ttl(width_ms=1.0)

    assert fake_gpio.sequence() == [
        ("setwarnings", (False,), {}),
        ("setmode", (BCM,), {}),
        ("setup", (18, OUT), {"initial": LOW}),  # camera trigger
        ("setup", (23, OUT), {"initial": LOW}),  # sync line
        ("setup", (24, OUT), {"initial": LOW}),  # ttl
        *[("output", (18, level), {}) for _ in range(5) for level in (HIGH, LOW)],
        ("output", (24, HIGH), {}),
        ("output", (24, LOW), {}),
        ("cleanup", ([18, 23, 24],), {}),
    ]
    edges = np.array(fake_gpio.history[18][1:], dtype=np.int64)  # [0] is setup's initial
    rises, falls = edges[0::2, 0], edges[1::2, 0]
    assert np.all(falls - rises >= 300_000)  # never narrower than pulse_width_us
    assert np.median(np.diff(rises)) == pytest.approx(rig.trigger.period_ns, rel=0.2)
    ttl = np.array(fake_gpio.history[24][1:], dtype=np.int64)
    assert ttl[1, 0] - ttl[0, 0] >= 1_000_000


def test_a_pin_off_the_header_is_a_config_error(
    fake_gpio: FakeGPIO, run_dir: str, ctx: zmq.Context
) -> None:
    rig = make_rig(backend="rpigpio", ttl_pin=40)
    with (
        make_pins(rig, run_dir, ctx) as pins,
        pytest.raises(ConfigError, match=r"trigger.ttl_pin: pin 40: .*0\.\.27"),
    ):
        TriggerDaemon(rig, pins, ctx, run_dir)
