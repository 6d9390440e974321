"""The composition: the one place that builds the monitor's parts and wires them together.

:class:`Monitor` is the monitor's component (:mod:`rigstream.component`): its constructor makes
the state, the bridge, the receiver, the rig controls, the buttons, the frame encoder and the
web server, and hands each the others it needs; its loop turns the receiver, its ``start()``
serves the page, its summary joins the parts' stats. :func:`run_monitor` runs one until
stopped (``rigstream monitor``). No part imports this module or holds the component.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import zmq

from rigstream.app.monitor.bridge import Waker
from rigstream.app.monitor.buttons import Buttons
from rigstream.app.monitor.controls import RigControls
from rigstream.app.monitor.encode import FrameEncoder
from rigstream.app.monitor.receiver import Receiver
from rigstream.app.monitor.security import is_loopback_host
from rigstream.app.monitor.server import WebServer
from rigstream.app.monitor.state import MonitorState
from rigstream.component import Component
from rigstream.config import InputError, RigConfig
from rigstream.transport import (
    ControlListener,
    CurveClientKeys,
    SignalStop,
    StatusReporter,
    trigger_client_keys,
)


class Monitor(Component):
    """Receives what a running rig publishes and serves the monitor page.

    ``start()`` binds the web server and returns its URL; ``run_forever()`` then runs the
    receive loop until a stop (the ``stop`` event or a ``stop`` command) and returns the
    monitor's summary. Use it as a context manager, or call ``close()``.
    """

    name = "monitor"
    drains = False  # a viewer: it stops at once

    def __init__(self, rig: RigConfig, run: str, ctx: zmq.Context | None = None,
                 status_address: str | None = None, host: str = "127.0.0.1", port: int = 8800,
                 token: str | None = None, curve: CurveClientKeys | None = None) -> None:
        if not is_loopback_host(host) and not token:
            raise InputError(
                f"monitor: host {host} is reachable from the network, so a token is required "
                f"(--token or RIGSTREAM_MONITOR_TOKEN); loopback (127.0.0.1) needs none")
        self.rig = rig
        self.run = run
        self.ctx = ctx or zmq.Context.instance()
        self.host, self.port, self.token = host, port, token or None
        curve = curve if curve is not None else trigger_client_keys(rig)  # a bad key fails before any socket
        self.state = MonitorState(rig)
        waker = Waker()
        self.receiver = Receiver(rig, run, self.ctx, self.state, waker.notify)
        self.frames = self.receiver.frames
        self.status = StatusReporter(self.ctx, status_address, "monitor")
        self.control = ControlListener(self.ctx, status_address and rig.address("control", run),
                                       "monitor")
        controls = RigControls(rig, run, self.ctx, curve)
        self.buttons = Buttons(controls, rig, self.state.log)
        self.encoder = FrameEncoder(self.state, rig)
        self.web = WebServer(rig, self.state, waker, self.encoder, self.buttons, self.token, self.summary)
        self.url: str | None = None
        self._closed = False

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> str:  # type: ignore[override]  # the URL, for callers that serve alone
        """Serve the page; returns its URL (with ``?token=`` when a token is set)."""
        if self.url is None:
            port = self.web.start(self.host, self.port)
            host = self.host if ":" not in self.host else f"[{self.host}]"
            if self.host in ("0.0.0.0", "::", ""):
                host = socket.gethostname()
            self.url = f"http://{host}:{port}/" + (f"?token={self.token}" if self.token else "")
            self.state.log("info", f"monitor serving on {host}:{port}")
        return self.url

    # -- the receive loop (rigstream.component; start() serves the page) ------------------------

    def turn(self) -> bool:
        return self.receiver.turn()

    def ready_stats(self) -> dict[str, Any]:
        return {"url": self.url, **self.summary()}

    running_stats = ready_stats

    def finish(self) -> dict[str, Any]:
        return self.ready_stats()

    def summary(self) -> dict[str, Any]:
        """The receiver's counts, the control channel's malformed commands, the requests being
        answered and the buttons' presses."""
        stats = self.receiver.summary()
        stats["malformed"]["control"] = self.control.malformed.as_dict()
        return {**stats, "clients": self.web.clients, "buttons": self.buttons.stats()}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.web.stop()
        self.encoder.close()
        self.receiver.close()
        self.status.close()
        self.control.close()


def run_monitor(rig: RigConfig, run: str, status_address: str | None = None, host: str = "127.0.0.1",
                port: int = 8800, token: str | None = None,
                announce: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the monitor until stopped (SIGINT/SIGTERM or the supervisor's stop); ``announce``
    gets the URL once the page is served."""
    stop = SignalStop().on_signals()
    ctx = zmq.Context()
    try:
        with Monitor(rig, run, ctx, status_address, host, port, token) as monitor:
            url = monitor.start()
            if announce is not None:
                announce(url)
            return monitor.run_forever(stop)
    finally:
        ctx.destroy(linger=0)
