"""Inputs on every pin backend: pulls, edges with their levels and times, the debounce, pins
refused for a second use, and close (no callback after it, the inputs handed back).

The simulated backend and the pigpio fake take explicit times (nanoseconds, ticks), so their
debounce tests are exact. RPi.GPIO's callback takes its time itself, on entry, so its tests
order events with the fake's event thread (held, then let go) and assert on order and values,
never on how long something took.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from rigstream.firmware.pigpio_pins import PigpioPins
from rigstream.firmware.pins import PinBackend, PinError, SimPins
from rigstream.firmware.rpigpio import RPiGPIOPins

from . import fake_pigpio, fake_rpigpio
from .conftest import wait_for

WRAP = 1 << 32


class Edges:
    """An input callback that records ``(pin, level, t_ns)``, when it was called and where."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.called_ns: list[int] = []
        self.threads: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, pin: int, level: int, t_ns: int) -> None:
        with self.lock:
            self.calls.append((pin, level, t_ns))
            self.called_ns.append(time.monotonic_ns())
            self.threads.append(threading.current_thread().name)

    def __len__(self) -> int:
        with self.lock:
            return len(self.calls)

    def wait(self, count: int, what: str = "edges") -> list[tuple[int, int, int]]:
        wait_for(lambda: len(self) >= count, timeout_s=5.0, what=f"{count} {what}")
        with self.lock:
            return list(self.calls)


# -- one harness per backend, for what every backend must do alike ---------------------------


class Backend:
    """A backend with a signal outside its header: ``drive`` changes an input now and returns
    when (monotonic ns); ``flush`` lets every change so far reach the callbacks."""

    kind = ""
    pins: PinBackend

    def drive(self, pin: int, level: int) -> int:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def library_calls(self) -> int:
        return 0

    def tolerance_ns(self) -> int:
        return 0


class SimBackend(Backend):
    kind = "sim"

    def __init__(self) -> None:
        self.pins = SimPins()

    def drive(self, pin: int, level: int) -> int:
        t_ns = time.monotonic_ns()
        self.pins.inject(pin, level, t_ns)
        return t_ns

    def flush(self) -> None:
        self.pins.settle()


class RPiBackend(Backend):
    kind = "rpigpio"

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gpio = fake_rpigpio.install(monkeypatch)
        self.pins = RPiGPIOPins()

    def drive(self, pin: int, level: int) -> int:
        return self.gpio.drive(pin, level)

    def flush(self) -> None:
        assert self.gpio.wait_idle()

    def library_calls(self) -> int:
        return len(self.gpio.calls)


class PigpioBackend(Backend):
    kind = "pigpio"

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.module = fake_pigpio.install(monkeypatch)
        self.daemon = self.module.daemon
        self.pins = PigpioPins()

    def drive(self, pin: int, level: int) -> int:
        return self.daemon.tick_time_ns(self.daemon.drive(pin, level))

    def flush(self) -> None:
        self.daemon.settle()
        assert self.daemon.wait_idle()

    def library_calls(self) -> int:
        return len(self.daemon.calls)

    def tolerance_ns(self) -> int:
        pairing = self.pins.pairing  # type: ignore[attr-defined]
        return (pairing.round_trip_ns if pairing else 0) + 2_000  # + the tick's 1 us steps


