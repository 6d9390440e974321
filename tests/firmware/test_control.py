"""Who may command the trigger: local clients freely, network clients only with CURVE keys.

The CURVE tests use real tcp sockets and real key files made the way ``rigstream keys`` makes
them; the daemon binds 127.0.0.1 with keys given (the path a network-bound daemon takes) and,
once, 0.0.0.0 as a Pi reachable from the lab network would.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import zmq

from rigstream import protocol, transport
from rigstream.app import cli
from rigstream.config import ConfigError, ControlKeysConfig, InputError, RigConfig, TransportConfig
from rigstream.firmware.pins import SimPins
from rigstream.firmware.trigger import TriggerDaemon
from rigstream.protocol import Command, Pulse
from rigstream.transport import CurveClientKeys, create_curve_keys, is_local_address

from .conftest import make_rig, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_control(rig: RigConfig, address: str, keys: ControlKeysConfig | None = None) -> RigConfig:
    return msgspec.structs.replace(
        rig,
        transport=msgspec.structs.replace(rig.transport, trigger_control=address),
        trigger=msgspec.structs.replace(rig.trigger, control_keys=keys),
    )


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("ipc:///tmp/rs/trigger-control", True),
        ("inproc://control", True),
        ("tcp://127.0.0.1:5555", True),
        ("tcp://localhost:5555", True),
        ("tcp://127.0.0.2:5555", True),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://*:5555", False),
        ("tcp://192.168.1.20:5555", False),
        ("tcp://raspberrypi.local:5555", False),  # a host name binds every interface
        ("epgm://eth0;239.192.1.1:5555", False),
    ],
)
def test_which_addresses_are_local(address: str, local: bool) -> None:
    assert is_local_address(address) is local


def test_network_address_without_keys_is_refused_before_any_pin_moves(
    run_dir: str, ctx: zmq.Context
) -> None:
    rig = with_control(make_rig(), "tcp://0.0.0.0:5555")
    with SimPins() as pins:
        with pytest.raises(ConfigError) as err:
            TriggerDaemon(rig, pins, ctx, run_dir)
        assert pins.outputs == ()
    assert str(err.value) == (
        "control address tcp://0.0.0.0:5555 is reachable from the network: give "
        "trigger.control_keys (server secret key and authorized client keys; make them with "
        "`rigstream keys`)"
    )


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """Key pairs for the trigger, an authorized client and an intruder; only the client's public
    key is in the authorized folder."""
    folder = tmp_path / "keys"
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    paths: dict[str, Path] = {"dir": folder, "authorized": authorized}
    for name in ("trigger", "client", "intruder"):
        paths[f"{name}.key"], paths[f"{name}.key_secret"] = create_curve_keys(folder, name)
    (authorized / "client.key").write_bytes(paths["client.key"].read_bytes())
    return paths


class SecureDaemon:
    """A daemon with CURVE keys serving in a thread, on its own context (one ZAP per context)."""

    def __init__(self, rig: RigConfig, run: str) -> None:
        self.ctx = zmq.Context()
        self.pins = SimPins()
        self.daemon = TriggerDaemon(rig, self.pins, self.ctx, run)
        self.thread = threading.Thread(target=self.daemon.serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.daemon._shutdown.set()
        self.thread.join(5)
        self.daemon.close()
        self.pins.close()
        self.ctx.destroy(linger=0)


@pytest.fixture
def secure(keys: dict[str, Path], run_dir: str) -> Iterator[tuple[SecureDaemon, str]]:
    """A daemon bound to tcp://127.0.0.1:PORT with keys: the path a network-bound one takes."""
    address = f"tcp://127.0.0.1:{free_port()}"
    control_keys = ControlKeysConfig(
        server_secret_file=str(keys["trigger.key_secret"]), authorized_dir=str(keys["authorized"])
    )
    d = SecureDaemon(with_control(make_rig(), address, control_keys), run_dir)
    yield d, address
    d.close()


def client_keys(keys: dict[str, Path], who: str) -> CurveClientKeys:
    return transport.load_curve_client_keys(keys["trigger.key"], keys[f"{who}.key_secret"])


