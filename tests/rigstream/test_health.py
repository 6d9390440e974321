"""The health schema (rigstream.health) names every key each component sends, on a real session
of the simulated rig with pose, a rule with a TTL and a clip, and the monitor; and decoding is
typed, lenient with keys it does not know, and one ProtocolError for a wrong type."""

from __future__ import annotations

import types
import typing
from pathlib import Path

import msgspec
import pytest

from rigstream.config import with_overrides
from rigstream.health import HEALTH, PoseHealth, RecorderHealth, decode_health, kind_of
from rigstream.protocol import ProtocolError


def _unnamed(struct: type, stats: dict, path: str = "") -> list[str]:
    """Keys of ``stats`` (recursively, into nested structs and maps of them) that ``struct`` does
    not name."""
    fields = {f.name: f.type for f in msgspec.structs.fields(struct)}
    out = []
    for key, value in stats.items():
        if key not in fields:
            out.append(f"{path}{key}")
            continue
        declared = fields[key]
        union = typing.get_origin(declared) in (typing.Union, types.UnionType)
        for kind in typing.get_args(declared) if union else (declared,):  # X | None: X
            if _is_struct(kind) and isinstance(value, dict):
                out += _unnamed(kind, value, f"{path}{key}.")
            elif typing.get_origin(kind) is dict and _is_struct(typing.get_args(kind)[1]):
                for name, item in value.items():
                    out += _unnamed(typing.get_args(kind)[1], item, f"{path}{key}.{name}.")
    return out


def _is_struct(kind: object) -> bool:
    return isinstance(kind, type) and issubclass(kind, msgspec.Struct)


@pytest.mark.slow
def test_every_component_sends_only_what_its_health_struct_names(tmp_path: Path) -> None:
    from rigstream.app.demo import demo_rig
    from rigstream.app.session import MonitorPlan, Session, SessionPlan
    from rigstream.config import load_rig

    rig = demo_rig(load_rig(), prerender_s=1.0)
    rig = with_overrides(rig, recording={**msgspec.to_builtins(rig.recording), "codec": "raw"})
    session = Session(SessionPlan(rig, tmp_path / "s", 300, [150], monitor=MonitorPlan(port=0)))
    session.run()
    seen = set()
    for name, comp in session.components.items():
        if name == "trigger" or comp.last is None:
            continue
        seen.add(kind_of(name))
        stats = comp.last.stats
        assert not _unnamed(HEALTH[kind_of(name)], stats), (name, _unnamed(HEALTH[kind_of(name)], stats))
        decoded = decode_health(name, stats)
        assert msgspec.to_builtins(decoded).keys() >= stats.keys()
    assert seen == set(HEALTH) - {"trigger"}  # the trigger answers status requests (test below)
    pose = decode_health("pose", session.components["pose"].last.stats)
    assert pose.framesets_posed > 0 and pose.latency_ms.n > 0 and pose.closed_loop is not None


def test_decoding_is_typed_lenient_and_one_error() -> None:
    rec = decode_health("recorder", {"frames": {"cam0": 3}, "a_key_from_a_newer_host": 1})
    assert isinstance(rec, RecorderHealth) and rec.frames == {"cam0": 3} and rec.frames_dropped == {}
    pose = decode_health("pose", {"latency_ms": {"p50": 1.5, "p99": None, "max": 2.0, "n": 3}})
    assert isinstance(pose, PoseHealth) and pose.latency_ms.p50 == 1.5 and pose.closed_loop is None
    assert decode_health("camera:cam1", {"frames": 7}).frames == 7
    with pytest.raises(ProtocolError, match=r"recorder status: .*frames"):
        decode_health("recorder", {"frames": "many"})
    with pytest.raises(ProtocolError, match="no health schema"):
        decode_health("toaster", {})


def test_the_trigger_daemons_status_is_named_by_its_struct(run_dir: str) -> None:
    import zmq

    from rigstream.config import load_rig
    from rigstream.firmware.pins import SimPins
    from rigstream.firmware.trigger import TriggerDaemon
    from rigstream.health import TriggerHealth

    with zmq.Context() as ctx, SimPins() as pins, TriggerDaemon(load_rig(), pins, ctx, run_dir) as daemon:
        daemon.start(max_pulses=5)
        assert daemon.wait(5.0)
        daemon.ttl(width_ms=1.0)
        status = daemon.status()
    assert not _unnamed(TriggerHealth, status), _unnamed(TriggerHealth, status)
    t = decode_health("trigger", status)
    assert (t.pulses_sent, t.ttl_pulses) == (5, 1) and t.late_max_us >= 0
