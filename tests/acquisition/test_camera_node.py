"""The camera node with simulated cameras, driven by the real trigger daemon over ZeroMQ.

A small rig (two 64x48 cameras at 200 Hz, the secondary on the primary's strobe) runs a
100-pulse train: SimPins -> trigger line -> primary SimCamera -> strobe -> secondary
SimCamera, each camera in its CameraNode thread, the pulses from the TriggerDaemon. A
consumer reads both cameras' shared-memory frame stores in order, as the recorder does. The
simulation's truth (the pulse each frame was really exposed on) checks the indexing, and fault
injection checks that every pulse is accounted for: frames + drop notices, flags where they
belong.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import pytest
import zmq

from rigstream import protocol, transport
from rigstream.acquisition.camera import Camera
from rigstream.acquisition.camera_node import CameraNode
from rigstream.acquisition.sim_camera import SimCamera, TruthRenderer, trigger_line
from rigstream.config import RigConfig
from rigstream.firmware.backends import make_pins
from rigstream.firmware.trigger import TriggerDaemon
from rigstream.frames import CameraStores
from rigstream.framestore import StoreCursor, frame_header
from rigstream.protocol import (
    FLAG_DROPPED,
    FLAG_INCOMPLETE,
    FLAG_TIMING,
    Command,
    Edge,
    FrameHeader,
    Status,
)
from rigstream.transport import Publisher
from tests.conftest import run_in_thread, small_rig

from .camera_contract import CameraContract

PULSES = 100


def rig_with_faults(primary: dict[str, Any] | None = None,
                    secondary: dict[str, Any] | None = None) -> RigConfig:
    """Two 64x48 cameras at 200 Hz; ``primary``/``secondary``: FaultConfig fields."""
    doc = msgspec.to_builtins(small_rig(trigger={"rate_hz": 200}))
    doc["cameras"][0]["faults"] = primary or {}
    doc["cameras"][1]["faults"] = secondary or {}
    return msgspec.convert(doc, type=RigConfig, strict=True)


def wait_until(what: str, predicate: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    """Wait for a condition another thread or process brings about."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)
    return value


@dataclass
class Outcome:
    rig: RigConfig
    pulses: dict[int, int]
    """Camera pulse index -> t_pi_ns, as the trigger daemon published them."""
    frames: dict[str, list[FrameHeader]] = field(default_factory=dict)
    pixels: dict[str, list[np.ndarray]] = field(default_factory=dict)
    notices: dict[str, list[FrameHeader]] = field(default_factory=dict)
    eos: dict[str, FrameHeader] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    receiver: dict[str, Any] = field(default_factory=dict)

    def accounted(self, camera: str) -> list[int]:
        return sorted([h.trigger_index for h in self.frames[camera]]
                      + [h.trigger_index for h in self.notices[camera]])