def test_an_authorized_client_is_answered(
    secure: tuple[SecureDaemon, str], keys: dict[str, Path], ctx: zmq.Context
) -> None:
    d, address = secure
    curve = client_keys(keys, "client")
    reply = transport.request(ctx, address, Command(cmd="status"), curve=curve)
    assert reply.ok and reply.data["refused_clients"] == 0
    assert transport.request(ctx, address, Command(cmd="ttl"), curve=curve).ok
    assert d.daemon.ttl_pulses == 1


def test_other_clients_get_no_answer_and_are_logged(
    secure: tuple[SecureDaemon, str],
    keys: dict[str, Path],
    ctx: zmq.Context,
    caplog: pytest.LogCaptureFixture,
) -> None:
    d, address = secure
    caplog.set_level(logging.WARNING, logger="rigstream.firmware.trigger")
    intruder = client_keys(keys, "intruder")
    with pytest.raises(TimeoutError):
        transport.request(ctx, address, Command(cmd="ttl"), timeout_s=0.5, curve=intruder)
    with pytest.raises(TimeoutError):  # no keys at all
        transport.request(ctx, address, Command(cmd="ttl"), timeout_s=0.5)
    wrong_server = CurveClientKeys(intruder.public, *client_keys(keys, "client")[1:])
    with pytest.raises(TimeoutError):  # an authorized client that trusts another server
        transport.request(ctx, address, Command(cmd="ttl"), timeout_s=0.5, curve=wrong_server)

    assert d.daemon.ttl_pulses == 0
    intruder_public = keys["intruder.key"].read_text().split('public-key = "')[1][:40]
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"CURVE key {intruder_public} is not authorized in {keys['authorized']}" in m
        for m in refusals
    ), refusals
    assert any("handshake failed" in m for m in refusals), refusals
    # A REQ socket retries: the same refusal is not logged at WARNING every 100 ms.
    assert len(refusals) <= 4
    status = transport.request(ctx, address, Command(cmd="status"), curve=client_keys(keys, "client"))
    assert status.data["refused_clients"] >= 3


def test_a_daemon_bound_to_every_interface_serves_authorized_clients(
    keys: dict[str, Path], run_dir: str, ctx: zmq.Context
) -> None:
    port = free_port()
    control_keys = ControlKeysConfig(
        server_secret_file=str(keys["trigger.key_secret"]), authorized_dir=str(keys["authorized"])
    )
    rig = with_control(make_rig(), f"tcp://0.0.0.0:{port}", control_keys)
    d = SecureDaemon(rig, run_dir)
    try:
        here = f"tcp://127.0.0.1:{port}"
        assert transport.request(ctx, here, Command(cmd="status"), curve=client_keys(keys, "client")).ok
        with pytest.raises(TimeoutError):
            transport.request(ctx, here, Command(cmd="status"), timeout_s=0.3)
    finally:
        d.close()


