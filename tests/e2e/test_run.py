"""``rigstream run``: supervision (a killed camera, a crashed pose engine) and a clean stop on Ctrl-C."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
import yaml

from rigstream import framestore
from rigstream.acquisition.video import read_frames
from rigstream.app.demo import demo_rig
from rigstream.app.session import Session, SessionPlan
from rigstream.config import load_rig

pytestmark = pytest.mark.slow


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def stores_on_host() -> set[str]:
    """rigstream frame stores in /dev/shm now."""
    return {p.name for p in framestore.SHM_DIR.iterdir() if p.name.startswith(framestore.PREFIX)}


def small_sim_rig(tmp_path: Path, **changes) -> Path:
    """The shipped sim rig at 160x120 and 50 Hz (its calibration, the ring of cameras, follows)."""
    rig = demo_rig(load_rig(), fps=50, width=160, height=120)
    doc = msgspec.to_builtins(rig)
    doc.update(changes)
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_killing_a_camera_and_the_pose_engine_mid_run(tmp_path: Path) -> None:
    """SIGKILL one camera's process and the pose engine's: the camera is reported and the rest
    keeps recording (every pulse accounted for, the other camera complete); the pose engine is
    restarted and appends to its files."""
    rig = load_rig(small_sim_rig(tmp_path))
    out = tmp_path / "s"
    killed: dict[str, float] = {}
    session: Session

    def progress(line: str) -> None:
        t = time.monotonic() - session._t0
        for name, at in (("camera:cam1", 1.5), ("pose", 2.5)):
            comp = session.components[name]
            if session._recording and t >= at and name not in killed and comp.proc is not None:
                comp.proc.send_signal(signal.SIGKILL)
                killed[name] = t

    before = stores_on_host()
    session = Session(SessionPlan(rig, out, pulses=400), progress=progress)
    s = session.run()
    assert stores_on_host() <= before, "the killed camera's frame store was left in /dev/shm"
    assert set(killed) == {"camera:cam1", "pose"}
    assert list(s["failed_components"]) == ["camera:cam1"]
    assert "exited with code -9" in s["failed_components"]["camera:cam1"]
    assert [r["component"] for r in s["restarted_components"]] == ["pose"]
    assert s["frames"]["cam0"] == s["pulses_sent"] == 400  # the other camera recorded everything
    assert 0 < s["frames"]["cam1"] < 400
    assert s["frames"]["cam1"] + s["frames_dropped"]["cam1"] == 400  # every pulse accounted for
    rows = read_rows(out / "frames.csv")
    for cam in ("cam0", "cam1"):
        cam_rows = [r for r in rows if r["camera"] == cam]
        assert sorted(int(r["trigger_index"]) for r in cam_rows) == list(range(400))
        assert sum(1 for _ in read_frames(out / "video" / f"{cam}.mkv")) == s["frames"][cam]
    # The restarted pose engine appended: one header, indices increasing across the restart.
    timing = read_rows(out / "pose_timing.csv")
    posed = [int(r["trigger_index"]) for r in timing]
    assert posed == sorted(set(posed)) and posed[-1] > rig.trigger.rate_hz * killed["pose"]
    assert (out / "pose2d.csv").read_text().count("trigger_index") == 1
    assert json.loads((out / "summary.json").read_text())["restarted_components"]
    # The summary counts the sets of both engine processes.
    assert s["pose"]["processes"] == 2
    assert s["pose"]["framesets_posed"] > s["components"]["pose"]["framesets_posed"] > 0


def test_a_killed_recorder_is_reported_and_the_rest_of_the_session_goes_on(tmp_path: Path) -> None:
    """SIGKILL the recorder mid-session: cameras, clips and pose keep going; the session reports
    it with what the tables hold; the files up to the kill stay readable (raw video: every frame
    that reached the disk is whole and is the frame its row names)."""
    from rigstream.acquisition.sim_camera import TruthRenderer
    from rigstream.app.verify import verify_clip

    rig = load_rig(small_sim_rig(tmp_path, recording={**msgspec.to_builtins(load_rig().recording),
                                                      "codec": "raw"}))
    out = tmp_path / "s"
    killed: dict[str, float] = {}
    session: Session

    def progress(line: str) -> None:
        comp = session.components["recorder"]
        t = time.monotonic() - session._t0
        if session._recording and t >= 2.0 and not killed and comp.proc is not None:
            comp.proc.send_signal(signal.SIGKILL)
            killed["recorder"] = t

    session = Session(SessionPlan(rig, out, pulses=400, events_at=[300]), progress=progress)
    s = session.run()
    assert killed and list(s["failed_components"]) == ["recorder"]
    assert "exited with code -9" in s["failed_components"]["recorder"]
    early = s["recording_ended_early"]
    assert early["at_s"] >= 2.0
    # The cameras went on to the end: every pulse stored and accounted for by the camera nodes.
    for cam in ("cam0", "cam1"):
        node = s["components"]["cameras"][cam]
        assert node["frames"] + node["dropped"] == s["pulses_sent"] == 400, node
    # The tables and videos end near the kill and read back: whole rows, indices in order.
    rows = read_rows(out / "frames.csv")  # DictReader: a row cut by the kill has missing fields
    truth = TruthRenderer(rig)
    for cam in ("cam0", "cam1"):
        cam_rows = [r for r in rows if r["camera"] == cam and r["overrun"] is not None]
        indices = [int(r["trigger_index"]) for r in cam_rows]
        assert indices == list(range(len(indices))) and 0 < len(indices) < 400
        assert early["rows"][cam] >= len(indices) - 1
        named = {int(r["video_frame"]): int(r["trigger_index"]) for r in cam_rows
                 if int(r["video_frame"]) >= 0}
        decoded = 0
        try:
            for k, img in enumerate(read_frames(out / "video" / f"{cam}.mkv")):
                if k in named:
                    assert (img == truth.image(cam, named[k])).all(), (cam, k)
                decoded = k + 1
        except Exception:  # the block the kill cut off
            pass
        assert decoded > 0.5 * rig.trigger.rate_hz, (cam, decoded)  # at least the first second
    # The clip after the kill is exact on every camera; the pose went on past the kill.
    problems: list[str] = []
    clips = [verify_clip(p.parent, rig, truth, problems)
             for p in sorted((out / "clips").glob("*/event.json"))]
    assert problems == []
    assert any(c["start"] <= 300 <= c["end"] for c in clips)
    posed = [int(r["trigger_index"]) for r in read_rows(out / "pose_timing.csv")]
    assert posed and posed[-1] > rig.trigger.rate_hz * (killed["recorder"] + 2)


@pytest.mark.parametrize("victim", ["ringbuffer", "assembler", "trigger"])
def test_a_component_whose_failure_ends_the_session_ends_it_in_order(tmp_path: Path, victim: str) -> None:
    """SIGKILL a component the session cannot go on without: the session stops in order (the
    trigger stops, the cameras end their streams, the recorder finishes what it holds and is not
    killed), writes summary.json naming the failure and raises one SessionError."""
    from rigstream.app.session import SessionError

    rig = load_rig(small_sim_rig(tmp_path))
    out = tmp_path / "s"
    killed: dict[str, float] = {}
    session: Session

    def progress(line: str) -> None:
        comp = session.components[victim]
        t = time.monotonic() - session._t0
        if session._recording and t >= 1.5 and not killed and comp.proc is not None:
            comp.proc.send_signal(signal.SIGKILL)
            killed[victim] = t

    session = Session(SessionPlan(rig, out, pulses=2000), progress=progress)
    t0 = time.monotonic()
    ended = f"{victim} failed: exited with code -9 \\(see logs/{victim}.log\\); the session stopped in order"
    with pytest.raises(SessionError, match=ended):
        session.run()
    assert time.monotonic() - t0 < 60
    s = json.loads((out / "summary.json").read_text())
    assert s["failure"].startswith(f"{victim} failed: exited with code -9")
    assert list(s["failed_components"]) == [victim]
    assert 0 < s["pulses_sent"] < 2000
    for cam in ("cam0", "cam1"):  # every pulse sent is in the recorder's table and its video
        assert s["frames"][cam] + s["frames_dropped"][cam] == s["pulses_sent"], (cam, s["frames"])
        assert sum(1 for _ in read_frames(out / "video" / f"{cam}.mkv")) == s["frames"][cam]
    assert "recorder" not in s["failed_components"]
    log = (out / "logs" / "recorder.log").read_text()
    assert "Traceback" not in log


def hostile_messages() -> list[bytes]:
    """Messages every receiver must refuse: garbage, truncated, deeply nested, huge, integers
    past int64, and well-formed messages of a type the socket does not take (a Pulse)."""
    import numpy as np

    from rigstream import protocol

    rng = np.random.default_rng(14)
    event = protocol.encode(protocol.Event(name="hostile", source="test", trigger_index=50))
    out = [b"\xc1" + rng.bytes(int(n)) for n in rng.integers(0, 300, size=20)]  # 0xc1: never valid
    out += [event[:n] for n in range(len(event))]  # a prefix of one MessagePack value never decodes
    out += [msgspec.msgpack.encode({"type": "event", "v": 1, "name": "x", "data": {"a": None}})[:-1]
            + b"\x91" * 100_000 + b"\xc0",
            msgspec.msgpack.encode({"type": "event", "v": 1, "name": "x", "data": {"b": b"x" * (2 << 20)}}),
            msgspec.msgpack.encode({"type": "event", "v": 1, "name": "x", "trigger_index": 2**64 - 1}),
            protocol.encode(protocol.Pulse(index=1, t_pi_ns=1))]
    return out


def test_hostile_messages_to_every_receiving_socket_are_counted_and_nothing_dies(tmp_path: Path) -> None:
    """The sockets a session binds for others to send to (the ring buffer's events, the trigger's
    control, the supervisor's status) get every hostile message mid-session: the session ends
    normally, and summary.json counts each refused message where it arrived."""
    import zmq

    from rigstream import protocol

    rig = load_rig(small_sim_rig(tmp_path))
    bad = hostile_messages()
    sent = False
    session: Session

    def progress(line: str) -> None:
        nonlocal sent
        if not session._recording or sent:
            return
        sent = True
        ctx = zmq.Context.instance()
        for address in (rig.address("events", session.run_dir), session.status_address):
            push = ctx.socket(zmq.PUSH)
            push.connect(address)
            for buf in bad:
                push.send(buf)
            push.close(linger=5000)
        for buf in bad:  # a REP answers each: refused, with the reason
            req = ctx.socket(zmq.REQ)
            req.connect(rig.address("trigger_control", session.run_dir))
            req.send(buf)
            assert req.poll(5000), "the trigger daemon stopped answering"
            reply = protocol.decode(req.recv(), protocol.Reply)
            assert not reply.ok and reply.error.startswith("malformed request")
            req.close(linger=0)
        assert session._trigger("status").ok  # and it still serves the supervisor

    session = Session(SessionPlan(rig, tmp_path / "s", pulses=300), progress=progress)
    s = session.run()
    assert sent and not s["failed_components"] and not s["restarted_components"]
    m = s["malformed"]
    assert sum(m["ringbuffer"]["events_malformed"].values()) == len(bad)
    assert sum(m["supervisor"]["status"].values()) == len(bad)
    assert m["trigger"]["malformed"] == len(bad)
    assert {"too-deep", "too-large", "undecodable", "invalid", "unexpected-type"} <= set(
        m["ringbuffer"]["events_malformed"])
    assert all(s["frames"][c] == s["pulses_sent"] for c in s["frames"])


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 64 MB tmpfs (mounting needs root: skipped without it)."""
    where = tmp_path / "disk"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=True)


