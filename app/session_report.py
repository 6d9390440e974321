"""``rigstream report SESSION``: one self-contained HTML page (``SESSION/report.html``, figures
as PNG ``data:`` URIs from :mod:`rigstream.app.report_figures`) for a lab to look at after a
session. Sections (ids): ``summary``, ``frames``, ``latency``, ``clock`` (the stored residual of
every matched sync pulse, at its Pi edge), ``trajectories``, ``timeline`` and ``region`` (the
pose-vs-apparatus check); times are seconds since the first camera pulse. A missing or empty
table is a line in its section, an unreadable one a line naming the file: the page never fails.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rigstream.app import report_figures as figs
from rigstream.config import InputError

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
DEFAULT_WINDOW_MS = 100.0
"""Hit window of the region check: latest-wins pose sees an entry a few frames late."""
MAX_KEYPOINTS = 4
PREFERRED_KEYPOINTS = ("snout", "tail_base")


class TableError(InputError):
    """A session table that is missing, empty or unreadable; the message names the file."""


class Region(NamedTuple):
    """A box in world mm that ``keypoint`` entering should coincide with ``input`` turning on."""

    keypoint: str
    min_mm: tuple[float, float, float]
    max_mm: tuple[float, float, float]
    input: str
    source: str


@dataclass
class Options:
    regions: list[Region] = field(default_factory=list)
    """Empty: the rig's simulated inputs."""
    window_ms: float = DEFAULT_WINDOW_MS
    keypoints: list[str] = field(default_factory=list)


def parse_region(text: str, input_name: str) -> Region:
    """``KEYPOINT:xmin,ymin,zmin:xmax,ymax,zmax`` (mm) for ``input_name``."""
    form = "KEYPOINT:xmin,ymin,zmin:xmax,ymax,zmax (mm)"
    parts = text.split(":")
    if len(parts) != 3 or not parts[0]:
        raise InputError(f"--region: expected {form}, got {text!r}")
    try:
        lo, hi = (tuple(float(v) for v in p.split(",")) for p in parts[1:])
    except ValueError:
        raise InputError(f"--region: expected numbers in {form}, got {text!r}") from None
    if len(lo) != 3 or len(hi) != 3 or not all(a < b for a, b in zip(lo, hi, strict=True)):
        raise InputError(f"--region: expected 3 numbers per corner, min < max on every axis, got {text!r}")
    return Region(parts[0], lo, hi, input_name, "--region")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ tables

TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # name: (numeric columns required, text columns required, optional columns)
    "frames.csv": (("trigger_index", "t_pi_ns", "dropped"), ("camera",),
                   ("overrun", "lost_in_transport")),
    "pulses.csv": (("index", "t_pi_ns"), ("line",), ()),
    "pose_timing.csv": (("latency_ms",), (), ()),
    "firings.csv": (("trigger_index", "t_pi_ns"), ("rule",), ()),
    "inputs.csv": (("t_pi_ns",), ("input", "state"), ()),
}
"""What each table must have; every ``*_ms`` column is read too."""


