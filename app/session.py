"""Session orchestration: start every component of a rig as its own process, wire them over
ZeroMQ, run the trigger for a set number of pulses, stop cleanly and summarise.

The supervisor binds the status (PULL) and control (PUB) sockets; each component is started
as ``python -m rigstream <component> --config rig.yaml --run RUN --status ADDR``, exactly as
a user runs it alone, and reports ready/running/done over the status socket.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import msgspec
import yaml
import zmq

from rigstream import framestore, protocol
from rigstream.app.summary import SessionSummary
from rigstream.config import ConfigError, InputError, RigConfig, with_overrides
from rigstream.health import decode_health
from rigstream.protocol import Command, Event, Status
from rigstream.transport import (
    AddressError,
    Publisher,
    bind,
    check_addresses,
    received,
    request,
    subscriber,
    trigger_client_keys,
)

logger = logging.getLogger(__name__)


class SessionError(RuntimeError):
    pass


class Role(NamedTuple):
    """One kind of component in a session: how it is started and what its failure means."""

    command: str
    """The ``rigstream`` subcommand that runs it."""
    on_failure: Literal["restart", "report", "stop"]
    """``restart``: latest-wins consumers that hold no frames (their files are appended to), up to
    MAX_RESTARTS times. ``report``: reported, and the session goes on without it (a camera: a
    real one that failed needs a person, and its frame counter would restart; the recorder: the
    cameras, clips and pose do not depend on it, its tables and videos end where it stopped).
    ``stop``: the session stops in order (the trigger stops, the cameras end their streams,
    every reader finishes what it holds, summary.json names the failure)."""
    reads: Literal["source", "lossless", "by-index", "latest"]
    """How it takes frames: it makes them (``source``), every index in order, by index on
    request (clips), or the newest."""
    cameras_wait: bool
    """A camera node waits for its subscription before it writes (a lossless reader)."""
    hears_pulses: bool
    """It subscribes to the trigger's pulses (the trigger starts once they all have)."""
    writes: bool
    """It writes into the session folder (``--out``)."""
    listens_control: bool = True
    """It subscribes to the supervisor's control channel (the trigger is commanded instead)."""
    when: Literal["always", "per camera", "pose", "monitor"] = "always"
    """Whether the session has it: always, one per camera, with pose enabled, with a monitor."""


COMPONENTS: dict[str, Role] = {
    "trigger": Role("trigger", "stop", "source", False, False, False, listens_control=False),
    "assembler": Role("assemble", "stop", "lossless", True, False, False),
    "recorder": Role("record", "report", "lossless", True, True, True),
    "ringbuffer": Role("ringbuffer", "stop", "by-index", True, False, True),
    "pose": Role("pose", "restart", "latest", False, True, True, when="pose"),
    "monitor": Role("monitor", "restart", "latest", False, False, False, when="monitor"),
    "camera": Role("camera", "report", "source", False, True, False, when="per camera"),
}
"""Every kind of component a session runs (a camera's name is ``camera:NAME``), in start order;
the session's plan, its failure handling and its readiness checks are read from this table."""

MAX_RESTARTS = 3
"""Restarts of one component before its failure ends the session."""

HEALTH_EVERY_S = 0.5

DISK_EVERY_S = 1.0
"""How often the supervisor reads the session folder's free space (the reserve holds
``recording.disk_reserve_s`` of frames, far longer)."""

SHUTDOWN_GRACE_S = 30.0
"""How long a component has to close its files after SIGTERM before it is killed (a recorder
finishing a large raw write on a loaded host takes seconds)."""


@dataclass
class Component:
    name: str
    args: list[str]
    role: Role
    proc: subprocess.Popen[bytes] | None = None
    last: Status | None = None
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    health: Any = None
    """``last.stats`` decoded into its kind's struct (:mod:`rigstream.health`); None before."""
    restarts: int = 0
    earlier: list[Any] = field(default_factory=list)
    """The last health of each process of this component that failed and was restarted."""


@dataclass
class MonitorPlan:
    """The live monitor page (``rigstream run --monitor PORT``)."""

    port: int = 8800
    """0: any free port (the URL is reported)."""
    host: str = "127.0.0.1"
    token: str | None = None
    """Required by the monitor on a non-loopback host (it makes one if not given)."""


