"""ZeroMQ plumbing shared by every component: publishers that know who listens, subscribers,
status reports to the supervisor and the control channel.

Publishers are XPUB sockets in verbose mode so a producer can wait until its consumers have
subscribed before the first pulse (no slow-joiner losses at session start).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlparse

import zmq

from rigstream import protocol
from rigstream.protocol import Command, Status

logger = logging.getLogger(__name__)


def bind_address(address: str) -> str:
    """The address to bind for a connect address: tcp hosts other than loopback bind on all
    interfaces of the named port; ipc and inproc bind as given (ipc folders are created)."""
    if address.startswith("tcp://"):
        parsed = urlparse(address)
        host = parsed.hostname or "*"
        if host in ("localhost", "127.0.0.1", "::1", "*", "0.0.0.0") or host[0].isdigit():
            host = "127.0.0.1" if host == "localhost" else host
            return f"tcp://{host}:{parsed.port}"
        return f"tcp://*:{parsed.port}"
    if address.startswith("ipc://"):
        folder = os.path.dirname(address[len("ipc://"):])
        if folder:
            os.makedirs(folder, exist_ok=True)
    return address


class Publisher:
    """An XPUB socket that counts its subscribers."""

    def __init__(self, ctx: zmq.Context, address: str, hwm: int = 1000) -> None:
        self.address = address
        self.sock = ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.bind(bind_address(address))
        self.subscribers = 0

    def poll_subscriptions(self, timeout_ms: int = 0) -> int:
        """Read pending (un)subscriptions; returns the subscriber count."""
        while self.sock.poll(timeout_ms, zmq.POLLIN):
            msg = self.sock.recv()
            if msg[:1] == b"\x01":
                self.subscribers += 1
            elif msg[:1] == b"\x00":
                self.subscribers = max(0, self.subscribers - 1)
            timeout_ms = 0
        return self.subscribers

    def wait_for_subscribers(self, n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.poll_subscriptions() < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll_subscriptions(int(min(left, 0.1) * 1000) + 1)
        return True

    def send(self, msg: protocol._Message) -> None:
        self.sock.send(protocol.encode(msg))

    def close(self) -> None:
        self.sock.close()


def subscriber(ctx: zmq.Context, addresses: str | Iterable[str], hwm: int = 1000) -> zmq.Socket:
    """A SUB socket connected to every address, subscribed to everything."""
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    for addr in [addresses] if isinstance(addresses, str) else addresses:
        sock.connect(addr)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    return sock


class StatusReporter:
    """Pushes this component's Status to the supervisor (if one listens; never blocks)."""

    def __init__(self, ctx: zmq.Context, address: str | None, component: str) -> None:
        self.component = component
        self.sock: zmq.Socket | None = None
        if address:
            self.sock = ctx.socket(zmq.PUSH)
            self.sock.setsockopt(zmq.LINGER, 2000)
            self.sock.setsockopt(zmq.SNDHWM, 100)
            self.sock.connect(address)
        self._last_heartbeat = time.monotonic()

    def heartbeat(self, summary: Callable[[], dict[str, Any]], every_s: float = 0.5) -> None:
        """Report ``running`` with ``summary()`` once ``every_s`` has passed since the last
        report of any state (call it every turn of a loop)."""
        if time.monotonic() - self._last_heartbeat > every_s:
            self.report("running", **summary())

    def report(self, state: str, **stats: Any) -> None:
        self._last_heartbeat = time.monotonic()
        if self.sock is None:
            return
        msg = Status(component=self.component, state=state,  # type: ignore[arg-type]
                     t_host_ns=time.monotonic_ns(), stats=stats)
        try:
            self.sock.send(protocol.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            logger.debug("%s: supervisor not reading status", self.component)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


class ControlListener:
    """SUB on the supervisor's control channel; ``poll()`` returns a Command or None."""

    def __init__(self, ctx: zmq.Context, address: str | None, component: str) -> None:
        self.sock: zmq.Socket | None = subscriber(ctx, address) if address else None
        self.malformed = protocol.MalformedCounter(f"{component} control")

    def poll(self) -> Command | None:
        if self.sock is None:
            return None
        while True:
            try:
                buf = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return None
            try:
                return protocol.decode(buf, Command)
            except protocol.ProtocolError as err:
                self.malformed(err)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def request(ctx: zmq.Context, address: str, cmd: Command, timeout_s: float = 2.0) -> protocol.Reply:
    """One REQ/REP round trip; raises TimeoutError if nobody answers."""
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    try:
        sock.send(protocol.encode(cmd))
        if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise TimeoutError(f"no reply from {address} to {cmd.cmd!r} within {timeout_s} s")
        return protocol.decode(sock.recv(), protocol.Reply)
    finally:
        sock.close()
