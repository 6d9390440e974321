"""Put a recorded session on the neural recording's clock.

The session's ``pulses.csv`` holds every sync-line edge the Pi sent (``line == "sync"``, Pi
monotonic ns); the recorder's file holds the same edges on its clock. :func:`align_session`
matches the two trains (:mod:`rigstream.sync.align`), saves the mapping as
``neural_mapping.json`` in the session folder, and adds a ``t_neural_<units>`` column to every
table with a Pi time: ``frames.csv``, ``pulses.csv``, ``pose2d.csv``, ``pose3d.csv`` (and
``pose3d_filtered.csv``), ``events.csv`` (events sent by trigger index get the time of that
pulse). Re-aligning replaces the column, so it can be run again when a better recorder file
comes along. Each table is rewritten to a temporary file and renamed over the original: a
failure leaves the original untouched.

:func:`simulate_recorder` plays the simulated neural recorder for a session (its edge file,
and the truth to score the alignment against).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rigstream.config import InputError, SimRecorderConfig
from rigstream.sync.align import ClockMapping, align

logger = logging.getLogger(__name__)

MAPPING_FILE = "neural_mapping.json"
TABLES = ("frames.csv", "pulses.csv", "pose2d.csv", "pose3d.csv", "pose3d_filtered.csv", "events.csv",
          "firings.csv", "inputs.csv")


class SessionAlignError(InputError):
    """A session folder that cannot be aligned (no sync pulses, unreadable tables)."""


def read_pulses(session: Path) -> tuple[np.ndarray, dict[int, int]]:
    """Sync-line rising edges (Pi ns, int64, in order) and camera pulse times by trigger index."""
    path = session / "pulses.csv"
    if not path.is_file():
        raise SessionAlignError(f"{session}: no pulses.csv (is this a rigstream session folder?)")
    sync: list[int] = []
    camera: dict[int, int] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["line"] == "sync":
                sync.append(int(row["t_pi_ns"]))
            elif row["line"] == "camera":
                camera[int(row["index"])] = int(row["t_pi_ns"])
    return np.array(sync, dtype=np.int64), camera


def align_session(session: str | Path, recorder_times: np.ndarray, units: str = "samples",
                  ) -> ClockMapping:
    """Align the session's sync edges with the recorder's (``recorder_times``: (M,) float64 in
    ``units``), save ``neural_mapping.json``, add ``t_neural_<units>`` to every table."""
    folder = Path(session)
    sync_ns, camera = read_pulses(folder)
    if sync_ns.size == 0:
        raise SessionAlignError(f"{folder / 'pulses.csv'}: no sync-line pulses (was sync_line enabled?)")
    t0_ns = int(sync_ns[0])
    mapping = align((sync_ns - t0_ns) / 1e9, np.asarray(recorder_times, dtype=np.float64),
                    units_a="s", units_b=units)
    column = f"t_neural_{units}"
    doc = json.loads(mapping.to_json())  # the mapping, plus how its Pi axis relates to t_pi_ns
    doc["session"] = {"pi_time": "seconds after t_pi_ns = first sync edge", "t0_pi_ns": t0_ns,
                      "column": column}
    (folder / MAPPING_FILE).write_text(json.dumps(doc, indent=2) + "\n")

    def to_neural(t_pi_ns: int) -> str:
        return repr(float(mapping.to_b((t_pi_ns - t0_ns) / 1e9)))

    for name in TABLES:
        path = folder / name
        if path.is_file():
            _add_column(path, column, _time_of(name, camera), to_neural)
    return mapping


def _time_of(table: str, camera: dict[int, int]) -> Callable[[dict[str, str]], int | None]:
    """The Pi time (ns) of a row of ``table``: its ``t_pi_ns``, or for events sent by trigger
    index, that pulse's time."""

    def get(row: dict[str, str]) -> int | None:
        value = row.get("t_pi_ns", "")
        if value not in ("", None, "-1"):
            return int(value)
        if table in ("events.csv", "frames.csv") and row.get("trigger_index", "") not in ("", None):
            return camera.get(int(row["trigger_index"]))  # sent by index, or a dropped frame
        return None

    return get


def _add_column(path: Path, column: str, t_pi: Callable[[dict[str, str]], int | None],
                to_neural: Callable[[int], str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(path, newline="") as src, open(tmp, "w", newline="") as dst:
        reader = csv.DictReader(src)
        fields = [f for f in (reader.fieldnames or []) if not f.startswith("t_neural_")]
        writer = csv.DictWriter(dst, fieldnames=[*fields, column], extrasaction="ignore")
        writer.writeheader()
        for row in reader:
            t = t_pi(row)
            row[column] = "" if t is None else to_neural(t)
            writer.writerow(row)
    tmp.replace(path)


def pi_to_neural(folder: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """Pi ns -> recorder units, from a session's saved mapping."""
    path = Path(folder) / MAPPING_FILE
    try:
        text = path.read_text()
    except OSError as exc:
        raise SessionAlignError(f"{path}: cannot read the session's clock mapping ({exc.strerror})") from None
    mapping = ClockMapping.from_json(text, where=str(path))
    t0_ns = int(json.loads(text)["session"]["t0_pi_ns"])
    return lambda t_pi_ns: mapping.to_b((np.asarray(t_pi_ns, dtype=np.int64) - t0_ns) / 1e9)


# ------------------------------------------------------------------------- simulation


def simulate_recorder(session: str | Path, config: SimRecorderConfig) -> dict[str, Any]:
    """The simulated recorder's view of the session's sync line: writes its edge file
    (``neural_sync_sim.npy``, sample numbers) and returns what the alignment is scored with."""
    from rigstream.sync.sim_recorder import SimRecorder

    folder = Path(session)
    sync_ns, camera = read_pulses(folder)
    if sync_ns.size == 0:
        raise SessionAlignError(f"{folder / 'pulses.csv'}: no sync-line pulses to record")
    rec = SimRecorder(rate_hz=config.rate_hz, offset_s=config.offset_s, drift_ppm=config.drift_ppm,
                      wander_ppm=config.wander_ppm, missing=config.missing, spurious=config.spurious,
                      seed=config.seed)
    samples, truth_index = rec.record(sync_ns / 1e9)
    np.save(folder / "neural_sync_sim.npy", samples)
    return {"recorder": rec, "samples": samples, "truth_index": truth_index, "camera": camera}


def score_alignment(session: str | Path, sim: dict[str, Any]) -> dict[str, Any]:
    """Frame times mapped through the session's alignment vs the simulated recorder's truth, µs."""
    folder = Path(session)
    to_neural = pi_to_neural(folder)
    camera = sim["camera"]
    t_pi = np.array(sorted(camera.values()), dtype=np.int64)
    rec = sim["recorder"]
    err_samples = to_neural(t_pi) - rec.true_samples(t_pi / 1e9)
    err_us = err_samples / rec.rate_hz * 1e6
    return {"frames_scored": int(t_pi.size), "rms_us": round(float(np.sqrt(np.mean(err_us**2))), 3),
            "max_us": round(float(np.abs(err_us).max()), 3),
            "p99_us": round(float(np.percentile(np.abs(err_us), 99)), 3)}
