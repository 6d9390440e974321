"""Neural time while the session runs: the simulated recorder streams its sync edges live, the
pose engine maps every pose and firing to the recorder's clock as it happens, and after the
session those live times are checked against the final alignment and the recorder's truth."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import msgspec
import numpy as np
import pytest
import yaml

from rigstream.app.cli import main
from rigstream.config import load_rig

pytestmark = pytest.mark.slow


def test_poses_and_firings_carry_live_neural_time_close_to_the_final_fit(tmp_path: Path) -> None:
    doc = msgspec.to_builtins(load_rig())
    doc["sync_line"].update(min_interval_s=0.05, max_interval_s=0.25)  # enough pulses in 8 s
    (tmp_path / "rig.yaml").write_text(yaml.safe_dump(doc))
    out = tmp_path / "s"
    assert main(["demo", "--config", str(tmp_path / "rig.yaml"), "--seconds", "8", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    nc = summary["neural_clock"]
    assert nc["aligned"], nc
    live = nc["live"]
    assert live["column"] == "live_t_neural_samples"
    assert live["mapped_live"] >= 0.8 * live["framesets"]  # all but the sets before the lock
    assert live["vs_final_us"]["max"] < 100 and live["vs_truth_us"]["max"] < 100, live
    with open(out / "pose2d.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    mapped = [r for r in rows if r["live_t_neural_samples"]]
    assert mapped and rows[-1]["live_t_neural_samples"]  # locked by the end, and it stays locked
    late = np.array([float(r["live_t_neural_samples"]) - float(r["t_neural_samples"]) for r in mapped])
    rate = load_rig(out / "rig.yaml").neural_clock.sim.rate_hz
    assert np.abs(late).max() / rate * 1e6 == pytest.approx(live["vs_final_us"]["max"], abs=0.01)
    with open(out / "firings.csv", newline="") as f:
        firings = list(csv.DictReader(f))
    assert firings and all(r["live_t_neural_samples"] for r in firings if int(r["trigger_index"]) > 300)