@dataclass
class SessionPlan:
    rig: RigConfig
    out: Path
    pulses: int | None
    """Trigger pulses to send; None: until :meth:`Session.stop` (Ctrl-C)."""
    events_at: list[int] = field(default_factory=list)
    """Trigger indices at which the supervisor sends a clip event."""
    monitor: MonitorPlan | None = None
    seconds: float | None = None
    """With ``pulses`` None: stop after this long (then finish the clips still being written)."""


def write_rig(rig: RigConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(msgspec.to_builtins(rig), sort_keys=False))


class Session(SessionSummary):
    def __init__(self, plan: SessionPlan, progress: Callable[[str], None] | None = None) -> None:
        self.plan = plan
        self.rig = plan.rig
        self._curve = trigger_client_keys(self.rig)  # read once, before any socket
        self.out = plan.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.run_dir = tempfile.mkdtemp(prefix="rigstream-")
        try:  # before any socket: a bad address is one line, not a hang or a traceback later
            check_addresses(self.rig, self.run_dir)
        except AddressError:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        self.ctx = zmq.Context()
        self.progress = progress or (lambda line: None)
        self.status_address = f"ipc://{self.run_dir}/status"
        self.status_sock = self.ctx.socket(zmq.PULL)
        bind(self.status_sock, self.status_address)
        self.control = Publisher(self.ctx, self.rig.address("control", self.run_dir))
        self.pulse_sock = subscriber(self.ctx, self.rig.address("pulses", self.run_dir),
                                     hwm=100_000)
        self.status_malformed = protocol.MalformedCounter("supervisor status")
        self.pulse_malformed = protocol.MalformedCounter("supervisor pulses")
        self.components: dict[str, Component] = {}
        self.latest_pulse = -1
        self.pose_enabled = self.rig.pose is not None and self.rig.pose.enabled
        self.failed: dict[str, str] = {}
        """Components that failed mid-session, with why."""
        self.fatal: str | None = None
        """The failure that ends the session early ("component failed: why"), once there is one."""
        self.recorder_failed_s: float | None = None
        """When the recorder failed (s into the session), if it did."""
        self.restarted: list[dict[str, Any]] = []
        """Components restarted mid-session: name, when (s into the session), why."""
        self._recording = False
        self._stop = threading.Event()
        self._stop_now = threading.Event()
        self.health = Publisher(self.ctx, self.rig.address("health", self.run_dir), hwm=10)
        self._last_health = 0.0
        self._t0 = time.monotonic()
        self.monitor_url: str | None = None

    def stop(self) -> None:
        """Ask the session to end (Ctrl-C): the trigger stops once the clips being written have
        their frames (at most the longest clip's ``post_s``); a second call stops at once. Safe
        from a signal handler or another thread."""
        if self._stop.is_set():
            self._stop_now.set()
        self._stop.set()

    # -- processes ---------------------------------------------------------------------------

    def _plan_components(self, rig_path: Path) -> None:
        common = ["--config", str(rig_path), "--run", self.run_dir,
                  "--status", self.status_address]
        mon = self.plan.monitor
        present = {"always": True, "per camera": True, "pose": self.pose_enabled,
                   "monitor": mon is not None}
        roles = {kind: role for kind, role in COMPONENTS.items() if present[role.when]}
        waited_for = sum(role.cameras_wait for role in roles.values())
        for kind, role in roles.items():
            args = [role.command, *common, *(["--out", str(self.out)] if role.writes else [])]
            if role.when == "per camera":
                for cam in self.rig.cameras:
                    name = f"{kind}:{cam.name}"
                    self.components[name] = Component(
                        name, [*args, "--name", cam.name, "--expect-subscribers", str(waited_for)], role)
            elif kind == "monitor":
                assert mon is not None
                self.components[kind] = Component(
                    kind, [*args, "--port", str(mon.port), "--host", mon.host], role,
                    env={"RIGSTREAM_MONITOR_TOKEN": mon.token} if mon.token else {})
            else:
                self.components[kind] = Component(kind, args, role)

    def _start(self) -> None:
        logs = self.out / "logs"
        logs.mkdir(exist_ok=True)
        for comp in self.components.values():
            comp.log_path = logs / f"{comp.name.replace(':', '-')}.log"
            self._launch(comp)

    def _launch(self, comp: Component) -> None:
        assert comp.log_path is not None
        env = dict(os.environ, PYTHONUNBUFFERED="1", **comp.env)
        with open(comp.log_path, "ab") as log:  # a restart appends to the same log
            comp.proc = subprocess.Popen([sys.executable, "-m", "rigstream", *comp.args],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)

    def _check_alive(self) -> None:
        for comp in self.components.values():
            if comp.name in self.failed or comp.proc is None or comp.proc.poll() in (None, 0):
                continue
            tail = comp.log_path.read_text()[-2000:] if comp.log_path else ""
            where = comp.log_path.relative_to(self.out) if comp.log_path else "no log"
            self._component_failed(comp, f"exited with code {comp.proc.returncode} (see {where})\n"
                                         f"its log ends:\n{tail}")

    def _component_failed(self, comp: Component, why: str) -> None:
        """A camera that fails mid-session is reported and left out; the other cameras and
        the consumers go on recording (the recorder accounts its missing frames). The pose
        engine and the monitor are restarted (up to MAX_RESTARTS times). Any other component
        failing ends the session: before the recording, at once (nothing is recorded yet);
        during it, in order (:attr:`fatal`; the main loop stops the trigger and lets the others
        finish what they hold)."""
        if self._recording and "[Errno 28]" in why:  # a full disk is not a crash: a restart would
            self.failed[comp.name] = "the disk is full"  # meet it again
            self._disk_low(f"{comp.name} found the disk full")
            return
        if comp.role.on_failure == "restart" and self._recording and comp.restarts < MAX_RESTARTS:
            self._restart(comp, why)
            return
        if not self._recording:
            raise SessionError(f"component {comp.name} failed: {why}")
        first = why.splitlines()[0]
        self.failed[comp.name] = first
        if comp.role.on_failure != "report":
            logger.error("component %s failed; stopping the session in order: %s", comp.name, why)
            self.progress(f"!! {comp.name} failed: {first} (stopping the session in order)")
            self.fatal = self.fatal or f"{comp.name} failed: {first}"
            return
        if comp.name == "recorder":
            self.recorder_failed_s = round(time.monotonic() - self._t0, 3)
            going_on = ("the cameras, clips and pose go on; frames.csv, pulses.csv and the videos "
                        "end where it stopped")
        else:
            going_on = "the others keep recording"
        logger.error("component %s failed; %s: %s", comp.name, going_on, why)
        self.progress(f"!! {comp.name} failed: {first} ({going_on})")

    def _restart(self, comp: Component, why: str) -> None:
        first = why.splitlines()[0]
        logger.error("component %s failed; restarting it: %s", comp.name, why)
        self.progress(f"!! {comp.name} failed: {first} (restarting it)")
        if comp.proc is not None and comp.proc.poll() is None:
            comp.proc.kill()  # it reported an error but is still there
            comp.proc.wait(5)
        comp.restarts += 1
        comp.earlier.append(self._health(comp.name))
        comp.last = comp.health = None
        self.restarted.append({"component": comp.name, "t_s": round(time.monotonic() - self._t0, 3),
                               "why": first})
        self._launch(comp)

    def _drain_status(self, timeout_ms: int = 0) -> None:
        while self.status_sock.poll(timeout_ms, zmq.POLLIN):
            timeout_ms = 0
            try:
                st = protocol.decode(self.status_sock.recv(), Status)
            except protocol.ProtocolError as err:
                self.status_malformed(err)
                continue
            comp = self.components.get(st.component)
            if comp is not None:
                comp.last = st
                try:
                    comp.health = decode_health(comp.name, st.stats)
                except protocol.ProtocolError as err:
                    self.status_malformed(err)  # the counts shown stay the last good ones
                url = comp.health.url if comp.name == "monitor" and comp.health is not None else None
                if url and st.state == "ready":
                    if self.monitor_url != url:
                        self.progress(f"monitor: {url}")
                    self.monitor_url = url
                if st.state == "error" and comp.name not in self.failed:
                    self._component_failed(comp, str(st.stats.get("error", "?")))

    def _drain_pulses(self) -> None:
        for pulse in received(self.pulse_sock, protocol.Pulse, self.pulse_malformed):
            if pulse.line == "camera":
                self.latest_pulse = max(self.latest_pulse, pulse.index)

    def _wait(self, what: str, done: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            self._check_alive()
            if time.monotonic() > deadline:
                raise SessionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            self._drain_status(timeout_ms=50)

    def _trigger(self, cmd: str, **args: Any) -> protocol.Reply:
        reply = request(self.ctx, self.rig.address("trigger_control", self.run_dir),
                        Command(cmd=cmd, args=args), timeout_s=5.0, curve=self._curve)
        if not reply.ok:
            raise SessionError(f"trigger refused {cmd}: {reply.error}")
        return reply

    def _ask_trigger(self, cmd: str) -> dict[str, Any]:
        """The trigger's answer to ``cmd`` mid-session; {} once the trigger has failed (which
        ends the session in order: :meth:`_component_failed`)."""
        if "trigger" not in self.failed:
            try:
                return self._trigger(cmd).data
            except TimeoutError:
                self._check_alive()
                if "trigger" not in self.failed:
                    raise
        return {}

    # -- the session ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Check, start every component, run the session and end it; the supervisor's sockets
        and runtime folder go away however it ends, a check that fails before any process too."""
        try:
            summary = self._checked_run()
        finally:
            self._shutdown()
        if self.fatal:
            kept = ", ".join(f"{c} {n}" for c, n in summary["frames"].items()) or "none"
            raise SessionError(f"{self.fatal}; the session stopped in order and kept what it recorded "
                               f"(frames {kept}; {summary['clips_saved']} clip(s); summary.json in "
                               f"{self.out})")
        return summary

    def _checked_run(self) -> dict[str, Any]:
        self.rig = self._prepare_calibration()  # a bad calibration: an error before any process
        if self.rig.rules and not self.pose_enabled:
            raise ConfigError(f"rig {self.rig.name!r}: rules ({', '.join(r.name for r in self.rig.rules)}) "
                              f"run on the live pose: enable the pose section (pose.enabled)")
        if self.pose_enabled:  # a bad model or view is an error before any process starts
            from rigstream.inference.pose_engine import plan_pose

            plan_pose(self.rig)
        framestore.check_fits(self.rig.store_bytes(), f"rig {self.rig.name!r}")
        if short := self._disk_short():
            raise InputError(f"{self.out}: {short} a session of this rig keeps free "
                             f"(recording.disk_reserve_s): free some space or record elsewhere")
        framestore.sweep_stale()  # what a killed session on this host left in shared memory
        rig_path = self.out / "rig.yaml"
        write_rig(self.rig, rig_path)
        self._plan_components(rig_path)
        t_launch = time.monotonic()
        self._start()
        return self._run(t_launch)

    def _prepare_calibration(self) -> RigConfig:
        """The session folder keeps the calibration every component uses (``calibration.toml``):
        the rig's, or for a simulated rig without one, the ring its cameras are placed on."""
        from rigstream.acquisition.sim_camera import rig_calibration

        if self.rig.calibration is None and any(c.backend != "sim" for c in self.rig.cameras):
            return self.rig
        path = rig_calibration(self.rig).save(self.out / "calibration.toml")
        return with_overrides(self.rig, calibration=str(path.resolve()))

    def _run(self, t_launch: float) -> dict[str, Any]:
        waiting = [c for c in self.components.values() if c.name != "trigger"]
        self._wait("components to be ready",
                   lambda: all(c.last is not None for c in waiting), 120)
        listeners = sum(c.role.listens_control for c in self.components.values())
        self._wait("components to listen to the control channel",
                   lambda: self.control.poll_subscriptions() >= listeners, 30)
        pulse_listeners = 1 + sum(c.role.hears_pulses for c in self.components.values())  # + ours

        def trigger_ready() -> bool:
            try:
                data = self._trigger("status").data
            except TimeoutError:
                return False
            t = self._trigger_health(data)
            if t is None:
                return False
            sim_ok = self.rig.trigger.backend != "sim" or t.line_subscribers.get("trigger", 0) >= 1
            return t.pulse_subscribers >= pulse_listeners and sim_ok

        self._wait("the trigger daemon and its subscribers", trigger_ready, 30)
        logger.info("all components ready after %.1f s", time.monotonic() - t_launch)

        t0 = self._t0 = time.monotonic()
        self._recording = True
        self._trigger("start", max_pulses=self.plan.pulses)
        events = sorted(self.plan.events_at)
        push = self.ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.connect(self.rig.address("events", self.run_dir))
        last_progress = last_disk = 0.0
        finishing: tuple[float, float, int] | None = None
        """After a stop request: (the least time the trigger runs on, the most, the request's
        host ns); see _finished."""
        while True:
            self._check_alive()
            self._drain_status(timeout_ms=20)
            self._drain_pulses()
            if self.fatal:
                break
            while events and self.latest_pulse >= events[0]:
                n = events.pop(0)
                push.send(protocol.encode(Event(name="demo", source="schedule", trigger_index=n,
                                                t_host_ns=time.monotonic_ns())))
            now = time.monotonic()
            if now - last_progress >= 1.0:
                last_progress = now
                self.progress(self._progress_line(now - t0))
            self._publish_health(now)
            if now - last_disk >= DISK_EVERY_S:
                last_disk = now
                if short := self._disk_short():
                    self._disk_low(short)
            if self.plan.pulses is not None:
                if self.latest_pulse >= self.plan.pulses - 1 and not self._ask_trigger("status").get(
                        "running", False):
                    break
                if not self._stop.is_set():
                    continue
            elif self.plan.seconds is not None and now - t0 >= self.plan.seconds:
                self._stop.set()
            if self._stop.is_set():
                if finishing is None:
                    finishing = self._finishing(now)
                if self._finished(now, finishing):
                    break
        duration_s = time.monotonic() - t0
        trigger = self._trigger_health({**self._ask_trigger("status"), **self._ask_trigger("stop")})
        self._drain_pulses()
        pulses_sent = trigger.pulses_sent if trigger is not None else self.latest_pulse + 1
        push.close()
        self.control.send(Command(cmd="stop", args={"pulses": pulses_sent}))
        self._wait("components to finish",
                   lambda: all(c.name in self.failed or (c.last is not None and c.last.state == "done")
                               for c in waiting),
                   120 + self.rig.clip_window_max_s()[1])
        self.progress(self._progress_line(duration_s))
        summary = self._summary(pulses_sent, duration_s, trigger)
        if self.rig.inputs:
            summary["inputs"] = self._inputs_summary(trigger)
        if self.rig.neural_clock is not None:
            summary["neural_clock"] = self._neural_clock()
        if self.rig.inputs or self.rig.neural_clock is not None:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _disk_short(self) -> str | None:
        """Why the session folder's file system is too full to record on (free space under the
        rig's reserve), or None."""
        free, reserve = shutil.disk_usage(self.out).free, self.rig.disk_reserve_bytes()
        return f"{_mb(free)} free, under the {_mb(reserve)} reserve" if free < reserve else None

    def _disk_low(self, why: str) -> None:
        """The disk is (nearly) full: stop in order while the reserve takes what is in flight."""
        if self.fatal is None:
            reserve_s = self.rig.recording.disk_reserve_s
            self.fatal = f"disk: {self.out}: {why} (recording.disk_reserve_s {reserve_s:g} s)"
            logger.error("%s; stopping the session in order", self.fatal)
            self.progress(f"!! {self.fatal} (stopping the session in order)")

    def _finishing(self, now: float) -> tuple[float, float, int]:
        """A stop was asked for: how long the trigger may run on so that clips get their post
        frames. With rules that save clips, at least the longest ``post_s`` plus a margin (a
        firing from just before the stop may still be on its way to the ring buffer); at most
        that plus 3 s."""
        post_s = self.rig.clip_window_max_s()[1]
        clip_rules = any(a.clip is not None for r in self.rig.rules for a in r.actions)
        pending = self._clips_pending()
        self.progress("stopping: finishing the clips being written" if clip_rules or pending
                      else "stopping")
        least = now + (post_s + 0.5 if clip_rules and self.pose_enabled else 0.0)
        return least, now + post_s + 3.0, time.monotonic_ns()

    def _finished(self, now: float, finishing: tuple[float, float, int]) -> bool:
        """Whether the trigger may stop: a second Ctrl-C, the deadline, or (after the least
        time) a ring buffer status sent after the stop request with no clip pending."""
        least, most, t_request_ns = finishing
        if self._stop_now.is_set() or now > most:
            return True
        ring = self.components["ringbuffer"].last
        fresh = ring is not None and ring.t_host_ns > t_request_ns
        return now >= least and fresh and not self._clips_pending()

    def _clips_pending(self) -> bool:
        """Whether the ring buffer, as of its last status, is still writing a clip."""
        return self._health("ringbuffer").clips_pending > 0

    def _publish_health(self, now: float) -> None:
        """Every component's latest status, for the monitor page (transport.health)."""
        if now - self._last_health < HEALTH_EVERY_S:
            return
        self._last_health = now
        comps = {c.name: {"state": c.last.state if c.last else "starting",
                          "stats": c.last.stats if c.last else {}} for c in self.components.values()}
        # The trigger daemon answers commands rather than reporting; its pulses speak for it.
        comps["trigger"] = {"state": "running" if self._recording and self.latest_pulse >= 0 else "ready",
                            "stats": {"pulses": self.latest_pulse + 1}}
        self.health.send(Status(component="session", state="running", t_host_ns=time.monotonic_ns(),
                                stats={"t_s": round(now - self._t0, 3), "pulses": self.latest_pulse + 1,
                                       "rate_hz": self.rig.trigger.rate_hz, "components": comps,
                                       "failed": dict(self.failed),
                                       "restarts": {c.name: c.restarts for c in self.components.values()
                                                    if c.restarts}}))

    def _progress_line(self, t: float) -> str:
        parts = [f"t={t:5.1f}s pulses {self.latest_pulse + 1:6d}"]
        for cam in self.rig.cameras:
            c = self._health(f"camera:{cam.name}")
            parts.append(f"{cam.name} {c.frames} fr {c.dropped} drop")
        a = self._health("assembler")
        parts.append(f"sets {a.framesets_complete}+{a.framesets_incomplete} incomplete")
        parts.append(f"clips {self._health('ringbuffer').clips_saved}")
        if "pose" in self.components:
            p = self._health("pose")
            parts.append(f"posed {p.framesets_posed} skipped {p.framesets_skipped}")
            if p.closed_loop is not None:
                parts.append(f"fired {p.closed_loop.firings}")
        return " | ".join(parts)

    def _shutdown(self) -> None:
        """End every process. After a session that ran to its end they have all reported done
        and are exiting; after an error, each is asked to stop (the control channel, then
        SIGTERM: both a clean stop that closes its files) and killed only if it is still there
        SHUTDOWN_GRACE_S after the SIGTERM."""
        trigger = self.components.get("trigger")
        if trigger is not None and trigger.proc is not None:
            with contextlib.suppress(TimeoutError, zmq.ZMQError, protocol.ProtocolError):
                request(self.ctx, self.rig.address("trigger_control", self.run_dir),
                        Command(cmd="shutdown"), timeout_s=1.0, curve=self._curve)
        self.control.send(Command(cmd="stop", args={"pulses": self.latest_pulse + 1}))
        for comp in self.components.values():
            if comp.proc is None:
                continue
            try:
                comp.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                logger.warning("component %s did not exit; asking it to stop (SIGTERM)", comp.name)
                comp.proc.terminate()
                try:
                    comp.proc.wait(timeout=SHUTDOWN_GRACE_S)
                except subprocess.TimeoutExpired:
                    logger.error("component %s did not stop within %.0f s of SIGTERM; killed",
                                  comp.name, SHUTDOWN_GRACE_S)
                    comp.proc.kill()
        for sock in (self.status_sock, self.pulse_sock):
            sock.close()
        self.control.close()
        self.health.close()
        self.ctx.destroy(linger=0)
        framestore.unlink_run(self.run_dir)  # stores of a camera node that was killed
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n < 10e9 else f"{n / 1e9:.1f} GB"
