"""The one lifecycle every long-running component runs on.

A component (camera node, bridge, recorder, clip service, assembler, pose engine, monitor) is
a loop between two reports to the supervisor::

    start()                   open what needs the loop's process (devices, servers)
    report "ready"
    until finished() or should_stop():
        turn()                one bounded step of work; True if it made progress
        heartbeat "running"   every 0.5 s, with summary()
    finish()                  the last work after the loop; returns the final summary
    report "done"             (or, on an exception anywhere: "error", then re-raise)
    close()                   always; idempotent

How a component stops is one of two policies. A reader of streams (recorder, clip service,
assembler, bridge) *drains*: a stop, by ``stop.set()``, SIGINT/SIGTERM (:class:`SignalStop`) or
the supervisor's ``stop`` command, starts a wait of ``idle_s`` that every bit of progress
restarts, and the loop also ends by itself once its streams have ended. A source or a viewer
(camera node, monitor) stops *at once* and does its final work in :meth:`Component.finish`.
The pose engine has a rule of its own (the last pulse's set seen), an override of
:meth:`Component.should_stop`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from rigstream.protocol import Command
from rigstream.transport import ControlListener, StatusReporter

logger = logging.getLogger(__name__)

STOP_IDLE_S = 10.0
"""After a stop, how long a draining component waits with nothing arriving before it gives up
on its inputs (a loaded host may be seconds behind)."""


class StopWait:
    """When a consumer may finish after a stop: the stop (the ``stop`` event, or a ``stop``
    command on the control channel) starts a wait of ``idle_s`` that each bit of progress
    restarts, so a lagging host catches up before the consumer gives up on its inputs."""

    def __init__(self, control: ControlListener, stop: threading.Event,
                 idle_s: float = STOP_IDLE_S) -> None:
        self.control = control
        self.stop = stop
        self.idle_s = idle_s
        self.command: Command | None = None
        """The stop command, when the stop came as one (its args may say more)."""
        self.stopped_at: float | None = None
        self.last_progress = time.monotonic()

    def poll(self) -> bool:
        """Take a pending stop; True once stopped."""
        cmd = self.control.poll()
        if self.stopped_at is None and (self.stop.is_set() or (cmd is not None and cmd.cmd == "stop")):
            self.stopped_at = time.monotonic()
            self.command = cmd
        return self.stopped_at is not None

    def progressed(self) -> None:
        self.last_progress = time.monotonic()

    @property
    def since_progress_s(self) -> float:
        return time.monotonic() - self.last_progress

    @property
    def expired(self) -> bool:
        """Stopped, and nothing came for ``idle_s`` since the stop or the last progress."""
        return (self.stopped_at is not None
                and time.monotonic() - max(self.stopped_at, self.last_progress) > self.idle_s)


class Component:
    """Base of every component's loop (see the module). Subclasses set ``self.name`` (for
    logs), ``self.status`` and ``self.control`` in their constructor and write :meth:`turn`
    and :meth:`summary`; the other hooks have defaults."""

    name = "component"
    drains = True
    """Stop policy: drain (True) or stop at once (False)."""
    idle_s = STOP_IDLE_S
    """A draining component's wait after a stop with nothing arriving."""
    status: StatusReporter
    control: ControlListener
    waiting: StopWait
    """The stop and its command (set when :meth:`run_forever` starts)."""

    def run_forever(self, stop: threading.Event | None = None) -> dict[str, Any]:
        """Run until finished or stopped; returns the final summary (also reported "done")."""
        self.waiting = StopWait(self.control, stop or threading.Event(), self.idle_s)
        try:
            self.start()
            self.status.report("ready", **self.ready_stats())
            while not self.finished():
                if self.should_stop(self.waiting):
                    break
                if self.turn():
                    self.waiting.progressed()  # still catching up: keep waiting
                self.status.heartbeat(self.running_stats)
            summary = self.finish()
            self.status.report("done", **summary)
            return summary
        except Exception as exc:
            logger.exception("%s failed", self.name)
            self.status.report("error", **{**self._safe_stats(),
                                           "error": f"{type(exc).__name__}: {exc}"})
            raise
        finally:
            try:
                self.close()
            finally:
                self.status.close()

    # -- hooks ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Open what the loop needs before "ready" (a camera, a web server)."""

    def turn(self) -> bool:
        """One bounded step of work (it may wait up to a few tens of ms for input); True if it
        made progress."""
        raise NotImplementedError

    def finished(self) -> bool:
        """The work is done without a stop (every stream ended); never, by default."""
        return False

    def should_stop(self, waiting: StopWait) -> bool:
        """Whether the loop ends now for a stop (see the module's two policies)."""
        stopped = waiting.poll()
        if not self.drains:
            return stopped
        if waiting.expired:
            self.gave_up()
            return True
        return False

    def gave_up(self) -> None:
        """A draining component stopped with its streams unfinished (log what is missing)."""

    def finish(self) -> dict[str, Any]:
        """The last work after the loop; returns the final summary."""
        return self.summary()

    def summary(self) -> dict[str, Any]:
        raise NotImplementedError

    def ready_stats(self) -> dict[str, Any]:
        return self.summary()

    def running_stats(self) -> dict[str, Any]:
        return self.summary()

    def close(self) -> Any:
        """Let go of everything (idempotent); runs after done and after an error."""

    def _safe_stats(self) -> dict[str, Any]:
        try:
            return self.summary()
        except Exception:  # the error report must go out even if the summary cannot be made
            logger.debug("%s: no summary for the error report", self.name, exc_info=True)
            return {}