def read_table(path: Path, numeric: Sequence[str], text: Sequence[str] = (),
               optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Columns of a CSV table (``numeric``, ``text``, ``optional`` and every ``*_ms`` one): text
    as str arrays, the rest float64 (NaN for empty cells). Every column is parsed, so a row with
    more fields than the header is an error (pandas does not count them with ``usecols``)."""
    import pandas as pd

    if not path.is_file():
        raise TableError(f"no {path.name} in this session")
    try:
        df = pd.read_csv(path, dtype={c: "category" for c in text}, keep_default_na=False,
                         na_values=[""], low_memory=False)
    except pd.errors.EmptyDataError:
        raise TableError(f"{path.name} is empty (not even a header)") from None
    except (pd.errors.ParserError, OSError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TableError(f"{path.name}: cannot be read as a table ({first})") from None
    lacking = [c for c in (*numeric, *text) if c not in df.columns]
    if lacking:
        raise TableError(f"{path.name}: expected the columns {', '.join(lacking)} in its header, "
                         f"got {', '.join(map(str, df.columns)) or 'none'}")
    out: dict[str, np.ndarray] = {}
    for c in (c for c in df.columns if c in {*numeric, *text, *optional} or str(c).endswith("_ms")):
        if c in text:
            out[c] = df[c].astype(str).to_numpy(str)
            continue
        col = pd.to_numeric(df[c], errors="coerce")
        bad = col.isna() & df[c].notna()
        if bad.any():
            r = int(np.flatnonzero(bad.to_numpy())[0])
            raise TableError(f"{path.name}: line {r + 2}: column {c}: expected a number, "
                             f"got {df[c].iloc[r]!r}")
        out[c] = col.to_numpy(np.float64, na_value=np.nan)
    return out


class Session:
    """A session folder: each table read once, its error kept and raised again on each use."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._tables: dict[str, dict[str, np.ndarray] | TableError] = {}
        self._points: Any = None
        self.summary: dict[str, Any] | None = None
        self.summary_error = ""
        try:
            doc = json.loads((folder / "summary.json").read_text())
            if not isinstance(doc, dict):
                raise ValueError(f"expected an object, got {type(doc).__name__}")
            self.summary = doc
        except FileNotFoundError:
            self.summary_error = "no summary.json in this session (it did not end in order?)"
        except (OSError, ValueError) as exc:
            self.summary_error = f"summary.json: cannot be read ({exc})"
        self.pulse_index, self.pulse_t_ns = self._pulses()
        self.t0_ns = float(self.pulse_t_ns.min()) if self.pulse_t_ns.size else float("nan")
        self.end_s = self._end_s()

    def table(self, name: str) -> dict[str, np.ndarray]:
        if name not in self._tables:
            try:
                self._tables[name] = read_table(self.folder / name, *TABLES[name])
            except TableError as exc:
                self._tables[name] = exc
        got = self._tables[name]
        if isinstance(got, TableError):
            raise got
        if not next(iter(got.values())).size:
            raise TableError(f"{name} has no rows")
        return got

    def _pulses(self) -> tuple[np.ndarray, np.ndarray]:
        """Camera pulses (pulses.csv, else frames.csv): trigger indices (P,) and Pi ns (P,),
        sorted by index. The first is the time axis' zero."""
        for name, line in (("pulses.csv", "line"), ("frames.csv", None)):
            try:
                t = self.table(name)
            except TableError:
                continue
            keep = ((t[line] == "camera") if line else np.ones(t["t_pi_ns"].size, bool)) & (t["t_pi_ns"] >= 0)
            if keep.any():
                index, first = np.unique(t["index" if line else "trigger_index"][keep], return_index=True)
                return index, t["t_pi_ns"][keep][first]
        return np.zeros(0), np.zeros(0)

    def pulse_time(self, index: np.ndarray) -> np.ndarray:
        """Pi ns of the camera pulses ``index`` (-1 where unknown)."""
        index = np.asarray(index, np.float64)
        if not self.pulse_index.size:
            return np.full(index.shape, -1.0)
        i = np.clip(np.searchsorted(self.pulse_index, index), 0, self.pulse_index.size - 1)
        return np.where(self.pulse_index[i] == index, self.pulse_t_ns[i], -1.0)

    def _end_s(self) -> float:
        """The end of the last pulse's period, s (else summary.json's duration)."""
        if self.pulse_t_ns.size >= 2:
            t = np.sort(self.pulse_t_ns)
            return float((t[-1] + np.median(np.diff(t)) - self.t0_ns) / 1e9)
        if self.summary and isinstance(self.summary.get("duration_s"), (int, float)):
            return float(self.summary["duration_s"])
        return 1.0

    def secs(self, t_ns: np.ndarray) -> np.ndarray:
        """Pi ns -> s since the first pulse (NaN for missing times)."""
        t = np.asarray(t_ns, np.float64)
        return np.where(t >= 0, (t - self.t0_ns) / 1e9, np.nan)

    def points3d(self) -> tuple[str, Any, np.ndarray]:
        """(file name, Points3D, (F,) s) of the filtered live 3D table, else the raw one."""
        from rigstream.inference.anipose_csv import read_points3d_csv

        names = ("pose3d_filtered.csv", "pose3d.csv")
        name = next((n for n in names if (self.folder / n).is_file()), None)
        if self._points is None and name is None:
            self._points = TableError("no pose3d_filtered.csv or pose3d.csv in this session (no live 3D)")
        elif self._points is None:
            try:
                pts = read_points3d_csv(self.folder / name)
                if not pts.frames.size:
                    raise TableError(f"{name} has no rows")
                t_ns = pts.extra.get("t_pi_ns", self.pulse_time(pts.frames))
                self._points = (name, pts, self.secs(t_ns))
            except InputError as exc:
                self._points = TableError(str(exc).replace(str(self.folder) + "/", ""))
        if isinstance(self._points, TableError):
            raise self._points
        return self._points


# ------------------------------------------------------------------------------ the page


def _stats(v: np.ndarray) -> list[Any]:
    v = v[np.isfinite(v)]
    return [int(v.size), *(np.percentile(v, [50, 95, 99, 100]).tolist() if v.size else [np.nan] * 4)]


def summary_section(s: Session) -> figs.Section:
    sec = figs.Section("summary", "Session")
    sm = s.summary
    if sm is None:
        sec.note(s.summary_error)
        return sec
    rows: list[list[Any]] = [["session", f"{s.folder.name} (rig {sm.get('rig', '?')})"]]
    if "duration_s" in sm:
        rows.append(["duration", f"{sm['duration_s']:.2f} s at {sm.get('rate_hz', 0):g} Hz, "
                                 f"{sm.get('pulses_sent', '?')} pulses"])
    frames, dropped = sm.get("frames", {}), sm.get("frames_dropped", {})
    rows.append(["cameras", ", ".join(frames) or "-"])
    for cam, n in frames.items():
        overrun = sm.get("frames_overrun", {}).get(cam, 0)
        rows.append([f"frames {cam}", f"{n} recorded, {dropped.get(cam, 0)} dropped"
                     + (f" ({overrun} overrun)" if overrun else "")])
    pose = sm.get("pose")
    rows.append(["pose", "not run" if not pose else
                 f"{pose.get('framesets_posed', 0)} frame sets posed, {pose.get('framesets_skipped', 0)} "
                 f"skipped (latest-wins); {pose.get('model', '?')} on {pose.get('engine', '?')}"])
    rows.append(["clips", str(sm.get("clips_saved", len(sm.get("clips", []))))])
    rules = (pose or {}).get("rules", {})
    fired = sum(r.get("fired", 0) for r in rules.values())
    per_rule = ", ".join(f"{k} {r.get('fired', 0)}" for k, r in rules.items())
    rows.append(["firings", f"{fired}" + (f" ({per_rule})" if rules else "")])
    for name, i in sm.get("inputs", {}).items():
        rows.append([f"input {name}",
                     f"{i.get('activations', 0)} activations, {i.get('recorded', 0)} recorded"])
    nc = sm.get("neural_clock")
    if not nc:
        rows.append(["neural alignment", "no neural clock"])
    elif nc.get("aligned"):
        m = nc.get("mapping", {})
        truth = nc.get("error_vs_truth")
        rows.append(["neural alignment", f"{m.get('n_matched', '?')} sync pulses matched, drift "
                     f"{m.get('drift_ppm', 0):.1f} ppm, column {nc.get('column', '?')}"
                     + (f"; vs the simulated truth RMS {truth['rms_us']} us, max {truth['max_us']} us"
                        if truth else "")])
    else:
        rows.append(["neural alignment", f"not aligned: {nc.get('error', '?')}"])
    sec.parts.append(sec.table(rows, cls="summary"))
    return sec


def frames_section(s: Session) -> figs.Section:
    sec = figs.Section("frames", "Frames and drops per camera")
    t = s.table("frames.csv")
    secs = s.secs(t["t_pi_ns"])
    if np.isnan(secs).any():  # rows without a time of their own: their pulse's
        secs = np.where(np.isnan(secs), s.secs(s.pulse_time(t["trigger_index"])), secs)
    zeros = np.zeros(secs.size)
    dropped, overrun = t["dropped"] > 0, t.get("overrun", zeros) > 0
    lost = t.get("lost_in_transport", zeros) > 0
    received: dict[str, np.ndarray] = {}
    marks: dict[str, dict[str, np.ndarray]] = {}
    rows = []
    for cam in sorted(set(t["camera"].tolist())):
        c = t["camera"] == cam
        kinds = {"dropped": c & dropped & ~overrun & ~lost, "overrun": c & overrun, "lost": c & lost}
        received[cam] = secs[c & ~dropped & ~lost & ~overrun]
        marks[cam] = {k: secs[m] for k, m in kinds.items()}
        rows.append([cam, received[cam].size, *(int(m.sum()) for m in kinds.values())])
    sec.figure(figs.frames_figure(received, marks, s.end_s), "frames per second and drops per camera")
    sec.parts.append(sec.table(rows, head=["camera", "recorded", "dropped", "overrun", "lost in transport"]))
    return sec


def latency_section(s: Session) -> figs.Section:
    sec = figs.Section("latency", "Latency per step")
    head = ["step", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"]
    for name, what in (("pose_timing.csv", "pose engine, per posed frame set"),
                       ("firings.csv", "rule firings, pulse to action, by rule")):
        sec.parts.append(f"<h3>{html.escape(what)} ({name})</h3>")
        try:
            t = s.table(name)
        except TableError as exc:
            sec.note(str(exc))
            continue
        steps = [c for c in t if c.endswith("_ms")]
        if not steps:
            sec.note(f"{name} has no *_ms columns")
            continue
        if name == "firings.csv":
            rules = dict.fromkeys(t["rule"].tolist())
            cols = {c[:-3]: {r: t[c][t["rule"] == r] for r in rules} for c in steps}
        else:
            cols = {c[:-3]: {"": t[c]} for c in steps}
        sec.figure(figs.histograms_figure(cols), f"histograms of {name}'s step times")
        sec.parts.append(sec.table([[c[:-3], *_stats(t[c])] for c in steps], head=head))
    return sec


def clock_section(s: Session) -> figs.Section:
    from rigstream.sync.align import ClockMapping

    sec = figs.Section("clock", "Clock fit: Pi -> neural recorder")
    path = s.folder / "neural_mapping.json"
    if not path.is_file():
        nc = (s.summary or {}).get("neural_clock") or {}
        sec.note("no neural_mapping.json in this session: not on a neural clock"
                 + (f" ({nc['error']})" if nc.get("error") else ""))
        return sec
    try:
        text = path.read_text()
        doc = json.loads(text)
        mapping = ClockMapping.from_json(text, where=path.name)
        t_sync0 = float(doc.get("session", {}).get("t0_pi_ns", np.nan))
    except InputError:
        raise  # it names the file
    except (OSError, ValueError, AttributeError) as exc:
        raise TableError(f"neural_mapping.json: cannot be read ({exc})") from None
    per_a_unit = 1e6 / {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}.get(mapping.units_a, np.nan)
    to_us = per_a_unit / mapping.scale  # B units -> us (NaN when A is not a time)
    try:
        pulses = s.table("pulses.csv")
        sync = np.sort(pulses["t_pi_ns"][pulses["line"] == "sync"])
    except TableError:
        sync = np.zeros(0)
    matched = np.delete(sync, mapping.unmatched_a[mapping.unmatched_a < sync.size]) if sync.size else sync
    residual, where = mapping.residuals, "stored in neural_mapping.json"
    recorder = s.folder / "neural_sync_sim.npy"
    if not residual.size and matched.size and recorder.is_file() and np.isfinite(t_sync0):
        # no residuals stored: the recorder edge nearest each Pi edge mapped onto its clock
        mapped = mapping.to_b((matched - t_sync0) / 1e9)
        residual = _nearest(np.sort(np.load(recorder).astype(np.float64)), mapped) - mapped
        where = "recomputed: the nearest edge of neural_sync_sim.npy to each mapped sync pulse"
    if residual.size:
        on_time = matched.size == residual.size
        x = s.secs(matched) if on_time else np.arange(residual.size, dtype=np.float64)
        outlier = np.zeros(residual.size, bool)
        outlier[mapping.outliers[mapping.outliers < residual.size]] = True
        us = np.isfinite(to_us)
        sec.figure(figs.residuals_figure(x, residual * (to_us if us else 1.0), outlier,
                                         "s since the first pulse" if on_time else "matched pulse",
                                         "residual (us)" if us else f"residual ({mapping.units_b})"),
                   "clock-fit residual per matched sync pulse")
        sec.note(f"residuals {where}" + ("" if on_time else "; the sync edges in pulses.csv do not "
                                         "line up with the matched pairs, so they are drawn by pair number"))
    else:
        sec.note("residuals per pulse: not stored in neural_mapping.json and no recorder edge file "
                 "to recompute them from; the fit's numbers only")
    sm = mapping.summary()
    rows = [["matched sync pulses", sm["n_matched"]], ["outliers (not fitted)", sm["n_outliers"]],
            ["unmatched Pi / recorder edges", f"{sm['unmatched_a']} / {sm['unmatched_b']}"],
            ["scale", f"{sm['scale']:.6g} {mapping.units_b} per {mapping.units_a}"],
            ["drift", f"{sm['drift_ppm']:.2f} ppm"],
            ["residual RMS / max", f"{sm['residual_rms']:.3g} / {sm['residual_max']:.3g} {mapping.units_b}"
             + (f" ({sm['residual_rms'] * to_us:.3g} / {sm['residual_max'] * to_us:.3g} us)"
                if np.isfinite(to_us) else "")]]
    truth = ((s.summary or {}).get("neural_clock") or {}).get("error_vs_truth")
    if truth:
        rows.append(["frame times vs the simulated truth",
                     f"RMS {truth['rms_us']} us, max {truth['max_us']} us"])
    sec.parts.append(sec.table(rows, cls="clock"))
    return sec


def _regions(s: Session, options: Options) -> list[Region]:
    """The options' regions, else one per input of the session's rig with a ``sim`` section."""
    if options.regions:
        return options.regions
    from rigstream.config import load_rig

    if not (s.folder / "rig.yaml").is_file():
        raise TableError("no rig.yaml in this session, so no simulated input regions: "
                         "give --region and --input")
    rig = load_rig(s.folder / "rig.yaml")
    return [Region(i.sim.keypoint, tuple(i.sim.min), tuple(i.sim.max), i.name,  # type: ignore[arg-type]
                   f"rig.yaml inputs[{k}].sim") for k, i in enumerate(rig.inputs) if i.sim is not None]


def trajectories_section(s: Session, options: Options, regions: list[Region]) -> figs.Section:
    sec = figs.Section("trajectories", "3D trajectories")
    name, pts, t_s = s.points3d()
    unknown = [k for k in options.keypoints if k not in pts.keypoints]
    if unknown:
        sec.note(f"--keypoints: {', '.join(unknown)} not in {name} (it has {', '.join(pts.keypoints)})")
    wanted = [k for k in options.keypoints if k in pts.keypoints] or [
        *(r.keypoint for r in regions), *PREFERRED_KEYPOINTS, *pts.keypoints]
    names = [k for k in dict.fromkeys(wanted) if k in pts.keypoints][:MAX_KEYPOINTS]
    idx = [pts.keypoints.index(k) for k in names]
    boxes = [figs.Box(f"{r.keypoint} / {r.input}", r.min_mm, r.max_mm)
             for r in regions if r.keypoint in names]
    sec.figure(figs.trajectories_figure(t_s, pts.xyz[:, idx], names, boxes),
               f"top view and height of {', '.join(names)}")
    sec.note(f"{name}: {pts.frames.size} posed frame sets; mm in the calibration's frame")
    return sec


def timeline_section(s: Session) -> figs.Section:
    sec = figs.Section("timeline", "Rule firings, inputs and outputs")
    rows: list[figs.TimelineRow] = []
    try:
        f = s.table("firings.csv")
        for rule in dict.fromkeys(f["rule"].tolist()):
            t = s.secs(f["t_pi_ns"][f["rule"] == rule])
            rows.append(figs.TimelineRow(f"rule {rule}", "firing", t, None))
    except TableError as exc:
        sec.note(str(exc))
    try:
        i = s.table("inputs.csv")
        for name in dict.fromkeys(i["input"].tolist()):
            c = i["input"] == name
            on = s.secs(i["t_pi_ns"][c & (i["state"] == "on")])
            off = np.sort(s.secs(i["t_pi_ns"][c & (i["state"] == "off")]))
            j = np.searchsorted(off, on)  # each 'on' ends at the next 'off', else the session's end
            ends = np.append(off, s.end_s)[j]
            rows.append(figs.TimelineRow(f"input {name}", "input", on, ends))
    except TableError as exc:
        sec.note(str(exc))
    try:
        p = s.table("pulses.csv")
        lines = [ln for ln in dict.fromkeys(p["line"].tolist())
                 if ln == "ttl" or (ln.startswith("out:") and not ln.endswith("-fall"))]
        for line in lines:
            up, down = p["line"] == line, p["line"] == f"{line}-fall"
            fall = dict(zip(p["index"][down].tolist(), p["t_pi_ns"][down].tolist(), strict=True))
            starts = p["t_pi_ns"][up]
            ends = np.array([fall.get(n, t) for n, t in zip(p["index"][up].tolist(), starts, strict=True)])
            label = "TTL" if line == "ttl" else f"output {line[4:]}"
            rows.append(figs.TimelineRow(label, "output", s.secs(starts), s.secs(ends)))
    except TableError as exc:
        sec.note(str(exc))
    if rows:
        times = [v for r in rows for v in (r.starts, r.ends) if v is not None and np.isfinite(v).any()]
        end_s = max([s.end_s, *(float(np.nanmax(v)) for v in times)])
        sec.figure(figs.timeline_figure(rows, end_s), "rule firings, input edges and output pulses")
        what = {"firing": "firings", "input": "'on' edges", "output": "pulses"}
        span = [(v.min(), v.max()) if v.size else (np.nan, np.nan) for v in (r.starts[np.isfinite(r.starts)]
                                                                           for r in rows)]
        sec.parts.append(sec.table([[r.label, what[r.kind], r.starts.size, float(lo), float(hi)]
                                    for r, (lo, hi) in zip(rows, span, strict=True)],
                                   head=["row", "what", "n", "first (s)", "last (s)"], cls="timeline"))
    else:
        sec.note("no rule firings, input edges or output pulses in this session")
    return sec


class RegionCheck(NamedTuple):
    """Entries of a keypoint into a region vs an input's 'on' edges."""

    entries: int
    edges: int
    hits: int
    entries_missed: int
    edges_missed: int
    dt_ms: np.ndarray
    """(entries,) nearest 'on' edge minus the entry, ms; NaN when the input has no edge."""


def check_region(t_s: np.ndarray, xyz_mm: np.ndarray, region: Region, on_s: np.ndarray,
                 window_ms: float) -> RegionCheck:
    """``t_s`` (F,) and ``xyz_mm`` (F, 3): the keypoint in each posed frame set. An entry is a
    row inside the box after a row outside it (rows without a point are left out); edges count
    within the table's span (± the window)."""
    ok = np.isfinite(xyz_mm).all(axis=1) & np.isfinite(t_s)
    t, p = t_s[ok], xyz_mm[ok]
    inside = np.all((p >= region.min_mm) & (p <= region.max_mm), axis=1)
    entries = t[1:][inside[1:] & ~inside[:-1]]
    w = window_ms / 1e3
    on = np.sort(on_s[(on_s >= t[0] - w) & (on_s <= t[-1] + w)]) if t.size else np.zeros(0)
    dt = _nearest(on, entries) - entries
    near = np.abs(_nearest(entries, on) - on) <= w
    hit = np.abs(dt) <= w
    return RegionCheck(int(entries.size), int(on.size), int(hit.sum()), int(entries.size - hit.sum()),
                       int(on.size - near.sum()), dt * 1e3)


def _nearest(sorted_t: np.ndarray, q: np.ndarray) -> np.ndarray:
    """For each of ``q`` the nearest of ``sorted_t`` (NaN when it is empty)."""
    if not sorted_t.size:
        return np.full(q.size, np.nan)
    i = np.searchsorted(sorted_t, q)
    lo, hi = sorted_t[np.clip(i - 1, 0, sorted_t.size - 1)], sorted_t[np.clip(i, 0, sorted_t.size - 1)]
    return np.where(np.abs(hi - q) < np.abs(lo - q), hi, lo)


def region_section(s: Session, options: Options, regions: list[Region]) -> figs.Section:
    sec = figs.Section("region", "Pose vs apparatus: region entries and input edges")
    if not regions:
        sec.note("no region to check: the rig has no input with a sim section; give --region and --input")
        return sec
    name, pts, t_s = s.points3d()
    inputs = s.table("inputs.csv")
    for r in regions:
        title = f"{r.keypoint} in [{', '.join(f'{v:g}' for v in r.min_mm)}] .. " \
                f"[{', '.join(f'{v:g}' for v in r.max_mm)}] mm vs input {r.input} ({r.source})"
        sec.parts.append(f"<h3>{html.escape(title)}</h3>")
        if r.keypoint not in pts.keypoints:
            sec.note(f"{r.keypoint}: not a keypoint of {name} (it has {', '.join(pts.keypoints)})")
            continue
        on = s.secs(inputs["t_pi_ns"][(inputs["input"] == r.input) & (inputs["state"] == "on")])
        c = check_region(t_s, pts.xyz[:, pts.keypoints.index(r.keypoint)], r, on, options.window_ms)
        hits = c.dt_ms[np.abs(c.dt_ms) <= options.window_ms]
        rows = [["entries into the region", c.entries], [f"'on' edges of {r.input}", c.edges],
                [f"hits (an edge within ±{options.window_ms:g} ms)", c.hits],
                ["entries without an edge", c.entries_missed], ["edges without an entry", c.edges_missed],
                ["median edge - entry, hits (ms)", float(np.median(hits)) if hits.size else np.nan],
                ["p95 |edge - entry|, hits (ms)",
                 float(np.percentile(np.abs(hits), 95)) if hits.size else np.nan]]
        keys = ["entries", "edges", "hits", "entries_missed", "edges_missed", "median_ms", "p95_ms"]
        img = figs.region_figure(c.dt_ms, options.window_ms, f"{r.keypoint} entries vs {r.input} on")
        sec.parts.append(f'<div class="side"><figure><img src="{img}" alt="time from entry to edge">'
                         f'</figure>{sec.table(rows, cls="hits", keys=keys)}</div>')
    sec.note(f"entries from {name} (latest-wins: only posed frame sets, so an entry is seen up to a "
             f"few frames late); edges from inputs.csv within the table's span")
    return sec


def _guarded(title: str, sid: str, build: Callable[[], figs.Section]) -> figs.Section:
    """The section, or a line saying why it has none: a table's error, or (logged with its
    traceback) anything else, so that the other sections still make a page."""
    sec = figs.Section(sid, title)
    try:
        return build()
    except InputError as exc:
        sec.note(str(exc))
    except Exception as exc:
        logger.exception("report: section %s", sid)
        sec.note(f"this section could not be drawn ({type(exc).__name__}: {exc}); see the log")
    return sec


def build_report(folder: str | Path, options: Options | None = None) -> str:
    """The page's HTML for a session folder."""
    figs.require_matplotlib()
    options = options or Options()
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"report: {folder}: not a folder (expected a session folder)")
    s = Session(folder)
    try:
        regions, region_error = _regions(s, options), ""
    except InputError as exc:
        regions, region_error = [], str(exc)

    def region() -> figs.Section:
        if region_error:
            raise TableError(region_error)
        return region_section(s, options, regions)

    sections = [
        _guarded("Session", "summary", lambda: summary_section(s)),
        _guarded("Frames and drops per camera", "frames", lambda: frames_section(s)),
        _guarded("Latency per step", "latency", lambda: latency_section(s)),
        _guarded("Clock fit", "clock", lambda: clock_section(s)),
        _guarded("3D trajectories", "trajectories", lambda: trajectories_section(s, options, regions)),
        _guarded("Rule firings, inputs and outputs", "timeline", lambda: timeline_section(s)),
        _guarded("Pose vs apparatus", "region", region),
    ]
    return figs.page(f"Session {folder.resolve().name}", f"{folder.resolve()}; written "
                     f"{time.strftime('%Y-%m-%d %H:%M')} by rigstream report; times in s since the first "
                     "camera pulse", sections)


def write_report(folder: str | Path, out: str | Path | None = None, options: Options | None = None) -> Path:
    path = Path(out) if out else Path(folder) / REPORT_FILE
    page = build_report(folder, options)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page)
    tmp.replace(path)
    return path


