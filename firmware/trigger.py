"""The trigger daemon: camera pulses on absolute deadlines, the sync line, TTL outputs.

One thread drives every output of the pulse train. Camera rising edge ``k`` is due at
``t0 + k * period_ns``; each deadline is computed from ``t0``, so timing errors never
accumulate. The thread sleeps until just before the next event and spins the last
``SPIN_NS``. A pulse whose deadline was missed is still sent (late, and counted), never
skipped: indices have no gaps.

Every edge the daemon writes is timestamped on the Pi's monotonic clock (``t``, taken by the
pin backend right after the write) and published on the pulse stream as a
:class:`~rigstream.protocol.Pulse` whose ``line`` says which edge it is:

=============  ==========================================================================
line           edge (``index``)
=============  ==========================================================================
camera         camera trigger rising edge (pulse ``k``; consumers match frames by it)
camera-fall    camera trigger falling edge (the pulse ``k`` it ends)
sync           sync line rising edge (sync pulse ``j``)
sync-fall      sync line falling edge (sync pulse ``j``)
ttl-command    a ``ttl`` command's arrival (TTL pulse ``n``, counted from 0 per daemon)
ttl            TTL rising edge (TTL pulse ``n``)
ttl-fall       TTL falling edge (TTL pulse ``n``)
input:NAME     an apparatus input became active (its activation ``n``; see
               :mod:`.apparatus`), ``input:NAME-off`` released
out:NAME       a named output's rising edge (its pulse ``n``), ``out:NAME-fall`` its fall
=============  ==========================================================================

Consumers that want only the camera pulses keep ``line == "camera"``; the recorder writes all of
them to ``pulses.csv``.

The sync line to the neural recorder (as pyControl's Rsync) rises at random intervals, uniform in
``[min_interval_s, max_interval_s]`` from a generator seeded with ``sync_line.seed`` (each
``start`` restarts the sequence), and its edges are published as ``Pulse(line="sync")``. Its
events are merged into the same loop, and one is put off while a camera rising edge is due
within ``SYNC_GUARD_NS``: the camera's timing comes first, and a sync pulse's exact time is
known from its timestamp anyway.

Control is a REP socket that answers :class:`rigstream.protocol.Command`. It binds where
``transport.trigger_control`` says (ipc by default). An address reachable from the network
(anything but ipc, inproc and loopback tcp) needs ``trigger.control_keys``: the socket is then a
ZeroMQ CURVE server, and a ZAP handler admits only clients whose public key is in
``authorized_dir``; anyone else gets no reply (the handshake fails) and the refusal is logged at
WARNING. Keys given for a local address are used too.

==========  ===========================================  =====================================
cmd         args                                         reply data
==========  ===========================================  =====================================
start       max_pulses: int, duration_s: float            t0_ns, period_ns, rate_hz
            (both optional; without them it runs until
            stop)
stop        -                                            pulses_sent, sync_pulses_sent
status      -                                            see :meth:`TriggerDaemon.status`
ttl         width_ms: float = 1.0 (0 < width <= 1000)    index, t_command_ns, t_edge_ns,
                                                         t_fall_due_ns, merged
output      name: str, width_ms: float, count: int = 1,     output, index, count, t_command_ns,
            rate_hz: float (for count > 1)               t_edge_ns, t_last_fall_due_ns
shutdown    -                                            pulses_sent
==========  ===========================================  =====================================

Each ``start`` begins a new train: pulse indices count from 0 again.

A ``ttl`` is answered as soon as the line is high: its falling edge is written by a thread of
its own when due, so the control socket never waits out a pulse's width (one rule's 10 ms
pulse used to hold back another rule's TTL, a ``status`` and a ``stop`` by 10 ms). A ``ttl``
that arrives while the line is still high cannot make an edge of its own on the same pin: it
joins the pulse on the line (``merged``: the reply's ``index`` and ``t_edge_ns`` are that
pulse's), which stays high until the later of the two falls; merged commands are counted
(``ttl_merged`` in the status) and logged with the pulse's falling edge.

Length: one job, the daemon (its control socket, the pulse train's hot loop, the TTL
line); over 600 lines because the three share the pins, the publisher and the state, and
read best side by side. The CURVE server it uses is in :mod:`rigstream.transport`.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Annotated, Any

import msgspec
import numpy as np
import zmq

from rigstream import protocol
from rigstream.config import ConfigError, RigConfig
from rigstream.protocol import Command, Pulse, Reply
from rigstream.transport import CurveServer, Publisher, bind_address, is_local_address

from .apparatus import Apparatus, ApparatusError
from .backends import make_pins
from .pins import LINE_ROLES, PinBackend, PinError, rig_lines

logger = logging.getLogger(__name__)

SPIN_NS = 200_000
"""The last stretch before a deadline is spun, not slept (sleep wakes up late by tens of us)."""
MAX_SLEEP_NS = 50_000_000
"""Longest single sleep, so a stop is noticed within this time even at low rates."""
SYNC_GUARD_NS = 200_000
"""A sync-line event is put off while a camera rising edge is due within this time."""
START_DELAY_NS = 2_000_000
"""The first pulse is due this long after ``start``, so the thread is up and spinning."""
PULSE_HWM = 1_000_000
"""Pulses queued per subscriber before ZeroMQ drops (over 15 min at 1 kHz)."""
LATE_WINDOW = 1 << 16
"""Lateness samples kept for the status percentiles (the most recent pulses)."""
POLL_MS = 100
"""How often serve() looks at its stop event while no command arrives."""
JOIN_TIMEOUT_S = 5.0

_NEVER = 1 << 62


class TriggerError(RuntimeError):
    """A command that cannot be carried out in the daemon's present state."""


