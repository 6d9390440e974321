"""A session put on the neural recorder's clock: real session tables, a simulated recorder,
`rigstream align` on files, and the real recorders' files in ../shared/data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from rigstream.app.cli import main
from rigstream.config import SimRecorderConfig
from rigstream.sync.align import align
from rigstream.sync.recorders import read_edges
from rigstream.sync.session_align import (
    MAPPING_FILE,
    align_session,
    pi_to_neural,
    score_alignment,
    simulate_recorder,
)
from rigstream.sync.sim_recorder import sync_train
from tests.conftest import SHARED_DATA

T0_NS = 5_000_000_000_000  # the Pi's monotonic clock some 83 min after boot
PERIOD_NS = 10_000_000  # 100 Hz camera trigger


def write_session(folder: Path, seconds: float = 300.0) -> dict[str, np.ndarray]:
    """The tables a session leaves (only the columns alignment reads, plus a few others)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = int(seconds * 1e9 / PERIOD_NS)
    cam_ns = T0_NS + np.arange(n, dtype=np.int64) * PERIOD_NS + 1_000
    sync_ns = T0_NS + np.round(sync_train(seconds - 1.0, 0.1, 1.0, seed=4) * 1e9).astype(np.int64)
    rows = sorted([(int(t), i, "camera") for i, t in enumerate(cam_ns)]
                  + [(int(t), i, "sync") for i, t in enumerate(sync_ns)]
                  + [(int(t) + 5_000_000, i, "sync-fall") for i, t in enumerate(sync_ns)])
    with open(folder / "pulses.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "t_pi_ns", "line"])
        w.writerows([(i, t, line) for t, i, line in rows])
    with open(folder / "frames.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["camera", "frame_id", "trigger_index", "t_pi_ns", "dropped"])
        for i, t in enumerate(cam_ns):
            w.writerow(["cam0", i, i, t, 0])
        w.writerow(["cam1", -1, 7, "", 1])  # a dropped frame: no Pi time of its own
    with open(folder / "events.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "source", "trigger_index", "t_pi_ns", "t_host_ns", "clip"])
        w.writerow(["reach", "schedule", 250, "", 1, "clip_001_n250"])
    return {"camera": cam_ns, "sync": sync_ns}


def read_table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_session_tables_gain_t_neural_within_microseconds(tmp_path: Path) -> None:
    session = tmp_path / "s"
    truth = write_session(session)
    sim = simulate_recorder(session, SimRecorderConfig(drift_ppm=-80.0, wander_ppm=15.0, seed=2))
    mapping = align_session(session, sim["samples"].astype(np.float64), units="samples")
    assert mapping.n_matched >= 0.9 * truth["sync"].size
    frames = read_table(session / "frames.csv")
    assert "t_neural_samples" in frames[0]
    t_neural = np.array([float(r["t_neural_samples"]) for r in frames[:-1]])
    err_us = (t_neural - sim["recorder"].true_samples(truth["camera"] / 1e9)) / 30_000.0 * 1e6
    assert np.sqrt(np.mean(err_us**2)) < 5.0 and np.abs(err_us).max() < 25.0
    assert frames[-1]["t_neural_samples"] == str(t_neural[7])  # the dropped frame: its pulse's time
    event = read_table(session / "events.csv")[0]
    assert float(event["t_neural_samples"]) == pytest.approx(t_neural[250])
    pulses = read_table(session / "pulses.csv")
    assert all(r["t_neural_samples"] for r in pulses)
    score = score_alignment(session, sim)
    assert score["frames_scored"] == truth["camera"].size and score["rms_us"] < 5.0
    np.testing.assert_allclose(pi_to_neural(session)(truth["camera"][:3]), t_neural[:3])
    # Aligning again (a better file, say) replaces the column instead of adding another.
    align_session(session, sim["samples"].astype(np.float64) / 30.0, units="ms")
    head = read_table(session / "frames.csv")[0]
    assert "t_neural_ms" in head and "t_neural_samples" not in head
    assert json.loads((session / MAPPING_FILE).read_text())["session"]["t0_pi_ns"] == int(truth["sync"][0])


def test_cli_aligns_a_session_after_the_fact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = tmp_path / "s"
    write_session(session, seconds=120.0)
    sim = simulate_recorder(session, SimRecorderConfig(seed=5))
    np.save(tmp_path / "recorder.npy", sim["samples"])
    assert main(["align", "--session", str(session), "--b", str(tmp_path / "recorder.npy")]) == 0
    out = capsys.readouterr().out
    assert "matched" in out and "drift" in out and "residuals RMS" in out
    assert "t_neural_units" in read_table(session / "frames.csv")[0]  # an .npy does not name its units
    # And a session without sync pulses is one clear line.
    (session / "pulses.csv").write_text("index,t_pi_ns,line\n0,1,camera\n")
    assert main(["align", "--session", str(session), "--b", str(tmp_path / "recorder.npy")]) == 2
    assert "no sync-line pulses" in capsys.readouterr().err


def test_cli_aligns_two_edge_files_and_writes_a_mapping(tmp_path: Path, capsys) -> None:
    a_s = sync_train(600.0, 0.1, 1.0, seed=9)
    np.savetxt(tmp_path / "pi.csv", a_s, header="t_s", comments="")
    b_ms = 1000.0 * (a_s[np.arange(a_s.size) % 10 != 3] * (1 + 30e-6) + 77.0)
    np.save(tmp_path / "rec.npy", b_ms)
    out = tmp_path / "mapping.json"
    assert main(["align", "--a", str(tmp_path / "pi.csv"), "--b", str(tmp_path / "rec.npy"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"matched {b_ms.size}" in printed
    doc = json.loads(out.read_text())
    assert doc["units_a"] == "s"


@pytest.mark.skipif(not (SHARED_DATA / "sync_pyphotometry").is_dir(), reason="shared data absent")
def test_real_pyphotometry_sync_line_matches_a_rescaled_thinned_copy() -> None:
    ppd = next((SHARED_DATA / "sync_pyphotometry").glob("*.ppd"))
    edges = read_edges(f"{ppd}:2")
    assert edges.units == "samples" and edges.rate_hz and len(edges) > 700
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(len(edges), size=int(0.9 * len(edges)), replace=False))
    # The copy: in ms on another clock (offset 3.2 h, 20 ppm fast), 10% of pulses gone.
    copy_ms = (edges.times[keep] / edges.rate_hz * (1 + 20e-6) + 11_520.0) * 1000.0
    mapping = align(edges.times, copy_ms, units_a="samples", units_b="ms")
    assert mapping.n_matched == keep.size  # every pulse of the copy found its original
    assert mapping.unmatched_b.size == 0 and mapping.unmatched_a.size == len(edges) - keep.size
    np.testing.assert_allclose(mapping.to_b(edges.times[keep]), copy_ms, atol=1e-3)


@pytest.mark.skipif(not (SHARED_DATA / "sync_openephys").is_dir(), reason="shared data absent")
def test_real_open_ephys_folder_without_sync_pulses_is_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = next((SHARED_DATA / "sync_openephys").rglob("structure.oebin")).parent
    np.save(tmp_path / "pi.npy", sync_train(60.0, 0.1, 1.0, seed=1))
    assert main(["align", "--a", str(tmp_path / "pi.npy"), "--b", f"{rec}:1:File_Reader"]) == 2
    err = capsys.readouterr().err
    assert "no rising edges on TTL line 1" in err and "Traceback" not in err
