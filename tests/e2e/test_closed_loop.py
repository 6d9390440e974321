"""Closed loop on the simulated rig: the shipped rule against the simulated animal's ground truth,
its TTLs in the trigger daemon's log, its clips, and the latency chain of every firing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from rigstream.acquisition.sim_world import AnimalMotion
from rigstream.config import load_rig
from rigstream.inference.rules import RuleEngine
from rigstream.protocol import Pose3D
from tests.e2e.test_demo import check_clips, run_demo

pytestmark = pytest.mark.slow

EARLY, LATE = 15, 80
"""A live firing matches a ground-truth one from EARLY frames before it (3D noise near the edge of
the region) to LATE frames after (latest-wins posing on a loaded 2-core machine: a pose every
5-30 pulses, plus the pose's own latency does not matter: firings are stamped with their pulse)."""


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def truth_firings(rig, pulses: int) -> dict[str, list[int]]:
    """The rig's rules run on the simulated animal's exact pose at every pulse: each crossing
    (with the rule's own hysteresis and re-arm) fires once."""
    motion = AnimalMotion()
    keypoints = list(rig.pose.keypoints)
    poses = motion.poses_at(np.arange(pulses) / rig.trigger.rate_hz)
    engine = RuleEngine(rig.rules, keypoints)
    fired: dict[str, list[int]] = {r.name: [] for r in rig.rules}
    k = len(keypoints)
    for n in range(pulses):
        pose = Pose3D(seq=n, frameset_seq=n, trigger_index=n, t_pi_ns=n * rig.trigger.period_ns + 1,
                      t_host_ns=0, keypoints=keypoints, xyz=poses[n].tolist(), error=[0.0] * k,
                      ncams=[2] * k, score=[1.0] * k)
        for f in engine.update(pose):
            fired[f.rule].append(n)
    return fired


def test_shipped_rule_fires_once_per_crossing_with_ttl_clip_and_latency(tmp_path: Path) -> None:
    out = tmp_path / "s"
    s = run_demo(out, "--seconds", "13")
    rig = load_rig(out / "rig.yaml")
    pulses = s["pulses_sent"]
    truth = truth_firings(rig, pulses)["midline"]
    assert len(truth) >= 3, truth  # the demo's motion crosses the midline strip 3 times in 13 s
    firings = read_rows(out / "firings.csv")
    live = [int(r["trigger_index"]) for r in firings]
    # Every crossing fires once, none fires without one (a crossing so late that its pose could
    # not be posed before the end is not required).
    unmatched = list(live)
    for n in truth:
        hits = [m for m in live if n - EARLY <= m <= n + LATE]
        if n + LATE >= pulses and not hits:
            continue
        assert len(hits) == 1, f"crossing at pulse {n}: live firings {hits} (all: {live}, truth {truth})"
        unmatched.remove(hits[0])
    assert not unmatched, f"firings without a crossing: {unmatched} (truth {truth})"
    assert s["pose"]["rules"]["midline"]["fired"] == len(live)

    # Each firing pulsed the TTL once: the daemon logged command, rising and falling edge.
    ttl = [r for r in read_rows(out / "pulses.csv") if r["line"].startswith("ttl")]
    by_line = {line: [int(r["t_pi_ns"]) for r in ttl if r["line"] == line]
               for line in ("ttl-command", "ttl", "ttl-fall")}
    assert all(len(v) == len(live) for v in by_line.values()), by_line
    widths_ms = (np.array(by_line["ttl-fall"]) - np.array(by_line["ttl"])) / 1e6
    assert np.all(widths_ms >= 10.0) and np.all(widths_ms < 60.0), widths_ms  # width_ms: 10
    for row, edge in zip(firings, by_line["ttl"], strict=True):
        assert int(row["t_ttl_ns"]) == edge and row["ttl_error"] == ""
        # the chain is ordered on one clock: pulse <= frames <= set <= 2D <= 3D <= rule <= edge
        times = [int(row[c]) for c in ("t_pi_ns", "t_frames_ns", "t_set_ns", "t_pose2d_ns",
                                       "t_pose3d_ns", "t_rule_ns", "t_ttl_ns")]
        assert times == sorted(times), row
        total = float(row["total_ms"])
        assert total == pytest.approx((edge - int(row["t_pi_ns"])) / 1e6, abs=1e-3)
        steps = sum(float(row[f"{s}_ms"]) for s in ("frames", "assemble", "pose2d", "pose3d", "rule", "ttl"))
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
        assert event["source"] == "rules" and event["data"]["rule"] == "midline"
        assert event["data"]["clip"] == {"pre_s": 1.0, "post_s": 0.5}
        assert len(event["data"]["pose"]["xyz"]) == len(rig.pose.keypoints)
        assert (info["pre_frames"], info["post_frames"]) == (100, 50)
    # The firings are on the neural clock too.
    assert "t_neural_samples" in read_rows(out / "firings.csv")[0]
