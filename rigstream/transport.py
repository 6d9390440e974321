"""ZeroMQ plumbing shared by every component: publishers that know who listens, subscribers,
status reports to the supervisor and the control channel.

Publishers are XPUB sockets in verbose mode so a producer can wait until its consumers have
subscribed before the first pulse (no slow-joiner losses at session start).

A REP socket reachable from the network is guarded with ZeroMQ CURVE: the helpers at the end
load key files made by ``rigstream keys`` (``zmq.auth`` certificates: ``NAME.key`` holds the
public key, ``NAME.key_secret`` both) and :func:`request` takes a client's keys.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

import zmq

from rigstream import protocol
from rigstream.basics import write_error
from rigstream.config import ConfigError, InputError, RigConfig
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


def bind(sock: zmq.Socket, address: str) -> None:
    """Bind ``sock`` for the connect address ``address``; where that fails, close the socket
    (an open one would hang its context's ``term()`` at exit) and raise :class:`AddressError`
    naming the address and why."""
    try:
        sock.bind(bind_address(address))
    except (zmq.ZMQError, OSError) as exc:
        sock.close(linger=0)
        raise AddressError(f"cannot bind {address}: {exc}") from None


class AddressError(InputError):
    """An address this host cannot bind or that no component could reach."""


IPC_PATH_MAX = 107
"""The longest ipc path in bytes (Linux ``sun_path`` holds 108 with its terminating NUL)."""

_SCHEMES = ("ipc://", "tcp://")
"""Components are processes, on one host or several: inproc cannot reach between them."""


_LINES = ("trigger", "sync", "ttl", "strobe")
"""Stand-ins for the simulated lines' names, enough to find a template that merges them."""


def _templates(rig: RigConfig) -> Iterator[tuple[str, str, list[dict[str, str]]]]:
    """Each address template of the rig (where it is set, the template) with the fields of each
    socket made from it: one per camera (``frames``, but for a camera with an address of its
    own; ``local_headers``), one per simulated line, one for the rest."""
    cameras = [{"camera": c.name} for c in rig.cameras]
    per = {"frames": [{"camera": c.name} for c in rig.cameras if not c.address],
           "local_headers": cameras, "sim_lines": [{"line": line} for line in _LINES]}
    for key in rig.transport.__struct_fields__:
        template = getattr(rig.transport, key)
        if isinstance(template, str):
            yield f"transport.{key}", template, per.get(key, [{}])
    for c in rig.cameras:
        if c.address:
            yield f"cameras[{c.name}].address", c.address, [{"camera": c.name}]


def check_addresses(rig: RigConfig, run: str, bound_here: bool = True) -> str:
    """Every address the rig's components use, for the runtime folder ``run``: a known scheme,
    only the fields a template may name, an ipc path short enough in a folder that can be made,
    a tcp port in range, no two sockets on one address, and (``bound_here``: the whole rig on
    this host) every tcp port free. Raises AddressError for the first problem; returns a
    one-line account."""
    seen: dict[str, str] = {}
    for where, template, values in _templates(rig):
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        if unknown := sorted(names - {"run", "camera", "line"}):
            raise AddressError(f"{where} {template!r}: unknown field(s) {unknown} (a template may name "
                               f"{{run}}, {{camera}}, {{line}})")
        if not template.startswith(_SCHEMES):
            raise AddressError(f"{where} {template!r}: the scheme must be ipc:// or tcp:// (components "
                               f"are processes; inproc and others cannot reach between them)")
        for value in values:
            address = template.format(**{"run": run, "camera": "", "line": "", **value})
            _check_one(f"{where} {template!r}", address, seen, bound_here)
            seen[address] = where
    n_tcp = sum(a.startswith("tcp://") for a in seen)
    return f"{len(seen)} addresses ok ({len(seen) - n_tcp} ipc, {n_tcp} tcp" + (
        ", tcp ports free)" if n_tcp and bound_here else ")")


def _check_one(where: str, address: str, seen: dict[str, str], bound_here: bool) -> None:
    if address in seen:
        raise AddressError(f"{where}: {address} is also {seen[address]} (two sockets cannot bind one "
                           f"address: a template used per camera or per line must name {{camera}} or "
                           f"{{line}})")
    if address.startswith("ipc://"):
        path = address[len("ipc://"):]
        if len(path.encode()) > IPC_PATH_MAX:
            raise AddressError(f"{where}: ipc path {path!r} is {len(path.encode())} bytes, longer than "
                               f"the {IPC_PATH_MAX} a Unix socket takes (use a shorter runtime folder)")
        folder = Path(path).parent
        while not folder.exists():
            folder = folder.parent
        if why := write_error(folder):  # binding makes the folders (and the socket) there
            raise AddressError(f"{where}: cannot make the ipc socket {path} in {folder}: {why}")
        return
    parsed = urlparse(address)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if port is None or not 1 <= port <= 65535:
        raise AddressError(f"{where}: {address} needs a port in 1..65535")
    if bound_here:
        host = urlparse(bind_address(address)).hostname or ""
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds
            try:
                probe.bind(("" if host == "*" else host, port))
            except OSError as exc:
                raise AddressError(f"{where}: cannot bind {address} on this host: {exc.strerror}") from None


class Publisher:
    """An XPUB socket that counts its subscribers."""

    def __init__(self, ctx: zmq.Context, address: str, hwm: int = 1000) -> None:
        self.address = address
        self.sock = ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 2000)
        bind(self.sock, address)
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