def run_rig(rig: RigConfig, run: str, ctx: zmq.Context, pulses: int = PULSES) -> Outcome:
    """Run the trigger daemon and one CameraNode per camera in threads for ``pulses`` pulses;
    return what a consumer received."""
    names = [c.name for c in rig.cameras]
    pins = make_pins(rig, run, ctx)
    daemon = TriggerDaemon(rig, pins, ctx, run)
    serving = threading.Event()
    server = threading.Thread(target=daemon.serve, args=(serving,), daemon=True)
    server.start()
    status_address = f"ipc://{run}/status"
    status = ctx.socket(zmq.PULL)
    status.setsockopt(zmq.LINGER, 0)
    status.bind(transport.bind_address(status_address))
    pulse_sub = transport.subscriber(ctx, rig.address("pulses", run), hwm=100_000)
    receiver = CameraStores(rig, run, ctx, "test consumer")
    stop = threading.Event()
    nodes = {name: CameraNode(rig, name, run, ctx, status_address=status_address,
                              expect_subscribers=1) for name in names}
    threads = {name: run_in_thread(lambda node=node: node.run_forever(stop))
               for name, node in nodes.items()}
    control = rig.address("trigger_control", run)

    def trigger(cmd: str, **args: Any) -> dict[str, Any]:
        reply = transport.request(ctx, control, Command(cmd=cmd, args=args))
        assert reply.ok, reply.error
        return reply.data

    try:
        # Each node says ready once its consumer (and, for the primary, the secondary on its
        # strobe) has subscribed; the daemon counts the pulse and trigger-line subscribers.
        ready: set[str] = set()
        deadline = time.monotonic() + 15
        while ready != {f"camera:{n}" for n in names}:
            assert time.monotonic() < deadline, f"camera nodes never ready (ready: {ready})"
            receiver.wait(timeout_ms=0)  # opens each store once its node has made it
            if status.poll(100):
                st = protocol.decode(status.recv(), Status)
                assert st.state != "error", st.stats
                if st.state == "ready":
                    ready.add(st.component)
        wait_until("the daemon's pulse and trigger-line subscribers", lambda: (
            (s := trigger("status"))["pulse_subscribers"] >= len(names) + 1
            and s["line_subscribers"].get("trigger", 0) >= 1))

        trigger("start", max_pulses=pulses)
        assert daemon.wait(10), "the pulse train did not end"
        assert trigger("status")["pulses_sent"] == pulses
        stop.set()

        out = Outcome(rig, {}, frames={n: [] for n in names}, pixels={n: [] for n in names},
                      notices={n: [] for n in names})
        deadline = time.monotonic() + 15
        assert receiver.all_open
        cursors = {cam: StoreCursor(store) for cam, store in receiver.stores.items()}
        while not all(c.done for c in cursors.values()):
            assert time.monotonic() < deadline, "streams never ended"
            receiver.wait(timeout_ms=100)
            for cam, cursor in cursors.items():
                while (rec := cursor.take()) is not None:
                    assert rec.state != "overrun", (cam, rec.index)
                    h = frame_header(cam, cursor.store.layout, rec.index, rec.fields)
                    if rec.state == "notice":
                        out.notices[cam].append(h)
                    else:
                        assert rec.pixels is not None
                        out.frames[cam].append(h)
                        out.pixels[cam].append(rec.pixels.copy())
        for cam, cursor in cursors.items():
            out.eos[cam] = frame_header(cam, cursor.store.layout, cursor.store.end - 1, None)
        out.receiver = receiver.stats()
        for name, (thread, result) in threads.items():
            thread.join(10)
            assert not thread.is_alive(), f"camera node {name} did not return"
            if "error" in result:
                raise result["error"]
            out.nodes[name] = result["value"]
        while pulse_sub.poll(100):
            p = protocol.decode(pulse_sub.recv(), protocol.Pulse)
            if p.line == "camera":
                out.pulses[p.index] = p.t_pi_ns
        return out
    finally:
        stop.set()
        for thread, _ in threads.values():
            thread.join(10)
        serving.set()
        server.join(5)
        daemon.close()
        pins.close()
        for sock in (receiver, status, pulse_sub):
            sock.close()


def check_accounting(out: Outcome) -> None:
    """Every pulse index exactly once per camera (frames + notices), in a gapless stream."""
    assert sorted(out.pulses) == list(range(PULSES))
    assert out.receiver["malformed"] == {}
    for cam in out.frames:
        assert out.accounted(cam) == list(range(PULSES)), cam
        assert out.eos[cam].trigger_index == PULSES - 1
        assert [h.trigger_index for h in out.frames[cam]] == \
            sorted(h.trigger_index for h in out.frames[cam])
        for h in out.frames[cam]:  # stamped with the Pi's time of the pulse it is indexed to
            assert h.t_pi_ns == out.pulses[h.trigger_index], (cam, h.trigger_index)
        summary = out.nodes[cam]
        assert summary["frames"] == len(out.frames[cam])
        assert summary["dropped"] == len(out.notices[cam])
        assert summary["no_pulse"] == 0
        assert summary["pulses_seen"] == PULSES
        for h in out.notices[cam]:
            assert h.flags & FLAG_DROPPED and not h.flags & FLAG_TIMING


def check_pixels(out: Outcome) -> None:
    """Frames show the simulated animal at the pulse they were really exposed on."""
    truth = TruthRenderer(out.rig)
    for cam, headers in out.frames.items():
        for h, px in list(zip(headers, out.pixels[cam], strict=True))[::10]:
            np.testing.assert_array_equal(px, truth.image(cam, h.truth_index))


@pytest.fixture
def run(run_dir: str, zctx: zmq.Context) -> Callable[[RigConfig], Outcome]:
    return lambda rig: run_rig(rig, run_dir, zctx)


def test_every_frame_is_indexed_to_its_pulse(run: Callable[[RigConfig], Outcome]) -> None:
    out = run(rig_with_faults())
    check_accounting(out)
    check_pixels(out)
    for cam, headers in out.frames.items():
        assert len(headers) == PULSES and out.notices[cam] == []
        assert all(h.trigger_index == h.truth_index for h in headers)
        assert all(h.flags == 0 for h in headers)
        assert [h.frame_id for h in headers] == list(range(PULSES))
        assert np.all(np.diff([h.t_camera_ns for h in headers]) > 0)
        assert out.nodes[cam]["flagged"] == 0
        # Camera clock -> Pi clock: within a few us of the pulses, period after period.
        assert out.nodes[cam]["max_offset_us"] < 250