def cmd_report(args: argparse.Namespace) -> int:
    regions, inputs = args.region or [], args.input or []
    if len(regions) != len(inputs):
        raise InputError(f"report: give one --input per --region (got {len(regions)} --region and "
                         f"{len(inputs)} --input)")
    if args.window_ms <= 0:
        raise InputError(f"report: --window-ms must be positive, got {args.window_ms:g}")
    options = Options([parse_region(r, i) for r, i in zip(regions, inputs, strict=True)], args.window_ms,
                      [k for k in (args.keypoints or "").split(",") if k])
    for noisy in ("matplotlib", "numexpr"):  # numexpr (pandas' import) logs its thread count
        logging.getLogger(noisy).setLevel(logging.WARNING)
    path = write_report(args.session, args.out, options)
    print(f"report: {path}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="one HTML page of a recorded session: frames and drops, latency, "
                                      "clock fit, 3D, firings and inputs, pose vs apparatus")
    p.add_argument("session", help="session folder")
    p.add_argument("--out", default=None, help=f"HTML file to write (default SESSION/{REPORT_FILE})")
    p.add_argument("--region", action="append", metavar="KEYPOINT:xmin,ymin,zmin:xmax,ymax,zmax",
                   help="a 3D box (mm) whose entries should coincide with --input's 'on' edges; repeat "
                        "with one --input each (default: every input of the rig with a sim section)")
    p.add_argument("--input", action="append", metavar="NAME", help="the input of the --region before it")
    p.add_argument("--window-ms", type=float, default=DEFAULT_WINDOW_MS,
                   help=f"an entry and an edge this close are a hit (default {DEFAULT_WINDOW_MS:g} ms)")
    p.add_argument("--keypoints", default=None, help="comma-separated keypoints to draw in 3D (default: "
                                                     f"the regions' and up to {MAX_KEYPOINTS} others)")
    p.set_defaults(func=cmd_report)