class _StartArgs(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_pulses: Annotated[int, msgspec.Meta(gt=0)] | None = None
    duration_s: Annotated[float, msgspec.Meta(gt=0)] | None = None


class _TTLArgs(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    width_ms: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 1.0


class _OutputArgs(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    width_ms: Annotated[float, msgspec.Meta(gt=0)]
    count: Annotated[int, msgspec.Meta(ge=1)] = 1
    rate_hz: Annotated[float, msgspec.Meta(gt=0)] | None = None


class _NoArgs(msgspec.Struct, forbid_unknown_fields=True):
    pass


class _TTLPulse:
    """The TTL pulse on the line now: its index, its times, and the commands merged into it."""

    __slots__ = ("fall_due_ns", "index", "merged", "t_command_ns", "t_edge_ns")

    def __init__(self, index: int, t_command_ns: int, t_edge_ns: int, fall_due_ns: int) -> None:
        self.index = index
        self.t_command_ns = t_command_ns
        self.t_edge_ns = t_edge_ns
        self.fall_due_ns = fall_due_ns
        self.merged = 0


def _args(cmd: str, args: dict[str, Any], model: type[Any]) -> Any:
    try:
        return msgspec.convert(args, type=model, strict=True)
    except msgspec.ValidationError as exc:
        text = str(exc).replace("Object contains unknown field", "unknown argument")
        raise ValueError(f"{cmd}: {text.replace('`$.', '`args.')}") from None


class TriggerDaemon:
    """Drives the camera trigger, the sync line and TTL outputs through a :class:`PinBackend`.

    The daemon sets its pins up as outputs (low) and binds the pulse publisher and the control
    socket; it does not own ``pins`` or ``ctx`` and leaves them open on ``close()``. Call
    ``close()`` after ``serve()`` has returned (sockets belong to one thread at a time).
    """

    def __init__(
        self,
        rig: RigConfig,
        pins: PinBackend,
        ctx: zmq.Context,
        run: str,
        *,
        realtime_priority: int | None = None,
    ) -> None:
        lines = rig_lines(rig)  # one role per pin, or ConfigError
        self.control_address = rig.address("trigger_control", run)
        control_keys = rig.trigger.control_keys
        if (control_keys is None or control_keys.server_secret_file is None) and not is_local_address(
                self.control_address):
            raise ConfigError(
                f"control address {self.control_address} is reachable from the network: give "
                f"trigger.control_keys (server secret key and authorized client keys; make them "
                f"with `rigstream keys`)"
            )
        self._auth: CurveServer | None = None
        if control_keys is not None and control_keys.server_secret_file is not None:
            assert control_keys.authorized_dir is not None  # checked with the config
            # read the keys before any pin moves
            self._auth = CurveServer(control_keys.server_secret_file, control_keys.authorized_dir,
                                     "trigger.control_keys", "trigger", logger)
        self.realtime_priority = realtime_priority
        """SCHED_FIFO priority (1..99) for the pulse thread, where the OS allows it (Linux,
        root or CAP_SYS_NICE); it cuts the worst-case lateness on a busy machine."""
        self.rig = rig
        self.pins = pins
        self.run = run
        trig = rig.trigger
        self.camera_pin = trig.camera_pin
        self.ttl_pin = trig.ttl_pin
        self.sync_pin: int | None = rig.sync_line.pin if rig.sync_line.enabled else None
        self.period_ns = trig.period_ns
        self.width_ns = round(trig.pulse_width_us * 1000)
        keys = {"trigger": "trigger.camera_pin", "sync": "sync_line.pin", "ttl": "trigger.ttl_pin"}
        for pin, name in lines.items():
            try:
                pins.setup_output(pin, 0, name=LINE_ROLES.get(name, name))
            except ValueError as exc:
                raise ConfigError(f"{keys[name]}: {exc}") from None

        self.pulses_address = rig.address("pulses", run)
        self._monitor: zmq.Socket | None = None
        try:
            if self._auth is not None:
                self._auth.start(ctx)
            self._pulse_pub = Publisher(ctx, self.pulses_address, hwm=PULSE_HWM)
            self._pub_lock = threading.Lock()
            self._rep = ctx.socket(zmq.REP)
            self._rep.setsockopt(zmq.LINGER, 0)
            if self._auth is not None:
                self._auth.secure(self._rep)
                self._monitor = self._auth.watch(self._rep)
            self._rep.bind(bind_address(self.control_address))
        except BaseException:
            if hasattr(self, "_pulse_pub"):
                self._pulse_pub.close()
            if hasattr(self, "_rep"):
                if self._monitor is not None:
                    self._rep.disable_monitor()
                    self._monitor.close()
                self._rep.close()
            if self._auth is not None:
                self._auth.close()
            raise
        self.malformed = protocol.MalformedCounter("trigger control")
        self._handlers: dict[str, Callable[[dict[str, Any], int], dict[str, Any]]] = {
            "start": self._cmd_start,
            "stop": self._cmd_stop,
            "status": self._cmd_status,
            "ttl": self._cmd_ttl,
            "output": self._cmd_output,
            "shutdown": self._cmd_shutdown,
        }

        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._shutdown = threading.Event()
        self._closed = False

        # Counters of the current train (written by the train thread, read by status).
        self.t0_ns = 0
        self.pulses_sent = 0
        self.sync_pulses_sent = 0
        self.overruns = 0
        """Pulses later than a whole period."""
        self.ttl_pulses = 0
        self.ttl_merged = 0
        """``ttl`` commands that came while the line was high and joined the pulse on it."""
        self._ttl_cv = threading.Condition()
        self._ttl_high: _TTLPulse | None = None  # the pulse on the line, until its fall
        self._ttl_closing = False
        self._ttl_thread: threading.Thread | None = None
        self.error = ""
        self._late_ns = np.zeros(LATE_WINDOW, dtype=np.int64)
        self._late_max_ns = 0
        try:  # the apparatus's lines, once the publisher is up (their callbacks publish)
            self.apparatus = Apparatus(rig, pins, self._publish)
        except BaseException:
            self._close_sockets()
            raise

        # Hot-loop state, allocated once.
        self._encoder = msgspec.msgpack.Encoder()
        self._pulse = Pulse(index=0, t_pi_ns=0, line="camera")
        self._fall = Pulse(index=0, t_pi_ns=0, line="camera-fall")
        self._sync_pulse = Pulse(index=0, t_pi_ns=0, line="sync")
        self._sync_fall = Pulse(index=0, t_pi_ns=0, line="sync-fall")
        self._sync_iv_ns = np.zeros(0, dtype=np.int64)
        self._sync_iv_i = 0
        self._sync_rng: np.random.Generator | None = None
        logger.info(
            "trigger: %.3f Hz on pin %d (width %.1f us), sync line %s, ttl pin %d; pulses at %s, "
            "control at %s (%s)",
            trig.rate_hz,
            self.camera_pin,
            trig.pulse_width_us,
            f"on pin {self.sync_pin}" if self.sync_pin is not None else "off",
            self.ttl_pin,
            self.pulses_address,
            self.control_address,
            "open to local clients" if self._auth is None
            else f"CURVE, authorized client keys: {self._auth.authorized}",
        )

    # -- control -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def refused_clients(self) -> int:
        """Control clients refused so far (CURVE handshakes that failed); 0 without keys."""
        return 0 if self._auth is None else self._auth.refused.total

    def serve(self, stop: threading.Event | None = None) -> None:
        """Answer commands until ``shutdown`` arrives or ``stop`` is set; then stop the train."""
        self._check_open()
        rep = self._rep
        poller = zmq.Poller()
        poller.register(rep, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        logger.info("trigger: serving commands at %s", self.control_address)
        try:
            while not self._shutdown.is_set() and not (stop is not None and stop.is_set()):
                ready = dict(poller.poll(POLL_MS))
                if self._auth is not None and self._monitor is not None and self._monitor in ready:
                    self._auth.log_handshake_failures(self._monitor)
                if rep not in ready:
                    continue
                parts = rep.recv_multipart()
                t_command_ns = time.monotonic_ns()
                reply = self.handle(parts, t_command_ns)
                rep.send(protocol.encode(reply))
        finally:
            self.stop()
            logger.info("trigger: no longer serving commands")

    def handle(self, parts: list[bytes], t_command_ns: int) -> Reply:
        """One request (the parts of a ZeroMQ message) to its reply; never raises."""
        try:
            if len(parts) != 1:
                raise protocol.ProtocolError(
                    "invalid", f"expected a one-part Command, got {len(parts)} parts"
                )
            cmd = protocol.decode(parts[0], Command)
        except protocol.ProtocolError as err:
            self.malformed(err)
            return Reply(ok=False, error=f"malformed request: {err}")
        handler = self._handlers.get(cmd.cmd)
        if handler is None:
            return Reply(
                ok=False, error=f"unknown command {cmd.cmd!r} (known: {', '.join(self._handlers)})"
            )
        try:
            data = handler(cmd.args, t_command_ns)
        except (ValueError, TriggerError, PinError, ApparatusError) as exc:
            logger.warning("trigger: %s refused: %s", cmd.cmd, exc)
            return Reply(ok=False, error=str(exc))
        except Exception as exc:
            logger.exception("trigger: %s failed", cmd.cmd)
            return Reply(ok=False, error=f"{cmd.cmd}: internal error: {exc!r}")
        return Reply(ok=True, data=data)

    def _cmd_start(self, args: dict[str, Any], t_command_ns: int) -> dict[str, Any]:
        a = _args("start", args, _StartArgs)
        t0 = self.start(max_pulses=a.max_pulses, duration_s=a.duration_s)
        return {"t0_ns": t0, "period_ns": self.period_ns, "rate_hz": self.rig.trigger.rate_hz}

    def _cmd_stop(self, args: dict[str, Any], t_command_ns: int) -> dict[str, Any]:
        _args("stop", args, _NoArgs)
        self.stop()
        return {"pulses_sent": self.pulses_sent, "sync_pulses_sent": self.sync_pulses_sent}

    def _cmd_status(self, args: dict[str, Any], t_command_ns: int) -> dict[str, Any]:
        _args("status", args, _NoArgs)
        return self.status()

    def _cmd_ttl(self, args: dict[str, Any], t_command_ns: int) -> dict[str, Any]:
        a = _args("ttl", args, _TTLArgs)
        return self.ttl(a.width_ms, t_command_ns)

    def _cmd_output(self, args: dict[str, Any], t_command_ns: int) -> dict[str, Any]:
        a = _args("output", args, _OutputArgs)
        self._check_open()
        return self.apparatus.output(a.name, a.width_ms, a.count, a.rate_hz, t_command_ns)

    def _cmd_shutdown(self, args: dict[str, Any], t_command_ns: int) -> dict[str, Any]:
        _args("shutdown", args, _NoArgs)
        self.stop()
        self._shutdown.set()
        return {"pulses_sent": self.pulses_sent}

    # -- the same operations from Python -------------------------------------------------

    def start(self, max_pulses: int | None = None, duration_s: float | None = None) -> int:
        """Start a new pulse train (indices from 0); returns ``t0_ns``, pulse 0's deadline.

        It ends by itself after ``max_pulses`` pulses or when the next deadline would be
        ``duration_s`` or more after ``t0`` (``ceil(duration_s * rate_hz)`` pulses).
        """
        self._check_open()
        if self.running:
            raise TriggerError(
                f"start: the pulse train is already running "
                f"({self.pulses_sent} pulses sent); stop it first"
            )
        if self._thread is not None:
            self._thread.join()
        self._halt.clear()
        self.pulses_sent = 0
        self.sync_pulses_sent = 0
        self.overruns = 0
        self.error = ""
        self._late_max_ns = 0
        self._late_ns[:] = 0
        if self.sync_pin is not None:
            self._sync_rng = np.random.default_rng(self.rig.sync_line.seed)
            self._sync_iv_ns = np.zeros(0, dtype=np.int64)
            self._sync_iv_i = 0
        duration_ns = round(duration_s * 1e9) if duration_s is not None else None
        t0 = time.monotonic_ns() + START_DELAY_NS
        self.t0_ns = t0
        self._thread = threading.Thread(
            target=self._train,
            args=(t0, max_pulses, duration_ns),
            name="rigstream-trigger",
            daemon=True,
        )
        self._thread.start()
        logger.info("trigger: train started (max_pulses=%s, duration_s=%s)", max_pulses, duration_s)
        return t0

    def stop(self) -> int:
        """Stop the train (pending falling edges are completed); returns pulses sent."""
        self._halt.set()
        thread = self._thread
        if thread is not None:
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                raise TriggerError(f"stop: the pulse thread did not end within {JOIN_TIMEOUT_S} s")
        return self.pulses_sent

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for a train started with a limit to end; True if it has."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        return not self.running

    def status(self) -> dict[str, Any]:
        """Counters and timing of the current (or last) train.

        Keys: running, t0_ns, pulses_sent, sync_pulses_sent, ttl_pulses, pulse_subscribers,
        line_subscribers (per simulated line; ``{}`` for real pins), rate_hz, late_max_us,
        late_median_us, late_p99_us, overruns, malformed, refused_clients, error.
        ``late_*_us``: how far rising edges came after their deadlines, over the last
        ``LATE_WINDOW`` pulses (max: the whole train); 0.0 before the first pulse.
        ``overruns``: pulses more than a whole period late.
        """
        n = min(self.pulses_sent, LATE_WINDOW)
        if n:
            late = self._late_ns[:n]
            p50, p99 = np.percentile(late, [50, 99])
        else:
            p50 = p99 = 0.0
        if self._closed:
            subscribers = 0
        else:
            with self._pub_lock:
                subscribers = self._pulse_pub.poll_subscriptions()
        return {
            "running": self.running,
            "t0_ns": self.t0_ns,
            "pulses_sent": self.pulses_sent,
            "sync_pulses_sent": self.sync_pulses_sent,
            "ttl_pulses": self.ttl_pulses,
            "ttl_merged": self.ttl_merged,
            "pulse_subscribers": subscribers,
            "line_subscribers": {} if self.pins.closed else self.pins.subscribers(),
            "rate_hz": self.rig.trigger.rate_hz,
            "late_max_us": self._late_max_ns / 1000,
            "late_median_us": float(p50) / 1000,
            "late_p99_us": float(p99) / 1000,
            "overruns": self.overruns,
            "malformed": self.malformed.total,
            "refused_clients": self.refused_clients,
            "error": self.error,
            **self.apparatus.status(),
        }

    def ttl(self, width_ms: float = 1.0, t_command_ns: int | None = None) -> dict[str, Any]:
        """Raise the TTL pin for ``width_ms``; returns once the line is high, not after the width.

        The reply: the pulse's ``index``, the command's arrival ``t_command_ns``, the pulse's
        rising edge ``t_edge_ns`` and when its fall is due (``t_fall_due_ns``; the falling
        edge's own time is published as ``ttl-fall`` and logged once written). A command that
        comes while the line is high joins that pulse (``merged``: true), which then falls at
        the later of the two due times. Published: ``ttl-command`` and ``ttl`` for a new pulse,
        ``ttl-fall`` when it falls, each with the pulse's index.
        """
        self._check_open()
        if not 0 < width_ms <= 1000:
            raise ValueError(f"ttl: width_ms must be in (0, 1000], got {width_ms}")
        if t_command_ns is None:
            t_command_ns = time.monotonic_ns()
        width_ns = round(width_ms * 1e6)
        with self._ttl_cv:
            if self._ttl_closing:
                raise TriggerError("the trigger daemon is closed")
            p = self._ttl_high
            merged = p is not None
            if p is None:
                t_edge = self.pins.write(self.ttl_pin, 1)
                p = _TTLPulse(self.ttl_pulses, t_command_ns, t_edge, t_edge + width_ns)
                self.ttl_pulses += 1
                self._ttl_high = p
                if self._ttl_thread is None:
                    self._ttl_thread = threading.Thread(
                        target=self._ttl_falls, name="ttl-falls", daemon=True)
                    self._ttl_thread.start()
            else:
                p.fall_due_ns = max(p.fall_due_ns, time.monotonic_ns() + width_ns)
                p.merged += 1
                self.ttl_merged += 1
            reply = {"index": p.index, "t_command_ns": t_command_ns, "t_edge_ns": p.t_edge_ns,
                     "t_fall_due_ns": p.fall_due_ns, "merged": merged}
            self._ttl_cv.notify()
        if not merged:
            self._publish(("ttl-command", p.index, t_command_ns), ("ttl", p.index, p.t_edge_ns))
        return reply

    def _ttl_falls(self) -> None:
        """The TTL line's falling edges, each written when due; a pulse high when the daemon
        closes still gets its whole width (a reward valve's pulse is its dose)."""
        cv = self._ttl_cv
        while True:
            with cv:
                p = self._ttl_high
                if p is None:
                    if self._ttl_closing:
                        return
                    cv.wait()
                    continue
                wait_ns = p.fall_due_ns - time.monotonic_ns()
                if wait_ns > 0:
                    cv.wait(wait_ns * 1e-9)
                    continue
                t_fall = self.pins.write(self.ttl_pin, 0)
                self._ttl_high = None
            self._publish(("ttl-fall", p.index, t_fall))
            logger.info(
                "trigger: ttl %d: command at %d ns, rising edge at %d ns (%.1f us later), falling "
                "edge at %d ns (%.3f ms wide)%s",
                p.index, p.t_command_ns, p.t_edge_ns, (p.t_edge_ns - p.t_command_ns) / 1000,
                t_fall, (t_fall - p.t_edge_ns) / 1e6,
                f"; {p.merged} later command(s) merged into it" if p.merged else "")

    def _publish(self, *edges: tuple[str, int, int]) -> None:
        msgs = [protocol.encode(Pulse(index=n, t_pi_ns=t, line=line)) for line, n, t in edges]
        with self._pub_lock:
            if self._closed and self._pulse_pub.sock.closed:
                return
            for msg in msgs:
                self._pulse_pub.sock.send(msg)

    # -- the pulse train -----------------------------------------------------------------

    def _next_sync_interval_ns(self) -> int:
        """The next sync interval; drawn 256 at a time (the same sequence as one by one)."""
        i = self._sync_iv_i
        if i == len(self._sync_iv_ns):
            sync = self.rig.sync_line
            assert self._sync_rng is not None
            draws = self._sync_rng.uniform(sync.min_interval_s, sync.max_interval_s, size=256)
            self._sync_iv_ns = np.round(draws * 1e9).astype(np.int64)
            i = 0
        self._sync_iv_i = i + 1
        return int(self._sync_iv_ns[i])

    def _train(self, t0: int, max_pulses: int | None, duration_ns: int | None) -> None:
        if self.realtime_priority is not None:
            _set_realtime(self.realtime_priority)
        try:
            self._loop(t0, max_pulses, duration_ns)
        except BaseException as exc:
            self.error = f"pulse train stopped: {exc!r}"
            logger.exception("trigger: pulse train failed after %d pulses", self.pulses_sent)
            for pin in (self.camera_pin, self.sync_pin):
                if pin is not None and not self.pins.closed:
                    try:
                        self.pins.write(pin, 0)
                    except Exception:
                        logger.exception("trigger: could not bring pin %d low", pin)
        else:
            logger.info(
                "trigger: train ended: %d pulses, %d sync pulses, late max %.1f us, %d overruns",
                self.pulses_sent,
                self.sync_pulses_sent,
                self._late_max_ns / 1000,
                self.overruns,
            )

    def _loop(self, t0: int, max_pulses: int | None, duration_ns: int | None) -> None:
        # Locals for the hot path: no attribute lookups; per pulse only ints and one message.
        now = time.monotonic_ns
        sleep = time.sleep
        write = self.pins.write
        halted = self._halt.is_set
        send = self._pulse_pub.sock.send
        lock = self._pub_lock
        encode = self._encoder.encode
        pulse = self._pulse
        fall = self._fall
        sync_pulse = self._sync_pulse
        sync_fall = self._sync_fall
        late = self._late_ns
        late_mask = LATE_WINDOW - 1
        never = _NEVER
        spin = SPIN_NS
        max_sleep = MAX_SLEEP_NS
        period = self.period_ns
        width = self.width_ns
        guard = min(SYNC_GUARD_NS, period // 4)
        cam = self.camera_pin
        sync = self.sync_pin
        sync_width = round(self.rig.sync_line.pulse_width_ms * 1e6)
        limit = max_pulses if max_pulses is not None else never
        end = t0 + duration_ns if duration_ns is not None else never

        k = 0  # next camera pulse
        rise_deadline = t0 if limit > 0 and t0 < end else never
        rise_at = rise_deadline  # later than the deadline only to keep the low time >= width
        fall_at = never
        j = 0  # next sync pulse
        sync_rise_at = t0 + self._next_sync_interval_ns() if sync is not None else never
        sync_fall_at = never
        late_max = 0

        while True:
            if rise_at != never and halted():
                rise_at = rise_deadline = sync_rise_at = never
            cam_next = fall_at if fall_at != never else rise_at
            sync_next = sync_fall_at if sync_fall_at != never else sync_rise_at
            if cam_next == never and sync_next == never:
                break
            do_sync = sync_next < cam_next and sync_next + guard <= rise_at
            target = sync_next if do_sync else cam_next
            remaining = target - now()
            if remaining > spin:
                sleep((remaining - spin if remaining - spin < max_sleep else max_sleep) * 1e-9)
                continue  # look again: a stop may have come, the next event may have changed
            while now() < target:
                pass

            if not do_sync:
                if fall_at != never:  # camera falling edge of pulse k - 1
                    t = write(cam, 0)
                    fall.index = k - 1
                    fall.t_pi_ns = t
                    msg = encode(fall)
                    with lock:
                        send(msg)
                    fall_at = never
                    if rise_at != never and rise_at < t + width:
                        rise_at = t + width
                    continue
                t = write(cam, 1)  # camera rising edge k
                d = t - rise_deadline
                late[k & late_mask] = d
                if d > late_max:
                    late_max = d
                    self._late_max_ns = d
                if d > period:
                    self.overruns += 1
                pulse.index = k
                pulse.t_pi_ns = t
                msg = encode(pulse)
                with lock:
                    send(msg)
                k += 1
                self.pulses_sent = k
                fall_at = t + width
                rise_deadline = t0 + k * period
                if k >= limit or rise_deadline >= end:  # the train is complete
                    rise_at = rise_deadline = sync_rise_at = never
                else:
                    rise_at = rise_deadline
            elif sync_fall_at != never:  # sync falling edge of sync pulse j - 1
                t = write(sync, 0)
                sync_fall.index = j - 1
                sync_fall.t_pi_ns = t
                msg = encode(sync_fall)
                with lock:
                    send(msg)
                sync_fall_at = never
            else:  # sync rising edge j
                t = write(sync, 1)
                sync_pulse.index = j
                sync_pulse.t_pi_ns = t
                msg = encode(sync_pulse)
                with lock:
                    send(msg)
                j += 1
                self.sync_pulses_sent = j
                sync_fall_at = t + sync_width
                sync_rise_at = t + self._next_sync_interval_ns()

    # -- lifetime ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TriggerError("the trigger daemon is closed")

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.stop()
        finally:
            self._closed = True
            with self._ttl_cv:  # a TTL still high falls when due (<= 1 s), before the publisher closes
                self._ttl_closing = True
                self._ttl_cv.notify()
            if self._ttl_thread is not None:
                self._ttl_thread.join(JOIN_TIMEOUT_S + 1.0)
                if self._ttl_thread.is_alive():
                    logger.error("trigger: the TTL line's thread did not end; the line may be high")
            self.apparatus.close(JOIN_TIMEOUT_S + 1.0)
            self._close_sockets()
            logger.info("trigger: closed after %d pulses", self.pulses_sent)

    def _close_sockets(self) -> None:
        if self._monitor is not None:
            self._rep.disable_monitor()
            self._monitor.close()
        self._rep.close()
        with self._pub_lock:
            self._pulse_pub.close()
        if self._auth is not None:
            self._auth.close()

    def __enter__(self) -> TriggerDaemon:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _set_realtime(priority: int) -> None:
    """Make the calling thread SCHED_FIFO at ``priority``; log and go on where not allowed."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError, ValueError) as exc:
        logger.warning(
            "trigger: could not make the pulse thread real-time (SCHED_FIFO %d): %s; "
            "running at normal priority",
            priority,
            exc,
        )
    else:
        logger.info("trigger: pulse thread runs SCHED_FIFO at priority %d", priority)


def run_trigger(
    rig: RigConfig,
    run: str,
    ctx: zmq.Context | None = None,
    stop: threading.Event | None = None,
    autostart: bool = False,
    *,
    realtime_priority: int | None = None,
    attach: Callable[[PinBackend], Callable[[], None]] | None = None,
) -> None:
    """Make the rig's pins and a daemon, and serve until ``shutdown`` or ``stop``.

    With ``autostart`` the train starts at once and runs until stopped. ``attach(pins)`` is
    called once the daemon has set its lines up (the simulated apparatus drives the simulated
    pins from there); what it returns is called before the pins close. A context made here is
    terminated on return.
    """
    own_ctx = ctx is None
    context = zmq.Context() if ctx is None else ctx
    try:
        with (
            make_pins(rig, run, context) as pins,
            TriggerDaemon(rig, pins, context, run, realtime_priority=realtime_priority) as d,
        ):
            # Everything made so far (modules, numpy, zmq) lives as long as the process: leave
            # it out of the garbage collector's full collections, which run in whichever thread
            # allocates and would otherwise scan it all, holding up the pulse thread.
            detach = attach(pins) if attach is not None else None
            try:
                gc.freeze()
                if autostart:
                    d.start()
                d.serve(stop)
            finally:
                if detach is not None:
                    detach()
    finally:
        if own_ctx:
            context.term()