def test_dropped_frames_are_reported_with_their_trigger_index(
        run: Callable[[RigConfig], Outcome]) -> None:
    out = run(rig_with_faults({"drop_rate": 0.1, "seed": 1}, {"drop_rate": 0.1, "seed": 1}))
    check_accounting(out)
    check_pixels(out)
    for cam in out.frames:
        exposed = {h.truth_index for h in out.frames[cam]}
        never_came = set(range(PULSES)) - exposed
        assert never_came, f"{cam}: no drop injected; pick another seed"
        assert {h.trigger_index for h in out.notices[cam]} == never_came
        assert all(h.flags == FLAG_DROPPED for h in out.notices[cam])
        assert all(h.trigger_index == h.truth_index for h in out.frames[cam])
        assert len(out.notices[cam]) == out.nodes[cam]["camera"]["dropped_injected"]


def test_incomplete_frames_are_reported_as_incomplete_drops(
        run: Callable[[RigConfig], Outcome]) -> None:
    out = run(rig_with_faults({"incomplete_rate": 0.1}, {"incomplete_rate": 0.1}))
    check_accounting(out)
    for cam in out.frames:
        notices = out.notices[cam]
        assert notices, f"{cam}: no incomplete frame injected; pick another seed"
        assert len(notices) == out.nodes[cam]["camera"]["incomplete_injected"]
        for h in notices:
            assert h.flags == FLAG_DROPPED | FLAG_INCOMPLETE
            assert h.trigger_index == h.truth_index
        assert all(h.trigger_index == h.truth_index for h in out.frames[cam])


def test_frames_after_a_missed_trigger_are_flagged_not_reindexed(
        run: Callable[[RigConfig], Outcome]) -> None:
    out = run(rig_with_faults({"skip_trigger_rate": 0.05, "seed": 3}))
    check_accounting(out)
    check_pixels(out)
    primary = out.nodes["cam0"]["camera"]
    missed = primary["triggers_missed"]
    assert missed > 0, "no trigger skipped; pick another seed"
    # The secondary hangs on the primary's strobe: it misses exactly the same pulses.
    assert out.nodes["cam1"]["camera"].get("triggers_missed", 0) == 0
    exposed = [h.truth_index for h in out.frames["cam0"]]
    assert [h.truth_index for h in out.frames["cam1"]] == exposed
    assert len(exposed) == PULSES - missed
    first_missed = min(set(range(PULSES)) - set(exposed))
    assert first_missed > 0, "the very first pulse was missed: nothing to check timing against"
    half_period_ns = out.rig.trigger.period_ns // 2
    for cam, headers in out.frames.items():
        # FrameIDs count exposures, so indices run on without gaps and fall behind the truth.
        assert [h.trigger_index for h in headers] == list(range(PULSES - missed))
        unflagged = []
        for h in headers:
            behind = h.trigger_index != h.truth_index
            assert behind == (h.truth_index > first_missed), (cam, h)
            flagged = bool(h.flags & FLAG_TIMING)
            assert behind or not flagged, f"{cam}: frame {h.trigger_index} flagged on its own pulse"
            if behind and not flagged:
                unflagged.append(h)
                # A pulse sent late comes bunched with the next one: a frame of the next is
                # then within half a period of the one it is indexed to, and only the
                # neighbouring pulse tells them apart, if it has reached the node yet.
                off_ns = out.pulses[h.truth_index] - out.pulses[h.trigger_index]
                assert off_ns <= half_period_ns + 500_000, \
                    f"{cam}: frame {h.trigger_index} of pulse {h.truth_index} went out unflagged"
        assert len(unflagged) <= 2, f"{cam}: mis-indexed frames went out unflagged: {unflagged}"
        assert out.nodes[cam]["flagged"] == sum(1 for h in headers if h.flags & FLAG_TIMING)
        # The pulses no frame was left for are reported as dropped at the end.
        assert sorted(h.trigger_index for h in out.notices[cam]) == \
            list(range(PULSES - missed, PULSES))


# -- the Camera contract on the simulated camera ---------------------------------------------


class TestSimCameraContract(CameraContract):
    @pytest.fixture
    def rig(self) -> RigConfig:
        return small_rig(cameras=1)

    @pytest.fixture
    def camera(self, rig: RigConfig, run_dir: str, zctx: zmq.Context) -> Iterator[Camera]:
        cam = SimCamera(rig.cameras[0], rig, run_dir, zctx)
        yield cam
        cam.close()

    @pytest.fixture
    def trigger(self, camera: Camera, rig: RigConfig, run_dir: str,
                zctx: zmq.Context) -> Iterator[Callable[[], None]]:
        line = trigger_line(rig, camera.config)
        pub = Publisher(zctx, rig.address("sim_lines", run_dir, line=line))
        pulses = iter(range(1 << 30))

        def pulse() -> None:
            assert pub.wait_for_subscribers(1, 5), "the camera never listened to its line"
            n = next(pulses)
            t_ns = time.monotonic_ns()
            pub.send(Edge(line=line, level=1, t_ns=t_ns, truth_index=n))
            pub.send(Edge(line=line, level=0, t_ns=t_ns + 100_000, truth_index=n))

        yield pulse
        with contextlib.suppress(zmq.ZMQError):
            pub.close()