def received(sock: zmq.Socket, expected: Any, malformed: protocol.MalformedCounter) -> Iterator[Any]:
    """Each message waiting on ``sock`` (never blocks), decoded as ``expected`` (a message type or
    a tuple of them); one that does not decode is counted (and logged) by ``malformed`` and
    skipped, so the receiver keeps running."""
    while True:
        try:
            buf = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            yield protocol.decode(buf, expected)
        except protocol.ProtocolError as err:
            malformed(err)


class SignalStop(threading.Event):
    """A component's stop, set by SIGINT or SIGTERM (:meth:`on_signals`) or by ``set()``.

    The signal handler sets the flag without the Event's lock: ``Event.set`` takes a lock, and
    a second signal landing while the first handler holds it deadlocks the main thread forever
    (seen: every component of a SIGKILLed supervisor stuck in ``Event.set`` under nested
    handlers). Readers call ``is_set()``, which reads the flag; nothing waits on it.
    """

    def _from_signal(self, signum: int, frame: object) -> None:
        self._flag = True  # type: ignore[attr-defined]  # lock-free on purpose (see above)

    def on_signals(self) -> SignalStop:
        """Stop on SIGINT and SIGTERM, but for a signal ignored on purpose (a component under a
        supervisor ignores SIGINT: the supervisor handles a terminal's Ctrl-C for all)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                signal.signal(sig, self._from_signal)
        return self


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
        return next(received(self.sock, Command, self.malformed), None)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def request(
    ctx: zmq.Context,
    address: str,
    cmd: Command,
    timeout_s: float = 2.0,
    *,
    curve: CurveClientKeys | None = None,
) -> protocol.Reply:
    """One REQ/REP round trip; raises TimeoutError if nobody answers.

    With ``curve`` the request goes over ZeroMQ CURVE to a server that has the public key
    ``curve.server_public``; a server that does not authorize this client's key never answers
    (the handshake fails), which shows here as the TimeoutError.
    """
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.apply(sock)
    sock.connect(address)
    try:
        sock.send(protocol.encode(cmd))
        if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise TimeoutError(f"no reply from {address} to {cmd.cmd!r} within {timeout_s} s")
        return protocol.decode(sock.recv(), protocol.Reply)
    finally:
        sock.close()


# -- CURVE ---------------------------------------------------------------------------------


def is_local_address(address: str) -> bool:
    """True for addresses no other machine can reach: ipc, inproc and tcp bound to loopback.

    It judges the address a socket binds for ``address`` (:func:`bind_address`): a tcp host
    name binds every interface, so only ``localhost`` and loopback IPs count as local.
    """
    bound = bind_address(address) if address.startswith("tcp://") else address
    if bound.startswith(("ipc://", "inproc://")):
        return True
    if not bound.startswith("tcp://"):
        return False  # pgm, epgm, udp, ws, ...: on the network
    host = urlparse(bound).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*" or an interface name


class CurveClientKeys(NamedTuple):
    """A client's CURVE keys (z85 text as bytes, 40 characters each) and its server's public key."""

    server_public: bytes
    public: bytes
    secret: bytes

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (before it connects) a CURVE client of the server."""
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def load_curve_keypair(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """``(public, secret)`` from a ``NAME.key_secret`` file; InputError naming the file if it
    is missing or holds no secret key."""
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: expected a CURVE key pair file (NAME.key_secret): {exc}") from None
    if secret is None:
        raise InputError(
            f"{path}: holds only a public key; expected the secret key file (NAME.key_secret, "
            f"made by rigstream keys)"
        )
    return public, secret


def load_curve_public(path: str | os.PathLike[str]) -> bytes:
    """The public key from a ``NAME.key`` (or ``NAME.key_secret``) file."""
    import zmq.auth

    try:
        return zmq.auth.load_certificate(path)[0]
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: expected a CURVE public key file (NAME.key): {exc}") from None


def load_curve_client_keys(
    server_public_file: str | os.PathLike[str], client_secret_file: str | os.PathLike[str]
) -> CurveClientKeys:
    """The keys :func:`request` needs to talk to a CURVE server: the server's ``NAME.key`` and
    this client's ``NAME.key_secret``."""
    public, secret = load_curve_keypair(client_secret_file)
    return CurveClientKeys(load_curve_public(server_public_file), public, secret)


def trigger_client_keys(rig: RigConfig) -> CurveClientKeys | None:
    """The CURVE keys a host-side client (the supervisor, the pose engine's TTLs, the monitor)
    uses to command the rig's trigger daemon; None where the rig gives no client side."""
    keys = rig.trigger.control_keys
    if keys is None or keys.client_secret_file is None or keys.server_public_file is None:
        return None
    return load_curve_client_keys(keys.server_public_file, keys.client_secret_file)


REFUSAL_LOG_EVERY = 100
"""A client refused again and again (a REQ socket retries every 100 ms) is logged at WARNING
the first time and then once every this many refusals."""
HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
"""The socket monitor events of a refused CURVE handshake."""


class RefusalLog:
    """Counts a server's refused clients per reason; logs the first, then every
    ``REFUSAL_LOG_EVERY``-th, at WARNING (the rest at DEBUG)."""

    def __init__(self, who: str, log: logging.Logger) -> None:
        self.who = who
        self._log = log
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, reason: str) -> None:
        with self._lock:
            n = self._counts[reason] = self._counts.get(reason, 0) + 1
        if n == 1 or n % REFUSAL_LOG_EVERY == 0:
            again = f" ({n} times so far)" if n > 1 else ""
            self._log.warning("%s: refused a control client: %s%s", self.who, reason, again)
        else:
            self._log.debug("%s: refused a control client: %s (%d)", self.who, reason, n)

    @property
    def total(self) -> int:
        return sum(self._counts.values())


