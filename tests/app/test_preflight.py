"""Checks before anything starts: every bad address, port, backend and rate is one line and
rc 2 from ``check``, ``run`` and ``demo``, before any process or socket exists."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import yaml

from rigstream.app.cli import main
from rigstream.config import load_rig
from rigstream.transport import check_addresses


def rig_file(tmp_path: Path, transport: dict | None = None, **camera: object) -> Path:
    """The shipped rig with raw video (no encoder to measure: the codec check, which runs before
    the address checks, cannot refuse it on a loaded host) and the changes given."""
    doc = msgspec.to_builtins(load_rig())
    doc["recording"]["codec"] = "raw"
    doc["transport"].update(transport or {})
    doc["cameras"][0].update(camera)
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


BAD = {
    "unknown scheme": ({"events": "udp://127.0.0.1:5000"}, "scheme must be ipc:// or tcp://"),
    "inproc": ({"events": "inproc://events"}, "scheme must be ipc:// or tcp://"),
    "unknown field": ({"frames": "ipc://{run}/frames-{cam}"}, "unknown field(s) ['cam']"),
    "ipc path too long": ({"events": "ipc:///tmp/" + "x" * 120}, "longer than the 107"),
    "ipc folder": ({"events": "ipc:///proc/rigstream/events"}, "cannot make the ipc socket"),
    "no port": ({"events": "tcp://127.0.0.1"}, "needs a port in 1..65535"),
    "port out of range": ({"events": "tcp://127.0.0.1:70000"}, "needs a port in 1..65535"),
    "one address twice": ({"frames": "ipc://{run}/frames"}, "is also transport.frames"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_address_is_one_line_from_check(tmp_path: Path, case: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    transport, why = BAD[case]
    assert main(["check", "--config", str(rig_file(tmp_path, transport))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and why in err, err


def test_a_port_in_use_is_named_before_anything_starts(tmp_path: Path, busy_port: int,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = rig_file(tmp_path, {"trigger_control": f"tcp://127.0.0.1:{busy_port}"})
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"cannot bind tcp://127.0.0.1:{busy_port} on this host: Address already in use" in err
    # `run` refuses it the same way, before any component starts (no session folder content).
    out = tmp_path / "session"
    proc = subprocess.run([sys.executable, "-m", "rigstream", "run", "--config", str(path),
                           "--seconds", "5", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("rigstream: transport.trigger_control")
    assert not (out / "logs").exists()


def test_every_tcp_port_free_and_per_camera_addresses_pass(tmp_path: Path) -> None:
    doc = msgspec.to_builtins(load_rig())
    for i, cam in enumerate(doc["cameras"]):
        cam["address"] = f"tcp://127.0.0.1:{56550 + i}"
    rig = msgspec.convert(doc, type=type(load_rig()))
    line = check_addresses(rig, "/tmp/rigstream-xxxxxxxx")
    assert line.endswith("(16 ipc, 2 tcp, tcp ports free)"), line
    doc["cameras"][1]["address"] = doc["cameras"][0]["address"]
    with pytest.raises(ValueError, match=r"cameras\[cam1\].address .* is also cameras\[cam0\].address"):
        check_addresses(msgspec.convert(doc, type=type(rig)), "/tmp/rigstream-xxxxxxxx")


def test_a_backend_this_build_lacks_is_refused_when_the_rig_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(rig_file(tmp_path, backend="replay"))]) == 2
    assert "cameras[0].backend" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "why"), [(["--seconds", "0"], "--seconds must be positive"),
                                           (["--cameras", "0"], "--cameras must be at least 1"),
                                           (["--fps", "0"], "--fps must be positive")])
def test_absurd_demo_arguments_are_one_line(tmp_path: Path, args: list[str], why: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path / "d"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and why in err, err
    assert not (tmp_path / "d").exists()


def test_a_rate_whose_ring_does_not_fit_in_memory_is_refused(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    doc = msgspec.to_builtins(load_rig())
    doc["trigger"].update(rate_hz=1e5, pulse_width_us=2)
    for cam in doc["cameras"]:
        cam["exposure_us"] = 2
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "GiB" in err and len(err.strip().splitlines()) == 1, err
    assert os.path.exists(path)


def test_a_session_refused_before_it_starts_leaves_no_runtime_folder(tmp_path: Path) -> None:
    """A check that fails in Session.run (here: the disk reserve) closes the supervisor's sockets
    and removes its runtime folder, as a session that ran does."""
    from rigstream.app.session import Session, SessionPlan
    from rigstream.config import InputError, with_overrides

    rig = load_rig()
    rig = with_overrides(rig, recording={**msgspec.to_builtins(rig.recording), "disk_reserve_s": 1e9})
    session = Session(SessionPlan(rig, tmp_path / "s", pulses=10))
    assert Path(session.run_dir).is_dir()
    with pytest.raises(InputError, match="free, under the"):
        session.run()
    assert not Path(session.run_dir).exists()
    assert not (tmp_path / "s" / "logs").exists()