def test_a_session_on_a_disk_that_fills_stops_in_order(tmp_path: Path, small_disk: Path) -> None:
    """Raw video fills a 64 MB disk: the supervisor stops the session in order when the free
    space falls under the rig's reserve, with one line naming the folder and the free space;
    every table parses, the videos decode to their rows, verify reports and does not crash."""
    from rigstream.app.session import SessionError
    from rigstream.app.verify import verify_session

    rig = load_rig(small_sim_rig(tmp_path, recording={**msgspec.to_builtins(load_rig().recording),
                                                      "codec": "raw"}))
    out = small_disk / "s"
    with pytest.raises(SessionError) as info:
        Session(SessionPlan(rig, out, pulses=50 * 120)).run()
    line = str(info.value)
    assert line.startswith(f"disk: {out}: ") and "free, under the" in line and "\n" not in line, line
    s = json.loads((out / "summary.json").read_text())
    assert s["failure"].startswith("disk: ") and 0 < s["pulses_sent"] < 50 * 120
    for name in ("frames.csv", "pulses.csv", "pose_timing.csv"):
        with open(out / name, newline="") as f:
            rows = list(csv.reader(f))
        assert rows and all(len(r) == len(rows[0]) for r in rows), name
    for cam in ("cam0", "cam1"):
        assert s["frames"][cam] + s["frames_dropped"][cam] == s["pulses_sent"]
        assert sum(1 for _ in read_frames(out / "video" / f"{cam}.mkv")) == s["frames"][cam]
    report = verify_session(out)
    assert isinstance(report["problems"], list)


