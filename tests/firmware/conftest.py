"""Fixtures for the firmware tests: small rigs, a short runtime folder, a fake RPi.GPIO and a
trigger daemon serving on real ZeroMQ sockets in a thread."""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from rigstream import transport
from rigstream.config import CameraConfig, RigConfig, SyncLineConfig, TriggerConfig
from rigstream.firmware.backends import make_pins
from rigstream.firmware.pins import PinBackend
from rigstream.firmware.trigger import TriggerDaemon
from rigstream.protocol import Command, Reply

from . import fake_rpigpio


def make_rig(
    rate_hz: float = 200.0,
    backend: str = "sim",
    pulse_width_us: float = 100.0,
    sync: dict[str, Any] | None = None,
    **trigger: Any,
) -> RigConfig:
    """A one-camera rig; the camera's exposure fits any rate up to 2 kHz."""
    return RigConfig(
        name="test",
        cameras=[CameraConfig(name="cam0", role="primary", width=32, height=24, exposure_us=100)],
        trigger=TriggerConfig(
            rate_hz=rate_hz,
            backend=backend,  # type: ignore[arg-type]
            pulse_width_us=pulse_width_us,
            **trigger,
        ),
        sync_line=SyncLineConfig(**(sync or {})),
    )


def wait_for(predicate: Callable[[], Any], timeout_s: float = 3.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy (tests only)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(0.005)


@pytest.fixture
def fake_gpio(monkeypatch: pytest.MonkeyPatch) -> fake_rpigpio.FakeGPIO:
    return fake_rpigpio.install(monkeypatch)


@pytest.fixture
def run_dir() -> Iterator[str]:
    """A short runtime folder (ipc paths must stay under ~100 characters)."""
    with tempfile.TemporaryDirectory(prefix="rs-fw-") as folder:
        yield folder


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


class DaemonHarness:
    """A daemon serving in a thread, with helpers to talk to it as a client would."""

    def __init__(self, rig: RigConfig, run: str, ctx: zmq.Context) -> None:
        self.rig = rig
        self.run = run
        self.ctx = ctx
        self.pins: PinBackend = make_pins(rig, run, ctx)
        self.daemon = TriggerDaemon(rig, self.pins, ctx, run)
        self.control = rig.address("trigger_control", run)
        self.thread = threading.Thread(target=self.daemon.serve, name="test-serve", daemon=True)
        self.thread.start()

    def request(self, cmd: str, **args: Any) -> Reply:
        return transport.request(self.ctx, self.control, Command(cmd=cmd, args=args))

    def ok(self, cmd: str, **args: Any) -> dict[str, Any]:
        reply = self.request(cmd, **args)
        assert reply.ok, reply.error
        return reply.data

    def pulses(self) -> zmq.Socket:
        """A SUB on the pulse stream, connected once the daemon sees it."""
        before = self.ok("status")["pulse_subscribers"]
        sock = transport.subscriber(self.ctx, self.rig.address("pulses", self.run))
        wait_for(lambda: self.ok("status")["pulse_subscribers"] > before, what="subscription")
        return sock

    def close(self) -> None:
        if self.thread.is_alive():
            with contextlib.suppress(TimeoutError):
                self.request("shutdown")
            self.thread.join(5)
        self.daemon.close()
        self.pins.close()


@pytest.fixture
def harness(run_dir: str, ctx: zmq.Context) -> Iterator[Callable[..., DaemonHarness]]:
    """``harness(rig)`` starts a daemon for ``rig``; all are shut down after the test."""
    made: list[DaemonHarness] = []

    def start(rig: RigConfig, run: str | None = None) -> DaemonHarness:
        h = DaemonHarness(rig, str(Path(run or run_dir)), ctx)
        made.append(h)
        return h

    yield start
    for h in made:
        h.close()
