"""The pigpio backend against a faithful fake of the pigpio module and its daemon."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import zmq

from rigstream.config import ConfigError
from rigstream.firmware.backends import make_pins
from rigstream.firmware.pigpio_pins import PigpioPins
from rigstream.firmware.pins import PinError
from rigstream.firmware.trigger import TriggerDaemon

from . import fake_pigpio
from .conftest import make_rig
from .fake_pigpio import INPUT, OUTPUT, FakePigpio


@pytest.fixture
def pigpio(monkeypatch: pytest.MonkeyPatch) -> FakePigpio:
    return fake_pigpio.install(monkeypatch)


# -- the fake is as strict as the real module ------------------------------------------------


def test_fake_pi_without_daemon_is_not_connected(
    pigpio: FakePigpio, capsys: pytest.CaptureFixture[str]
) -> None:
    pigpio.daemon.running = False
    pi = pigpio.pi()
    assert not pi.connected
    assert "Did you start the pigpio daemon?" in capsys.readouterr().out  # as pigpio prints
    with pytest.raises(AttributeError):
        pi.write(18, 1)  # no socket, as in pigpio


def test_fake_checks_gpio_level_and_mode_and_stop(pigpio: FakePigpio) -> None:
    pi = pigpio.pi()
    assert pi.connected
    with pytest.raises(pigpio.error, match="GPIO not 0-53"):
        pi.set_mode(54, OUTPUT)
    with pytest.raises(pigpio.error, match="level not 0-1"):
        pi.write(18, 2)
    with pytest.raises(pigpio.error, match="mode not 0-7"):
        pi.set_mode(18, 9)
    pi.write(18, 1)  # pigpiod makes a written pin an output...
    assert pi.get_mode(18) == OUTPUT and pi.read(18) == 1
    assert pigpio.daemon.implicit_outputs == [(0, 18)]  # ...and the fake notes it
    pi.stop()
    pi.stop()  # idempotent, as pigpio's
    assert not pi.connected and pigpio.daemon.clients_open == 0
    with pytest.raises(AttributeError):
        pi.set_mode(18, INPUT)


# -- the driver ------------------------------------------------------------------------------


def test_setup_write_close_call_sequence(
    pigpio: FakePigpio, capsys: pytest.CaptureFixture[str]
) -> None:
    with PigpioPins() as pins:
        pins.setup_output(18)
        pins.setup_output(24, initial=1)
        t = pins.write(18, 1)
        pins.write(18, 0)
        pins.write(24, 0)
    pins.close()  # idempotent: no second stop

    daemon = pigpio.daemon
    assert daemon.sequence() == [
        ("write", (18, 0)),  # the level first, then the mode: no glitch
        ("set_mode", (18, OUTPUT)),
        ("write", (24, 1)),
        ("set_mode", (24, OUTPUT)),
        ("write", (18, 1)),
        ("write", (18, 0)),
        ("write", (24, 0)),
        ("set_mode", (18, INPUT)),  # close hands the pins back as inputs
        ("set_mode", (24, INPUT)),
        ("stop", ()),
    ]
    assert daemon.calls[4].t_ns <= t  # the edge's time is taken right after the write
    # Only setup's writes met a pin that was not an output yet.
    assert daemon.implicit_outputs == [(0, 18), (1, 24)]
    assert daemon.clients_open == 0
    assert capsys.readouterr().out == ""  # show_errors=False: pigpio prints nothing


def test_pins_are_checked_before_pigpiod_sees_them(pigpio: FakePigpio) -> None:
    with PigpioPins() as pins:
        for bad in (28, -1):
            with pytest.raises(ValueError, match=r"0\.\.27"):
                pins.setup_output(bad)
        with pytest.raises(PinError, match="pin 18 is not set up"):
            pins.write(18, 1)
    assert pigpio.daemon.sequence() == [("stop", ())]


def test_daemon_not_running_says_how_to_start_it(pigpio: FakePigpio, ctx: zmq.Context) -> None:
    pigpio.daemon.running = False
    with pytest.raises(RuntimeError, match=r"sudo systemctl start pigpiod"):
        PigpioPins()
    with pytest.raises(RuntimeError, match=r"pigpio daemon is not running"):
        make_pins(make_rig(backend="pigpio"), "unused", ctx)


def test_missing_pigpio_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pigpio", None)  # import pigpio -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'rigstream\[pigpio\]'"):
        PigpioPins()


def test_pulse_train_through_pigpiod(pigpio: FakePigpio, run_dir: str, ctx: zmq.Context) -> None:
    rig = make_rig(
        rate_hz=200,
        backend="pigpio",
        pulse_width_us=300,
        sync={"min_interval_s": 1.0, "max_interval_s": 2.0},
    )
    with make_pins(rig, run_dir, ctx) as pins:
        assert isinstance(pins, PigpioPins)
        with TriggerDaemon(rig, pins, ctx, run_dir) as daemon:
            daemon.start(max_pulses=5)
            assert daemon.wait(2.0)
            daemon.ttl(width_ms=1.0)

    daemon_state = pigpio.daemon
    assert daemon_state.sequence() == [
        ("write", (18, 0)),
        ("set_mode", (18, OUTPUT)),  # camera trigger
        ("write", (23, 0)),
        ("set_mode", (23, OUTPUT)),  # sync line
        ("write", (24, 0)),
        ("set_mode", (24, OUTPUT)),  # ttl
        *[("write", (18, level)) for _ in range(5) for level in (1, 0)],
        ("write", (24, 1)),
        ("write", (24, 0)),
        ("set_mode", (18, INPUT)),
        ("set_mode", (23, INPUT)),
        ("set_mode", (24, INPUT)),
        ("stop", ()),
    ]
    assert [pin for _, pin in daemon_state.implicit_outputs] == [18, 23, 24]  # setup only
    edges = np.array(daemon_state.history(18)[1:], dtype=np.int64)  # [0]: setup's level
    rises, falls = edges[0::2, 0], edges[1::2, 0]
    assert np.all(falls - rises >= 300_000)
    assert np.median(np.diff(rises)) == pytest.approx(rig.trigger.period_ns, rel=0.2)


def test_a_pin_off_the_header_is_a_config_error(
    pigpio: FakePigpio, run_dir: str, ctx: zmq.Context
) -> None:
    rig = make_rig(backend="pigpio", camera_pin=30)
    with (
        make_pins(rig, run_dir, ctx) as pins,
        pytest.raises(ConfigError, match=r"trigger.camera_pin: pin 30: .*0\.\.27"),
    ):
        TriggerDaemon(rig, pins, ctx, run_dir)
    assert pigpio.daemon.clients_open == 0