@pytest.fixture(params=["sim", "rpigpio", "pigpio"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    made: Backend
    if request.param == "sim":
        made = SimBackend()
    elif request.param == "rpigpio":
        made = RPiBackend(monkeypatch)
    else:
        made = PigpioBackend(monkeypatch)
    yield made
    made.pins.close()


@pytest.fixture
def pigpio(monkeypatch: pytest.MonkeyPatch) -> fake_pigpio.FakePigpio:
    return fake_pigpio.install(monkeypatch)


# -- every backend ---------------------------------------------------------------------------


def test_pull_sets_the_resting_level_and_read_follows_the_pin(backend: Backend) -> None:
    pins = backend.pins
    edges = Edges()
    assert pins.setup_input(17, "up", edges) == 1
    assert pins.setup_input(27, "down", edges) == 0
    assert pins.setup_input(22, "off", edges) == 0  # floating: low in the fakes and the sim
    assert pins.inputs == (17, 27, 22)
    assert pins.outputs == ()
    assert (pins.read(17), pins.read(27)) == (1, 0)
    backend.drive(27, 1)
    backend.flush()
    assert pins.read(27) == 1
    assert "inputs=[17, 27, 22]" in repr(pins)


def test_edges_come_back_alternating_with_their_levels_and_times(backend: Backend) -> None:
    pins = backend.pins
    edges = Edges()
    assert pins.setup_input(17, "down", edges) == 0
    t_rise = backend.drive(17, 1)
    backend.flush()
    backend.drive(17, 1)  # no change of level: no edge
    backend.flush()
    t_fall = backend.drive(17, 0)
    backend.flush()
    t_end = time.monotonic_ns()

    assert [(pin, level) for pin, level, _ in edges.calls] == [(17, 1), (17, 0)]
    (_, _, t1), (_, _, t2) = edges.calls
    tol = backend.tolerance_ns()
    # On the monotonic clock: at the change (sim, pigpio's tick) or after it (RPi.GPIO's
    # callback entry), never before, and in order.
    assert t_rise - tol <= t1 <= t_fall + tol
    assert t_fall - tol <= t2 <= t_end + tol
    assert t1 < t2
    assert pins.read(17) == 0


def test_a_pin_has_one_use_and_messages_say_which(backend: Backend) -> None:
    pins = backend.pins
    edges = Edges()
    pins.setup_output(18, name="trigger")
    pins.setup_output(24)
    pins.setup_input(17, "up", edges, name="lever")
    before = backend.library_calls()

    with pytest.raises(PinError, match=r"^pin 18 is already an output \(camera trigger\): it cannot"):
        pins.setup_input(18, "up", edges)
    with pytest.raises(PinError, match=r"^pin 24 is already an output: it cannot also be an input"):
        pins.setup_input(24, "down", edges)
    with pytest.raises(PinError, match=r"^pin 17 is already an input \(lever\)$"):
        pins.setup_input(17, "down", edges)
    with pytest.raises(PinError, match=r"^pin 17 is already an input \(lever\): it cannot also be an out"):
        pins.setup_output(17)
    with pytest.raises(PinError, match=r"pin 17 is an input \(lever\), not an output"):
        pins.write(17, 1)
    with pytest.raises(PinError, match=r"pin 17 is an input \(lever\), not an output"):
        pins.level(17)
    with pytest.raises(PinError, match=r"pin 18 is an output \(camera trigger\), not an input"):
        pins.read(18)
    with pytest.raises(PinError, match=r"pin 5 is not set up as an input \(inputs set up: 17\)"):
        pins.read(5)
    with pytest.raises(ValueError, match=r"pull: expected 'up', 'down' or 'off', got 'high'"):
        pins.setup_input(5, "high", edges)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"debounce_us: expected an integer >= 0, got -1"):
        pins.setup_input(5, "up", edges, debounce_us=-1)
    with pytest.raises(TypeError, match="callback: expected a callable"):
        pins.setup_input(5, "up", None)  # type: ignore[arg-type]
    if pins.pin_range is not None:
        with pytest.raises(ValueError, match=r"pin 28: expected a BCM GPIO number .*0\.\.27"):
            pins.setup_input(28, "up", edges)
    assert backend.library_calls() == before  # refused before the library saw anything
    assert pins.inputs == (17,) and pins.outputs == (18, 24)


def test_after_close_nothing_is_called_back_and_inputs_are_refused(backend: Backend) -> None:
    pins = backend.pins
    edges = Edges()
    pins.setup_input(17, "down", edges)
    pins.close()
    pins.close()  # idempotent
    if backend.kind != "sim":  # the pin is still there on the header; nobody listens
        backend.drive(17, 1)
        backend.flush()
    time.sleep(0.02)
    assert edges.calls == []
    with pytest.raises(PinError, match="closed"):
        pins.setup_input(27, "up", edges)
    with pytest.raises(PinError, match="closed"):
        pins.read(17)
    assert pins.inputs == (17,)


def test_a_callback_that_raises_is_logged_and_the_next_edge_still_comes(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    edges = Edges()
    calls = []

    def flaky(pin: int, level: int, t_ns: int) -> None:
        calls.append(level)
        if level:
            raise RuntimeError("boom")
        edges(pin, level, t_ns)

    backend.pins.setup_input(17, "down", flaky, name="lick")
    with caplog.at_level(logging.ERROR, logger="rigstream.firmware.pins"):
        backend.drive(17, 1)
        backend.flush()
        backend.drive(17, 0)
        backend.flush()
    assert calls == [1, 0]
    assert [level for _, level, _ in edges.calls] == [0]
    assert "pin 17 (lick): the input callback raised" in caplog.text


# -- SimPins: the debounce with explicit times -----------------------------------------------


def test_sim_debounce_drops_a_50us_glitch_and_accepts_a_500us_hold_at_its_start() -> None:
    edges = Edges()
    t0 = 10_000_000_000
    with SimPins() as pins:
        assert pins.setup_input(17, "down", edges, debounce_us=200) == 0
        pins.inject(17, 1, t0)
        pins.inject(17, 0, t0 + 50_000)  # back after 50 us < 200 us: a glitch
        assert pins.settle(t0 + 10_000_000) == 0
        assert pins.glitches(17) == 1
        assert edges.calls == []

        pins.inject(17, 1, t0 + 1_000_000)
        assert pins.settle(t0 + 1_199_999) == 0  # not held 200 us yet
        assert edges.calls == []
        pins.inject(17, 0, t0 + 1_500_000)  # it held 500 us: accepted, at its start
        assert edges.calls == [(17, 1, t0 + 1_000_000)]
        assert pins.settle(t0 + 1_700_000) == 1  # the fall has held 200 us by then
        assert edges.calls == [(17, 1, t0 + 1_000_000), (17, 0, t0 + 1_500_000)]
        assert pins.read(17) == 0
        assert pins.glitches(17) == 1
    assert edges.threads == [threading.current_thread().name] * 2  # the injecting thread


def test_sim_debounce_exactly_the_hold_time_is_enough() -> None:
    edges = Edges()
    with SimPins() as pins:
        pins.setup_input(4, "up", edges, debounce_us=200)
        pins.inject(4, 0, 1_000_000)
        pins.inject(4, 1, 1_200_000)  # held exactly 200 us: accepted
        pins.inject(4, 0, 1_300_000)  # the rise held 100 us: dropped
        assert edges.calls == [(4, 0, 1_000_000)]
        pins.inject(4, 1, 1_350_000)  # a new rise, pending
        assert pins.settle(1_549_999) == 0
        assert pins.settle(1_550_000) == 1  # exactly 200 us: accepted
        assert edges.calls == [(4, 0, 1_000_000), (4, 1, 1_350_000)]
        assert pins.glitches(4) == 1


def test_sim_a_change_injected_now_is_confirmed_in_real_time() -> None:
    edges = Edges()
    with SimPins() as pins:
        pins.setup_input(17, "down", edges, debounce_us=1_000)
        before = time.monotonic_ns()
        pins.inject(17, 1)
        after = time.monotonic_ns()
        (pin, level, t_ns), = edges.wait(1)
        assert (pin, level) == (17, 1)
        assert before <= t_ns <= after  # the time of the change, not of its confirmation
        assert edges.called_ns[0] >= t_ns + 1_000_000  # confirmed once it had held 1 ms
        assert edges.threads[0] == "SimPins-debounce"


def test_sim_a_change_back_within_the_debounce_in_real_time_is_dropped() -> None:
    edges = Edges()
    with SimPins() as pins:
        pins.setup_input(17, "down", edges, debounce_us=5_000_000)
        pins.inject(17, 1)
        pins.inject(17, 0)  # well within 5 s, even on a loaded machine
        pins.inject(17, 1)
        pins.inject(17, 1, time.monotonic_ns() + 5_000_000_000)  # a later look: it held
        assert [(p, level) for p, level, _ in edges.calls] == [(17, 1)]
        assert pins.glitches(17) == 1


def test_sim_no_callback_after_close_for_a_pending_change() -> None:
    edges = Edges()
    pins = SimPins()
    pins.setup_input(17, "down", edges, debounce_us=20_000)
    pins.inject(17, 1)  # due in 20 ms, on the timer
    pins.close()
    time.sleep(0.06)
    assert edges.calls == []
    assert pins.settle() == 0
    with pytest.raises(PinError, match="closed"):
        pins.inject(17, 0)


def test_sim_a_callback_may_close_the_backend_from_the_timer_thread() -> None:
    pins = SimPins()
    seen = []

    def close_on_edge(pin: int, level: int, t_ns: int) -> None:
        seen.append(level)
        pins.close()

    pins.setup_input(17, "down", close_on_edge, debounce_us=500)
    pins.inject(17, 1)  # confirmed by the timer thread, which the callback then stops
    wait_for(lambda: pins.closed, timeout_s=5.0, what="close from the callback")
    assert seen == [1]


def test_sim_a_callback_may_close_the_backend_while_the_timer_runs() -> None:
    pins = SimPins()
    seen = []

    def close_on_edge(pin: int, level: int, t_ns: int) -> None:
        seen.append(level)
        pins.close()  # from the injecting thread, with the timer thread waiting

    pins.setup_input(4, "down", Edges(), debounce_us=10_000_000)
    pins.inject(4, 1)  # the timer thread now waits 10 s for this one
    pins.setup_input(17, "down", close_on_edge)
    injector = threading.Thread(target=pins.inject, args=(17, 1, time.monotonic_ns()))
    injector.start()
    injector.join(5.0)
    assert not injector.is_alive(), "close() from a callback deadlocked"
    assert seen == [1] and pins.closed
    timer = pins._timer
    assert timer is not None
    timer.join(5.0)
    assert not timer.is_alive()


def test_sim_inject_checks_its_arguments_and_the_time_order() -> None:
    edges = Edges()
    with SimPins({18: "trigger"}) as pins:
        pins.setup_output(18)
        with pytest.raises(PinError, match=r"pin 18 is already an output \(camera trigger\)"):
            pins.setup_input(18, "up", edges)
        pins.setup_input(17, "down", edges)
        with pytest.raises(PinError, match="pin 5 is not set up as an input"):
            pins.inject(5, 1)
        with pytest.raises(ValueError, match="level must be 0 or 1, got 2"):
            pins.inject(17, 2)
        pins.inject(17, 1, 2_000)
        with pytest.raises(ValueError, match="before the previous injection"):
            pins.inject(17, 0, 1_000)
        pins.inject(17, True, 3_000)  # a bool is a level; no change, no edge
        assert edges.calls == [(17, 1, 2_000)]


# -- RPi.GPIO ---------------------------------------------------------------------------------


BCM, IN, OUT = fake_rpigpio.FakeGPIO.BCM, fake_rpigpio.FakeGPIO.IN, fake_rpigpio.FakeGPIO.OUT
PUD_OFF, PUD_DOWN, PUD_UP = (
    fake_rpigpio.FakeGPIO.PUD_OFF, fake_rpigpio.FakeGPIO.PUD_DOWN, fake_rpigpio.FakeGPIO.PUD_UP
)
BOTH, RISING = fake_rpigpio.FakeGPIO.BOTH, fake_rpigpio.FakeGPIO.RISING


def test_rpigpio_input_call_sequence_and_release(fake_gpio: fake_rpigpio.FakeGPIO) -> None:
    edges = Edges()
    with RPiGPIOPins() as pins:
        pins.setup_output(18)
        assert pins.setup_input(17, "up", edges) == 1
        assert pins.setup_input(27, "down", edges, debounce_us=200) == 0
        assert pins.setup_input(22, "off", edges) == 0
        assert fake_gpio.pulls == {17: PUD_UP, 27: PUD_DOWN, 22: PUD_OFF}
        assert set(fake_gpio.detections) == {17, 27, 22}
    on_event = pins._on_event
    assert fake_gpio.sequence() == [
        ("setwarnings", (False,), {}),
        ("setmode", (BCM,), {}),
        ("setup", (18, OUT), {"initial": 0}),
        ("setup", (17, IN), {"pull_up_down": PUD_UP}),
        ("add_event_detect", (17, BOTH), {"callback": on_event}),  # no bouncetime: see the driver
        ("input", (17,), {}),
        ("setup", (27, IN), {"pull_up_down": PUD_DOWN}),
        ("add_event_detect", (27, BOTH), {"callback": on_event}),
        ("input", (27,), {}),
        ("setup", (22, IN), {"pull_up_down": PUD_OFF}),
        ("add_event_detect", (22, BOTH), {"callback": on_event}),
        ("input", (22,), {}),
        ("remove_event_detect", (17,), {}),
        ("remove_event_detect", (27,), {}),
        ("remove_event_detect", (22,), {}),
        ("cleanup", ([18, 17, 27, 22],), {}),
    ]
    assert fake_gpio.detections == {} and fake_gpio.directions == {} and fake_gpio.pulls == {}


def test_rpigpio_a_50us_glitch_is_dropped(fake_gpio: fake_rpigpio.FakeGPIO) -> None:
    edges = Edges()
    with RPiGPIOPins() as pins:
        pins.setup_input(17, "down", edges, debounce_us=200)
        t0 = time.monotonic_ns()
        with fake_gpio.hold_events():  # the event thread is busy, as it is under load
            fake_gpio.drive(17, 1, t0)
            fake_gpio.drive(17, 0, t0 + 50_000)
        assert fake_gpio.wait_idle()
        # Both callbacks came after the glitch and read 0: no change, nothing pending.
        assert [c for c in fake_gpio.sequence() if c[0] == "input"][-2:] == [("input", (17,), {})] * 2
        time.sleep(0.002)  # ten times the debounce: a pending change would have fired
        assert edges.calls == []


def test_rpigpio_a_change_back_within_the_debounce_is_dropped(fake_gpio: fake_rpigpio.FakeGPIO) -> None:
    edges = Edges()
    with RPiGPIOPins() as pins:
        pins.setup_input(17, "down", edges, debounce_us=5_000_000)
        fake_gpio.drive(17, 1)
        assert fake_gpio.wait_idle()  # the callback read 1: pending for 5 s
        fake_gpio.drive(17, 0)
        assert fake_gpio.wait_idle()  # read 0 well within 5 s: dropped
        assert pins.glitches(17) == 1
    assert edges.calls == []


def test_rpigpio_a_held_change_is_accepted_at_its_start(fake_gpio: fake_rpigpio.FakeGPIO) -> None:
    edges = Edges()
    with RPiGPIOPins() as pins:
        pins.setup_input(17, "down", edges, debounce_us=200)
        t_drive = fake_gpio.drive(17, 1)
        (pin, level, t1), = edges.wait(1)
        assert (pin, level) == (17, 1)
        assert t1 >= t_drive  # the callback's entry: after the change
        assert edges.called_ns[0] >= t1 + 200_000  # confirmed once it had held 200 us
        assert edges.threads[0] == "RPiGPIOPins-debounce"  # by the timer, after re-reading
        t_fall = fake_gpio.drive(17, 0)
        edges.wait(2)
        assert edges.calls[1][:2] == (17, 0) and edges.calls[1][2] >= t_fall


def test_rpigpio_events_read_after_a_burst_never_repeat_a_level(fake_gpio: fake_rpigpio.FakeGPIO) -> None:
    edges = Edges()
    with RPiGPIOPins() as pins:
        pins.setup_input(17, "down", edges)
        with fake_gpio.hold_events():
            for level in (1, 0, 1):
                fake_gpio.drive(17, level)
        assert fake_gpio.wait_idle()
        # Three events, each callback reads 1: one rising edge, no repeats.
        assert [(p, level) for p, level, _ in edges.calls] == [(17, 1)]


def test_rpigpio_no_callback_after_close(fake_gpio: fake_rpigpio.FakeGPIO) -> None:
    edges = Edges()
    pins = RPiGPIOPins()
    pins.setup_input(17, "down", edges, debounce_us=20_000)
    pins.setup_input(27, "down", edges)
    fake_gpio.drive(17, 1)
    assert fake_gpio.wait_idle()  # pending on the timer, due in 20 ms
    with fake_gpio.hold_events():
        fake_gpio.drive(27, 1)  # queued when close comes
        pins.close()
    assert fake_gpio.wait_idle()
    time.sleep(0.06)
    assert edges.calls == []
    assert fake_gpio.detections == {}


def test_fake_rpigpio_edge_detection_is_as_strict_as_the_real_one(fake_gpio: fake_rpigpio.FakeGPIO) -> None:
    gpio = fake_gpio
    gpio.setmode(gpio.BCM)
    gpio.setup(18, gpio.OUT)
    with pytest.raises(RuntimeError, match="You must setup\\(\\) the GPIO channel as an input first"):
        gpio.add_event_detect(18, gpio.BOTH)
    with pytest.raises(RuntimeError, match="as an input first"):
        gpio.add_event_detect(17, gpio.BOTH)  # not set up at all
    with pytest.raises(ValueError, match="Invalid value for pull_up_down"):
        gpio.setup(17, gpio.IN, pull_up_down=5)
    gpio.setup(17, gpio.IN, pull_up_down=gpio.PUD_UP)
    with pytest.raises(ValueError, match="pull_up_down parameter is not valid for outputs"):
        gpio.setup(19, gpio.OUT, pull_up_down=gpio.PUD_UP)
    with pytest.raises(ValueError, match="The edge must be set to RISING, FALLING or BOTH"):
        gpio.add_event_detect(17, 5)
    with pytest.raises(ValueError, match="Bouncetime must be greater than 0"):
        gpio.add_event_detect(17, gpio.BOTH, bouncetime=0)
    with pytest.raises(TypeError, match="Parameter must be callable"):
        gpio.add_event_detect(17, gpio.BOTH, callback=5)
    with pytest.raises(ValueError, match="would short it"):
        gpio.drive(18, 1)
    got: list[int] = []
    gpio.add_event_detect(17, gpio.BOTH, callback=got.append)
    with pytest.raises(RuntimeError, match="Conflicting edge detection already enabled"):
        gpio.add_event_detect(17, gpio.RISING)
    gpio.drive(17, 0)
    assert gpio.wait_idle()
    assert got == [17]  # the callback gets the channel only
    gpio.remove_event_detect(17)
    gpio.drive(17, 1)
    assert gpio.wait_idle()
    assert got == [17]


def test_fake_rpigpio_bouncetime_drops_events_after_a_reported_one(fake_gpio: fake_rpigpio.FakeGPIO) -> None:
    gpio = fake_gpio
    gpio.setmode(gpio.BCM)
    gpio.setup(17, gpio.IN, pull_up_down=gpio.PUD_DOWN)
    got: list[int] = []
    gpio.add_event_detect(17, gpio.BOTH, callback=lambda ch: got.append(gpio.input(ch)), bouncetime=5)
    t0 = 1_000_000_000_000
    with gpio.hold_events():
        gpio.drive(17, 1, t0)  # reported
        gpio.drive(17, 0, t0 + 1_000_000)  # 1 ms later: within 5 ms of the last reported, dropped
        gpio.drive(17, 1, t0 + 6_000_000)  # 6 ms after the last reported: reported
        gpio.drive(17, 0, t0 + 9_000_000)  # 3 ms after that one: dropped (the pin stays low!)
    assert gpio.wait_idle()
    assert got == [0, 0]  # each callback read the level at the time it ran: low
    assert gpio.bounced == [(t0 + 1_000_000, 17), (t0 + 9_000_000, 17)]
    gpio.remove_event_detect(17)
    gpio.add_event_detect(17, RISING, callback=lambda ch: got.append(-1))
    gpio.drive(17, 1)
    gpio.drive(17, 0)  # falling: not watched
    assert gpio.wait_idle()
    assert got == [0, 0, -1]


# -- pigpio -------------------------------------------------------------------------------------


def test_pigpio_input_call_sequence_and_release(pigpio: fake_pigpio.FakePigpio) -> None:
    edges = Edges()
    daemon = pigpio.daemon
    with PigpioPins() as pins:
        pins.setup_output(18)
        assert pins.setup_input(17, "up", edges, debounce_us=200) == 1
        assert pins.setup_input(27, "down", edges) == 0
        assert daemon.pulls == {17: pigpio.PUD_UP, 27: pigpio.PUD_DOWN}
        assert daemon.filters == {17: 200}
        pairing = pins.pairing
        assert pairing is not None and pairing.round_trip_ns >= 0
    assert daemon.sequence() == [
        ("write", (18, 0)),
        ("set_mode", (18, pigpio.OUTPUT)),
        ("set_mode", (17, pigpio.INPUT)),
        ("set_pull_up_down", (17, pigpio.PUD_UP)),
        ("set_glitch_filter", (17, 200)),
        *[("get_current_tick", ())] * 3,  # the pairing: the shortest of three round trips
        ("callback", (17, pigpio.EITHER_EDGE)),
        ("read", (17,)),
        ("set_mode", (27, pigpio.INPUT)),
        ("set_pull_up_down", (27, pigpio.PUD_DOWN)),
        ("set_glitch_filter", (27, 0)),  # clears a filter a previous client may have left
        ("callback", (27, pigpio.EITHER_EDGE)),
        ("read", (27,)),
        ("cancel", (17,)),  # close: callbacks first, then the filters and pulls
        ("cancel", (27,)),
        ("set_glitch_filter", (17, 0)),
        ("set_pull_up_down", (17, pigpio.PUD_OFF)),
        ("set_glitch_filter", (27, 0)),
        ("set_pull_up_down", (27, pigpio.PUD_OFF)),
        ("set_mode", (18, pigpio.INPUT)),
        ("stop", ()),
    ]
    assert daemon.filters == {} and daemon.notifiers == [] and daemon.clients_open == 0


def test_pigpio_debounce_is_the_daemons_glitch_filter_and_times_are_the_changes(
    pigpio: fake_pigpio.FakePigpio,
) -> None:
    edges = Edges()
    daemon = pigpio.daemon
    with PigpioPins() as pins:
        assert pins.setup_input(17, "down", edges, debounce_us=200) == 0
        pairing = pins.pairing
        assert pairing is not None
        base = pairing.tick + 1_000
        daemon.drive(17, 1, base)
        daemon.drive(17, 0, base + 50)  # a 50 us glitch: pigpiod never reports it
        daemon.drive(17, 1, base + 1_000)
        daemon.drive(17, 0, base + 1_500)  # the rise held 500 us: reported now
        daemon.settle(base + 2_000)  # the fall has held 200 us by then
        calls = edges.wait(2)
        # pigpiod stamps a filtered edge when it confirms it, 200 us after it began ...
        assert daemon.reports == [(17, 1, base + 1_200), (17, 0, base + 1_700)]
        # ... and the backend gives the time the level changed.
        assert calls == [(17, 1, pins.tick_to_ns(base + 1_000)), (17, 0, pins.tick_to_ns(base + 1_500))]
        assert calls[1][2] - calls[0][2] == 500_000
        assert calls[0][2] == pairing.t_ns + 2_000_000
        assert pins.glitches(17) == 0  # filtered in the daemon, not here
        assert pins.read(17) == 0
    with pytest.raises(ValueError, match="PigpioPins accepts at most 300000 us, got 300001"):
        PigpioPins().setup_input(4, "up", edges, debounce_us=300_001)


def test_pigpio_ticks_across_the_32bit_wrap_give_monotonic_times(pigpio: fake_pigpio.FakePigpio) -> None:
    edges = Edges()
    daemon = pigpio.daemon
    daemon.set_tick(WRAP - 1_000)  # 1 ms before the tick wraps to 0
    with PigpioPins() as pins:
        pins.setup_input(17, "down", edges)
        ticks = [WRAP - 300, 200, 700, 1_200]  # the last three after the wrap
        for i, tick in enumerate(ticks):
            daemon.drive(17, 1 - i % 2, tick)
        calls = edges.wait(4)
        times = [t for _, _, t in calls]
        assert [level for _, level, _ in calls] == [1, 0, 1, 0]
        assert [b - a for a, b in itertools.pairwise(times)] == [500_000] * 3
        pairing = pins.pairing
        assert pairing is not None
        for tick, t_ns in zip(ticks, times, strict=True):
            assert abs(t_ns - daemon.tick_time_ns(tick)) <= pairing.round_trip_ns + 2_000


def test_pigpio_the_pairing_is_renewed_so_drift_does_not_accumulate(
    pigpio: fake_pigpio.FakePigpio,
) -> None:
    daemon = pigpio.daemon

    def jump_then_edge(pins: PigpioPins, pin: int) -> tuple[int, bool]:
        """An edge after the two clocks have drifted 5 ms apart: its time's error, and whether
        the pairing was renewed for it."""
        edges = Edges()
        pins.setup_input(pin, "down", edges)
        before = pins.pairing
        daemon.set_tick(daemon.current_tick() + 5_000)
        tick = daemon.drive(pin, 1)
        edges.wait(1)
        return edges.calls[0][2] - daemon.tick_time_ns(tick), pins.pairing != before

    with PigpioPins() as pins:  # renewed every 10 s: not yet
        error_ns, renewed = jump_then_edge(pins, 17)
        assert 4_000_000 < error_ns < 6_000_000 and not renewed
    ticks_read = daemon.sequence().count(("get_current_tick", ()))
    with PigpioPins(repair_s=0.0) as pins:  # renewed at every edge
        error_ns, renewed = jump_then_edge(pins, 27)  # pigpiod still drives 17 high
        pairing = pins.pairing
        assert renewed and pairing is not None
        assert abs(error_ns) <= pairing.round_trip_ns + 2_000
    assert daemon.sequence().count(("get_current_tick", ())) == ticks_read + 3 + 1
    with pytest.raises(ValueError, match="repair_s must be >= 0"):
        PigpioPins(repair_s=-1)


def test_pigpio_watchdog_reports_are_not_edges(pigpio: fake_pigpio.FakePigpio) -> None:
    edges = Edges()
    daemon = pigpio.daemon
    with PigpioPins() as pins:
        pins.setup_input(17, "down", edges)
        daemon.watchdog(17)  # level 2 (TIMEOUT)
        daemon.drive(17, 1)
        calls = edges.wait(1)
        assert daemon.wait_idle()
        assert [(p, level) for p, level, _ in calls] == [(17, 1)]


def test_pigpio_no_callback_after_close(pigpio: fake_pigpio.FakePigpio) -> None:
    edges = Edges()
    daemon = pigpio.daemon
    pins = PigpioPins()
    pins.setup_input(17, "down", edges)
    with daemon.hold_notifications():
        daemon.drive(17, 1)  # reported, waiting in the notification thread
        pins.close()
    daemon.drive(17, 0)
    assert daemon.wait_idle()
    time.sleep(0.02)
    assert edges.calls == []
    assert [gpio for gpio, _, _ in daemon.reports] == [17, 17]  # pigpiod saw both


def test_fake_pigpio_input_commands_are_checked(pigpio: fake_pigpio.FakePigpio) -> None:
    pi = pigpio.pi()
    with pytest.raises(pigpio.error, match="pud not 0-2"):
        pi.set_pull_up_down(17, 3)
    with pytest.raises(pigpio.error, match="GPIO not 0-53"):
        pi.set_pull_up_down(60, pigpio.PUD_UP)
    with pytest.raises(pigpio.error, match="GPIO not 0-31"):
        pi.set_glitch_filter(40, 100)
    with pytest.raises(pigpio.error, match="bad filter parameter"):
        pi.set_glitch_filter(17, 300_001)
    with pytest.raises(pigpio.error, match="GPIO not 0-31"):
        pi.callback(32, pigpio.EITHER_EDGE)
    # pigpio lets a callback watch an output: its writes are reported.
    pi.set_mode(18, pigpio.OUTPUT)
    got: list[tuple[int, int]] = []
    cb = pi.callback(18, pigpio.EITHER_EDGE, lambda g, level, tick: got.append((g, level)))
    rising = pi.callback(18)  # RISING_EDGE with pigpio's tally
    pi.write(18, 1)
    pi.write(18, 0)
    assert pigpio.daemon.wait_idle()
    assert got == [(18, 1), (18, 0)] and rising.tally() == 1
    with pytest.raises(ValueError, match="would short it"):
        pigpio.daemon.drive(18, 1)
    pi.stop()
    with pytest.raises(AttributeError):
        cb.cancel()  # a command on a stopped pi, as in pigpio
    with pytest.raises(AttributeError):
        pi.callback(17, pigpio.EITHER_EDGE)
