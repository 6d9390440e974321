"""Closed loop on the simulated rig: the shipped rule against the simulated animal's ground truth,
its TTLs in the trigger daemon's log, its clips, and the latency chain of every firing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import msgspec
import numpy as np
import pytest
import yaml

from rigstream.acquisition.sim_camera import rig_cameras, sim_pose_times_s
from rigstream.acquisition.sim_world import AnimalMotion
from rigstream.config import load_rig
from rigstream.inference.rules import RuleEngine
from rigstream.protocol import Pose2D, Pose3D
from tests.e2e.test_demo import check_clips, run_demo

pytestmark = pytest.mark.slow

EARLY, LATE = 15, 80
"""A live firing matches a ground-truth one from EARLY frames before it (3D noise near the edge of
the region) to LATE frames after (latest-wins posing on a loaded 2-core machine: a pose every
5-30 pulses, plus the pose's own latency does not matter: firings are stamped with their pulse)."""


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


STRIP_2D = {"name": "strip2d", "when": {"in_box": {"keypoint": "snout", "camera": "cam0", "min": [300, 0],
                                                   "max": [340, 480], "margin": 4}},
            "rearm_when_false_ms": 300, "actions": [{"ttl": {"width_ms": 10}},
                                                    {"clip": {"pre_s": 0.2, "post_s": 0.2}}]}
"""A 2D rule beside the shipped 3D one: the snout in a vertical strip of cam0's image."""


def truth_firings(rig, pulses: int) -> dict[str, list[int]]:
    """The rig's rules run on the simulated animal's exact pose at every pulse (3D rules on the
    pose, 2D rules on its exact projection into each camera): each crossing (with the rule's own
    hysteresis and re-arm) fires once."""
    motion = AnimalMotion()
    keypoints = list(rig.pose.keypoints)
    poses = motion.poses_at(sim_pose_times_s(rig, np.arange(pulses)))
    cameras = rig_cameras(rig)
    engine = RuleEngine(rig.rules, keypoints)
    fired: dict[str, list[int]] = {r.name: [] for r in rig.rules}
    k = len(keypoints)
    for n in range(pulses):
        t = n * rig.trigger.period_ns + 1
        views = {c: np.hstack([cam.project(poses[n]), np.ones((k, 1))]).tolist()
                 for c, cam in cameras.items()}
        for pose in (Pose2D(seq=n, frameset_seq=n, trigger_index=n, t_pi_ns=t, t_host_ns=0, model="truth",
                            keypoints=keypoints, views=views),
                     Pose3D(seq=n, frameset_seq=n, trigger_index=n, t_pi_ns=t, t_host_ns=0,
                            keypoints=keypoints, xyz=poses[n].tolist(), error=[0.0] * k, ncams=[2] * k,
                            score=[1.0] * k)):
            for f in engine.update(pose):
                fired[f.rule].append(n)
    return fired


def test_rules_fire_once_per_crossing_with_ttl_clip_and_latency(tmp_path: Path) -> None:
    """The shipped 3D rule (midline) and a 2D one (strip2d), live on the simulated rig, against
    the simulated animal's ground truth."""
    doc = msgspec.to_builtins(load_rig())
    doc["rules"].append(STRIP_2D)
    (tmp_path / "rig.yaml").write_text(yaml.safe_dump(doc))
    out = tmp_path / "s"
    s = run_demo(out, "--config", str(tmp_path / "rig.yaml"), "--seconds", "13")
    rig = load_rig(out / "rig.yaml")
    pulses = s["pulses_sent"]
    truth = truth_firings(rig, pulses)
    # in 13 s the motion crosses the midline strip 3 times and cam0's image strip 3 times
    assert len(truth["midline"]) >= 3 and len(truth["strip2d"]) >= 3, truth
    firings = read_rows(out / "firings.csv")
    for rule, crossings in truth.items():
        live = [int(r["trigger_index"]) for r in firings if r["rule"] == rule]
        # Every crossing fires once, none fires without one (a crossing so late that its pose
        # could not be posed before the end is not required).
        unmatched = list(live)
        for n in crossings:
            hits = [m for m in live if n - EARLY <= m <= n + LATE]
            if n + LATE >= pulses and not hits:
                continue
            assert len(hits) == 1, f"{rule}: crossing at {n}: firings {hits} (all {live}, truth {truth})"
            unmatched.remove(hits[0])
        assert not unmatched, f"{rule}: firings without a crossing: {unmatched} (truth {crossings})"
        assert s["pose"]["rules"][rule]["fired"] == len(live)
    live = [int(r["trigger_index"]) for r in firings]

    # Each firing raised the TTL line: a pulse of its own, whose command, rising and falling edge
    # the daemon logged, or (two rules on one pose) the pulse still high, from its command on.
    ttl = [r for r in read_rows(out / "pulses.csv") if r["line"].startswith("ttl")]
    by_line = {line: [int(r["t_pi_ns"]) for r in ttl if r["line"] == line]
               for line in ("ttl-command", "ttl", "ttl-fall")}
    own = [r for r in firings if r["ttl_merged"] == "0"]
    merged = [r for r in firings if r["ttl_merged"] == "1"]
    assert len(own) + len(merged) == len(firings)
    assert all(len(v) == len(own) for v in by_line.values()), by_line
    widths_ms = (np.array(by_line["ttl-fall"]) - np.array(by_line["ttl"])) / 1e6
    assert np.all(widths_ms >= 10.0) and np.all(widths_ms < 60.0), widths_ms  # width_ms: 10
    assert sorted(int(r["t_ttl_ns"]) for r in own) == by_line["ttl"]
    rises = {int(r["ttl_index"]): int(r["t_ttl_ns"]) for r in own}
    for row in merged:
        assert int(row["t_ttl_ns"]) == int(row["t_ttl_command_ns"]) >= rises[int(row["ttl_index"])]
    for row in firings:
        assert row["ttl_error"] == ""
        # the chain is ordered on one clock: pulse <= frames <= set <= 2D (<= 3D) <= rule <= edge
        columns = ("t_pi_ns", "t_frames_ns", "t_set_ns", "t_pose2d_ns", "t_pose3d_ns", "t_rule_ns",
                   "t_ttl_ns")
        times = [int(row[c]) for c in columns if not (row["rule"] == "strip2d" and c == "t_pose3d_ns")]
        assert times == sorted(times), row
        if row["rule"] == "strip2d":
            assert row["t_pose3d_ns"] == "-1" and row["pose3d_ms"] == ""  # a 2D rule has no 3D step
        total = float(row["total_ms"])
        assert total == pytest.approx((int(row["t_ttl_ns"]) - int(row["t_pi_ns"])) / 1e6, abs=1e-3)
        names = ("frames", "assemble", "pose2d", "pose3d", "rule", "ttl")
        steps = sum(float(row[f"{name}_ms"] or 0) for name in names)
        assert steps == pytest.approx(total, abs=1e-2)
        assert 0 < float(row["infer_ms"]) < float(row["pose2d_ms"])

    cl = s["pose"]["closed_loop"]
    assert cl["firings"] == len(live) and cl["pulse_to_ttl_ms"]["n"] == len(live)
    assert 0 < cl["pulse_to_ttl_ms"]["p50"] <= cl["pulse_to_ttl_ms"]["max"]
    assert 0 < cl["infer_share_of_pulse_to_ttl"] < 1

    # A clip per firing, exactly [n - 100, n + 50] for every camera; the event carries the pose.
    check_clips(out, s, None)
    assert len(s["clips"]) == len(live)
    for clip in s["clips"]:
        info = json.loads((out / clip / "event.json").read_text())
        (event,) = info["events"]
        assert event["source"] == "rules"
        if event["data"]["rule"] == "midline":  # the shipped rule also publishes its pose
            assert event["data"]["clip"] == {"pre_s": 1.0, "post_s": 0.5}
            assert len(event["data"]["pose"]["xyz"]) == len(rig.pose.keypoints)
            assert (info["pre_frames"], info["post_frames"]) == (100, 50)
        else:
            assert event["data"]["kind"] == "2d" and "pose" not in event["data"]
            assert (info["pre_frames"], info["post_frames"]) == (20, 20)
    # The firings are on the neural clock too.
    assert "t_neural_samples" in read_rows(out / "firings.csv")[0]