def test_run_stops_cleanly_on_ctrl_c_and_finishes_the_clip_being_written(tmp_path: Path) -> None:
    rig_file = small_sim_rig(tmp_path, ring_buffer={"pre_s": 0.5, "post_s": 0.5, "margin_s": 2.0})
    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "rigstream", "run", "--config", str(rig_file),
                             "--out", str(out)], stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # run until the rule fired once, then Ctrl-C
        lines.append(line)
        if "fired 1" in line:
            break
    else:
        pytest.fail("no firing: " + "".join(lines))
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "stopping" in rest
    s = json.loads((out / "summary.json").read_text())
    assert s["pulses_sent"] > 0 and all(s["frames"][c] == s["pulses_sent"] for c in s["frames"])
    (clip,) = s["clips"]
    info = json.loads((out / clip / "event.json").read_text())
    assert info["missing_rows"] == 0  # the stop waited for its post frames
    assert info["end_index"] < s["pulses_sent"]


def test_a_ctrl_c_to_the_whole_process_group_stops_cleanly(tmp_path: Path) -> None:
    """A terminal's Ctrl-C is SIGINT to its foreground process group: the supervisor handles it
    for every component (they ignore SIGINT), so it ends as a clean stop: rc 0, summary.json,
    every pulse recorded."""
    rig_file = small_sim_rig(tmp_path)
    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "rigstream", "run", "--config", str(rig_file),
                             "--out", str(out)], stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("t=") and " pulses " in line and "pulses      0" not in line:
            break
    os.killpg(proc.pid, signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(lines) + rest
    s = json.loads((out / "summary.json").read_text())
    assert s["failure"] is None and not s["failed_components"]
    assert s["pulses_sent"] > 0 and all(s["frames"][c] == s["pulses_sent"] for c in s["frames"])


def test_components_end_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    """SIGKILL of `rigstream run` (no clean stop possible) still ends every component: the
    kernel sends each a SIGTERM (PR_SET_PDEATHSIG), which they treat as a stop."""
    rig_file = small_sim_rig(tmp_path)
    before = stores_on_host()
    proc = subprocess.Popen([sys.executable, "-m", "rigstream", "run", "--config", str(rig_file),
                             "--out", str(tmp_path / "s")], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("t=") and "pulses" in line:
            break
    children_file = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    children = [int(p) for p in children_file.read_text().split()]
    assert len(children) >= 7  # trigger, 2 cameras, recorder, ring buffer, assembler, pose
    proc.kill()
    proc.wait(10)
    # A consumer that lost its inputs waits out StopWait's idle time (10 s) before it closes;
    # on a loaded 2-core machine that and closing its files can take a while.
    deadline = time.monotonic() + 60
    alive = children
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in children if Path(f"/proc/{p}").exists()
                 and "Z" not in Path(f"/proc/{p}/stat").read_text().split(")")[1][:3]]
    names = [Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")[-120:] for p in alive
             if Path(f"/proc/{p}").exists()]
    assert not alive, f"components still running after their supervisor was killed: {alive} {names}"
    # The camera nodes, stopped by the kernel's SIGTERM, unlinked their frame stores.
    assert stores_on_host() <= before, "a killed session left frame stores in /dev/shm"


def test_a_session_killed_outright_leaves_no_frame_store_behind(tmp_path: Path) -> None:
    """SIGKILL of every process of a session (no one can unlink anything): the next session on
    the host sweeps the stores whose writers are gone before it starts."""
    rig_file = small_sim_rig(tmp_path)
    before = stores_on_host()
    proc = subprocess.Popen([sys.executable, "-m", "rigstream", "run", "--config", str(rig_file),
                             "--out", str(tmp_path / "s")], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("t=") and "pulses" in line:
            break
    left = stores_on_host() - before
    assert len(left) == 2, f"expected the two cameras' stores while it runs, found {left}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    time.sleep(0.5)
    assert stores_on_host() - before == left  # nobody was left to unlink them
    assert sorted(framestore.sweep_stale()) == sorted(left)  # what `rigstream run` does first
    assert stores_on_host() <= before