class AuthorizedKeys:
    """A ZAP credentials provider (``configure_curve_callback``): the public keys found in a
    folder of ``*.key`` files, as ``configure_curve(location=folder)`` would load them, but
    refusals are logged at WARNING (ThreadAuthenticator logs them at DEBUG only)."""

    def __init__(self, folder: str, refused: RefusalLog, field: str) -> None:
        import zmq.auth

        self.folder = folder
        try:
            self.keys = set(zmq.auth.load_certificates(folder))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{field}: expected a folder of client public keys (*.key, made by rigstream keys), "
                f"got {folder!r}: {exc}"
            ) from None
        if not self.keys:
            raise ConfigError(
                f"{field}: no client public key (*.key) in {folder}; copy there the NAME.key of every "
                f"machine allowed to command it"
            )
        self._refused = refused

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        self._refused(f"CURVE key {key.decode('ascii', 'replace')} is not authorized in {self.folder}")
        return False


class CurveServer:
    """A control socket's CURVE server side, beside the client side above: the server's keys, a
    ZAP handler admitting only the public keys in ``authorized_dir`` (one per zmq.Context), and
    the refusals, counted and logged (``who`` names the server in log lines).

    Making one reads the key files (ConfigError naming ``keys_field``'s entry if they will not
    do); ``start`` starts the handler; ``secure`` makes a socket, before it binds, a server;
    ``watch`` gives a monitor socket whose handshake failures ``log_handshake_failures`` counts.
    """

    def __init__(self, server_secret_file: str, authorized_dir: str, keys_field: str, who: str,
                 log: logging.Logger) -> None:
        try:
            self.public, self.secret = load_curve_keypair(server_secret_file)
        except InputError as exc:
            raise ConfigError(f"{keys_field}.server_secret_file: {exc}") from None
        self.who = who
        self._log = log
        self.refused = RefusalLog(who, log)
        self._provider = AuthorizedKeys(authorized_dir, self.refused, f"{keys_field}.authorized_dir")
        self.authorized = len(self._provider.keys)
        self.authenticator: Any = None

    def start(self, ctx: zmq.Context) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(ctx, log=self._log.getChild("zap"))
        try:
            auth.start()
        except zmq.ZMQError as exc:
            auth.stop()
            raise RuntimeError(
                f"{self.who}: cannot start the ZAP authenticator ({exc}): this zmq.Context already "
                f"has one; give the server a context of its own"
            ) from None
        auth.configure_curve_callback(domain="*", credentials_provider=self._provider)
        self.authenticator = auth

    def secure(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (before it binds) a CURVE server with these keys."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def watch(self, sock: zmq.Socket) -> zmq.Socket:
        """A monitor socket for ``sock``'s failed handshakes (close it with ``disable_monitor``)."""
        return sock.get_monitor_socket(HANDSHAKE_FAILED)

    def log_handshake_failures(self, monitor: zmq.Socket) -> None:
        """Handshake failures the ZAP handler does not see (a client without keys, or with a
        wrong server key) are refusals too; failed authorizations were logged with the key."""
        from zmq.utils.monitor import recv_monitor_message

        while monitor.poll(0, zmq.POLLIN):
            event = recv_monitor_message(monitor)
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                continue
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                what = (f"handshake failed (protocol error {event['value']:#x}: the client has no "
                        f"CURVE keys, or not this server's key)")
            else:
                what = f"handshake failed ({os.strerror(event['value'])})"
            self.refused(f"{what} at {event['endpoint'].decode(errors='replace')}")

    def close(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None


def create_curve_keys(folder: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """A new key pair in ``folder``: ``NAME.key`` (public, to hand out) and ``NAME.key_secret``
    (readable by its owner only). Refuses to overwrite an existing pair."""
    import zmq.auth

    out = Path(folder)
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise InputError(f"key name: expected a plain file name, got {name!r}")
    existing = [p for p in (out / f"{name}.key", out / f"{name}.key_secret") if p.exists()]
    if existing:
        raise InputError(
            f"{existing[0]}: already exists; remove it first or pick another --name "
            f"(a replaced key locks out everyone who holds the old one)"
        )
    out.mkdir(parents=True, exist_ok=True)
    # The secret file exists, empty and private, before a key is written into it.
    os.close(os.open(out / f"{name}.key_secret", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    public_file, secret_file = zmq.auth.create_certificates(out, name)
    return Path(public_file), Path(secret_file)