def test_ttl_times_are_published_and_logged(
    keys: dict[str, Path], run_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rigstream.firmware.trigger")
    rig = make_rig(sync={"enabled": False})
    with zmq.Context() as ctx, SimPins() as pins, TriggerDaemon(rig, pins, ctx, run_dir) as daemon:
        sub = transport.subscriber(ctx, daemon.pulses_address)
        wait_for(lambda: daemon.status()["pulse_subscribers"] == 1, what="subscriber")
        got = []

        def pulse() -> Pulse:
            assert sub.poll(2000), f"no pulse after {got}"
            got.append(protocol.decode(sub.recv(), Pulse))
            return got[-1]

        first = daemon.ttl(width_ms=0.5)
        joined = daemon.ttl(width_ms=0.1)  # the line is still high: no edges of its own
        falls = [pulse(), pulse(), pulse()][-1]
        second = daemon.ttl(width_ms=0.5, t_command_ns=falls.t_pi_ns)
        pulse(), pulse(), pulse()
        sub.close()
    assert joined["merged"] and joined["index"] == 0
    assert [(m.line, m.index) for m in got] == [
        (line, n) for n in (0, 1) for line in ("ttl-command", "ttl", "ttl-fall")]
    for times, (command, rise, fall) in zip((first, second), (got[:3], got[3:]), strict=True):
        assert (command.t_pi_ns, rise.t_pi_ns) == (times["t_command_ns"], times["t_edge_ns"])
        assert fall.t_pi_ns >= times["t_fall_due_ns"]
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trigger: ttl ")]
    assert len(logged) == 2
    assert str(first["t_command_ns"]) in logged[0] and str(got[2].t_pi_ns) in logged[0]
    assert "1 later command(s) merged into it" in logged[0]


def test_a_ttl_high_when_the_daemon_closes_gets_its_whole_width(
    run_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rigstream.firmware.trigger")
    with zmq.Context() as ctx, SimPins() as pins:
        with TriggerDaemon(make_rig(sync={"enabled": False}), pins, ctx, run_dir) as daemon:
            data = daemon.ttl(width_ms=200.0)
            assert pins.level(24) == 1
        assert pins.level(24) == 0
        t_fall, level = pins.edges(24).tolist()[-1]
        with pytest.raises(Exception, match="closed"):
            daemon.ttl()
    assert level == 0 and t_fall >= data["t_fall_due_ns"]
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trigger: ttl 0:")]
    assert "200." in line


def test_bad_key_files_are_named(keys: dict[str, Path], run_dir: str, tmp_path: Path) -> None:
    address = "tcp://127.0.0.1:1"  # never bound: the keys are refused first

    def start(secret: Path, authorized: Path) -> None:
        control_keys = ControlKeysConfig(server_secret_file=str(secret), authorized_dir=str(authorized))
        with zmq.Context() as ctx, SimPins() as pins:
            try:
                TriggerDaemon(with_control(make_rig(), address, control_keys), pins, ctx, run_dir).close()
            finally:
                assert pins.outputs == ()  # refused before any pin was set up

    with pytest.raises(ConfigError, match=r"server_secret_file: .*trigger\.key: holds only a public key"):
        start(keys["trigger.key"], keys["authorized"])
    with pytest.raises(ConfigError, match=r"server_secret_file: .*missing\.key_secret"):
        start(tmp_path / "missing.key_secret", keys["authorized"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"authorized_dir: no client public key \(\*\.key\)"):
        start(keys["trigger.key_secret"], empty)
    with pytest.raises(ConfigError, match=r"authorized_dir: expected a folder"):
        start(keys["trigger.key_secret"], tmp_path / "nowhere")


def test_rigstream_keys_writes_a_private_pair_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "k"
    assert cli.main(["keys", "--out", str(out), "--name", "pi"]) == 0
    public, secret = transport.load_curve_keypair(out / "pi.key_secret")
    assert transport.load_curve_public(out / "pi.key") == public
    assert len(public) == len(secret) == 40
    assert stat.S_IMODE(os.stat(out / "pi.key_secret").st_mode) == 0o600
    assert "pi.key_secret" in capsys.readouterr().out
    before = (out / "pi.key_secret").read_bytes()
    assert cli.main(["keys", "--out", str(out), "--name", "pi"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "pi.key_secret").read_bytes() == before
    with pytest.raises(InputError, match="plain file name"):
        create_curve_keys(out, "../x")


def test_control_keys_in_a_rig_file(tmp_path: Path) -> None:
    from rigstream.config import parse_rig

    text = """
cameras: [{name: cam0, role: primary, width: 8, height: 8}]
trigger:
  rate_hz: 100
  backend: pigpio
  control_keys: {server_secret_file: /etc/rigstream/trigger.key_secret,
                 authorized_dir: /etc/rigstream/authorized}
transport: {trigger_control: "tcp://raspberrypi.local:5555"}
"""
    rig = parse_rig(text)
    assert rig.trigger.backend == "pigpio"
    assert rig.trigger.control_keys == ControlKeysConfig(
        server_secret_file="/etc/rigstream/trigger.key_secret", authorized_dir="/etc/rigstream/authorized"
    )
    assert isinstance(rig.transport, TransportConfig)
    with pytest.raises(ConfigError, match=r"trigger.control_keys.authorized: unknown key"):
        parse_rig(text.replace("authorized_dir", "authorized"))
