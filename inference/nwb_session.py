"""Reading a session folder for NWB: its tables, its time base, and its live pose.

:func:`read_session` reads and checks what the NWB writer (:mod:`rigstream.inference.nwb_files`)
takes from a session folder besides the pose, before anything is written (the tables it needs and
uses are listed at ``write_session_nwb``); a malformed cell is an NwbExportError naming its line.
:func:`read_pose2d_csv` and :func:`read_pose3d_csv` read the live pose tables as the
writer's inputs, :class:`Pose2DSeries` and :class:`Pose3DSeries`; :func:`session_skeleton` finds
their skeleton. The series and :class:`NwbExportError` live here, below the writer, so that both
sides import them without a cycle; ``nwb_files`` re-exports them.

Times. Every timestamp is in seconds on one clock, said in the file's ``data_collection`` and
``session_description`` (:func:`time_base`): with ``neural_mapping.json`` (the session aligned to a
neural recorder), seconds on the recorder's clock (its time in its own units, ``t_neural_<units>``,
divided by its units per second; for ``samples`` that is the sample rate: ``neural_rate_hz``, else
the rig's simulated recorder's ``rate_hz``); otherwise, or when no sample rate is known (a warning
says so), seconds on the Raspberry Pi's clock after the session's first pulse in ``pulses.csv``. The
Pi clock has no date: ``session_start_time`` is the folder name's stamp
(``session-YYYYmmdd-HHMMSS``) or the rig file's modification time (:func:`wall_time`), and
``timestamps_reference_time`` is the wall-clock time of the clock's zero estimated from it (the
first pulse, or for the recorder's clock that minus the first pulse's recorder time): approximate,
to the second.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from rigstream.calibration import Calibration
from rigstream.config import InputError, RigConfig, load_rig
from rigstream.inference.anipose_csv import read_points3d_csv
from rigstream.inference.dlc_files import pose2d_keypoints, session_model_name
from rigstream.sync.session_align import MAPPING_FILE, pi_to_neural

logger = logging.getLogger(__name__)

POSE2D_FILE = "pose2d.csv"
PI_CLOCK = "Seconds on the Raspberry Pi's clock"
NEURAL_CLOCK = "Seconds on the neural recorder's clock"
"""How the file's time-base sentence (``data_collection``) begins, for each clock."""

_UNITS_PER_S = {"s": 1.0, "ms": 1e3, "us": 1e6, "µs": 1e6, "ns": 1e9}
_STAMP = re.compile(r"(\d{8}-\d{6})")


class NwbExportError(InputError):
    """A session or pose that cannot be written as NWB; the message says what, where and why."""


# ---------------------------------------------------------------------------------------------
# Pose handed to the writer


def _vector(value: Any, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1 or (n is not None and arr.size != n):
        want = f"({n},)" if n is not None else "(N,)"
        raise NwbExportError(f"{name}: expected shape {want}, got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise NwbExportError(f"{name}: expected integers, got {arr.dtype}")
    return arr.astype(np.int64)


def _check_times(trigger_index: np.ndarray, t_pi_ns: np.ndarray) -> None:
    if trigger_index.size > 1 and (np.diff(trigger_index) <= 0).any():
        i = int(np.nonzero(np.diff(trigger_index) <= 0)[0][0])
        raise NwbExportError(f"trigger_index: expected strictly increasing values, got "
                             f"{trigger_index[i]} then {trigger_index[i + 1]} at rows {i}, {i + 1}")
    if (t_pi_ns < 0).any():
        i = int(np.nonzero(t_pi_ns < 0)[0][0])
        raise NwbExportError(f"t_pi_ns: expected a trigger pulse's time (>= 0 ns on the Pi clock), got "
                             f"{t_pi_ns[i]} at row {i} (trigger {trigger_index[i]})")


def _check_rows(series: Any, field: str, coords: str) -> np.ndarray:
    """A pose series' rows converted and checked in place: ``trigger_index``, ``t_pi_ns`` and its
    (N, K, 3) ``field`` (``coords`` names the last axis in the message); returns that array."""
    index = _vector(series.trigger_index, "trigger_index")
    t = _vector(series.t_pi_ns, "t_pi_ns", index.size)
    values = np.asarray(getattr(series, field), dtype=np.float64)
    if values.ndim != 3 or values.shape[0] != index.size or values.shape[2] != 3:
        raise NwbExportError(f"{field}: expected shape ({index.size}, K, 3) (rows, keypoints, {coords}), "
                             f"got {values.shape}")
    _check_times(index, t)
    object.__setattr__(series, "trigger_index", index)
    object.__setattr__(series, "t_pi_ns", t)
    object.__setattr__(series, field, values)
    return values


@dataclass(frozen=True)
class Pose2DSeries:
    """One camera's 2D pose, one row per posed trigger (frame set), trigger indices increasing."""

    trigger_index: np.ndarray
    """(N,) int64, strictly increasing."""
    t_pi_ns: np.ndarray
    """(N,) int64: the trigger pulse's time on the Pi clock, ns."""
    values: np.ndarray
    """(N, K, 3) float64: x px, y px (image pixels, origin at the top-left corner), likelihood in
    [0, 1]; NaN where not posed."""

    def __post_init__(self) -> None:
        _check_rows(self, "values", "x/y/likelihood")


@dataclass(frozen=True)
class Pose3DSeries:
    """3D pose, one row per triangulated trigger (frame set), trigger indices increasing."""

    trigger_index: np.ndarray
    """(N,) int64, strictly increasing."""
    t_pi_ns: np.ndarray
    """(N,) int64: the trigger pulse's time on the Pi clock, ns."""
    xyz: np.ndarray
    """(N, K, 3) float64 mm in the calibration's world frame; NaN where missing."""
    score: np.ndarray | None = field(default=None)
    """(N, K) float64 in [0, 1]: the 2D score behind each point (stored as its confidence); NaN
    where missing. None: no confidence is written."""

    def __post_init__(self) -> None:
        xyz = _check_rows(self, "xyz", "x/y/z mm")
        if self.score is not None:
            score = np.asarray(self.score, dtype=np.float64)
            if score.shape != xyz.shape[:2]:
                raise NwbExportError(f"score: expected shape {xyz.shape[:2]} (rows, keypoints), got "
                                     f"{score.shape}")
            object.__setattr__(self, "score", score)


# ---------------------------------------------------------------------------------------------
# The session's tables


def _read_csv(path: Path, required: Sequence[str], filled: Sequence[str] | None = None) -> Any:
    """A session table as a DataFrame, every cell text ("" where blank); a last line with an empty
    ``filled`` column (default: every required one), cut short by a session killed mid-write, is
    dropped."""
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise NwbExportError(f"{path}: empty file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise NwbExportError(f"{path}: cannot read as CSV: {exc}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise NwbExportError(f"{path}: missing columns {missing}; found {list(df.columns)[:10]}")
    df = df.fillna("")  # a short line's missing cells
    if len(df) and (df.iloc[-1][list(required if filled is None else filled)] == "").any():
        logger.warning("%s: the last line is incomplete; ignored", path)
        df = df.iloc[:-1]
    return df


def column_numbers(df: Any, column: str, path: Path, *, integer: bool,
                   blank: float | None = None) -> np.ndarray:
    """A column as int64 (``integer``) or float64; blank cells (and ``-1`` for times) become
    ``blank``, or are an error when ``blank`` is None. Errors name the line."""
    import pandas as pd

    text = df[column].astype(str).str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    empty = (text == "").to_numpy()
    bad = np.isnan(values) & ~empty if blank is not None else np.isnan(values)
    if integer:
        bad |= np.isfinite(values) & (values != np.round(values))
    if bad.any():
        row = int(np.nonzero(bad)[0][0])
        want = "an integer" if integer else "a number"
        raise NwbExportError(f"{path}: line {row + 2}: {column} {df[column].iloc[row]!r} is not {want}")
    if blank is not None:
        values = np.where(empty, blank, values)
    return values.astype(np.int64) if integer else values


@dataclass(frozen=True)
class _Pulses:
    """pulses.csv: per line (``camera``, ``camera-fall``, ``sync``, ...), indices and Pi times."""

    lines: dict[str, tuple[np.ndarray, np.ndarray]]
    """line -> ((P,) int64 index sorted, (P,) int64 t_pi_ns)."""
    first_ns: int
    """The earliest t_pi_ns of any line."""

    def time(self, line: str, index: np.ndarray) -> np.ndarray:
        """(M,) int64 Pi ns of the pulses ``index`` of ``line``; -1 where there is none."""
        index = np.asarray(index, dtype=np.int64)
        out = np.full(index.shape, -1, dtype=np.int64)
        if line not in self.lines or not index.size:
            return out
        idx, t = self.lines[line]
        if idx.size:
            at = np.minimum(np.searchsorted(idx, index), idx.size - 1)
            found = idx[at] == index
            out[found] = t[at[found]]
        return out


def _read_pulses(path: Path) -> _Pulses:
    df = _read_csv(path, ("index", "t_pi_ns", "line"))
    if not len(df):
        raise NwbExportError(f"{path}: no pulses (the session's time base is its first pulse)")
    index = column_numbers(df, "index", path, integer=True)
    t = column_numbers(df, "t_pi_ns", path, integer=True)
    line = df["line"].to_numpy(dtype=str)
    lines = {}
    for name in dict.fromkeys(line):
        mine = np.nonzero(line == name)[0]
        # A repeated index keeps its last row: unique over the reversed rows takes the last.
        idx, first = np.unique(index[mine][::-1], return_index=True)
        lines[str(name)] = (idx, t[mine][::-1][first])
    return _Pulses(lines=lines, first_ns=int(t.min()))


@dataclass(frozen=True)
class _Video:
    camera: str
    path: Path
    """The video file (it may be missing; the NWB file only points at it)."""
    t_pi_ns: np.ndarray
    """(F,) int64: video frame f's trigger pulse."""


@dataclass(frozen=True)
class Session:
    """What write_session_nwb reads from a session folder besides the pose."""

    folder: Path
    pulses: _Pulses
    cameras: list[str]
    """frames.csv's cameras, in the calibration's order first."""
    calibration: Calibration | None
    rig: RigConfig | None
    videos: dict[str, _Video]
    firings: Any
    events: Any
    clips: list[tuple[str, dict[str, Any]]]


def _read_frames(path: Path, pulses: _Pulses, session: Path) -> tuple[list[str], dict[str, _Video]]:
    df = _read_csv(path, ("camera", "trigger_index", "t_pi_ns"), ("camera", "trigger_index"))
    cameras = [str(c) for c in dict.fromkeys(df["camera"].to_numpy(dtype=str)) if str(c)]
    if "video_frame" not in df.columns:
        logger.warning("%s: no video_frame column; no video is referenced", path)
        return cameras, {}
    trigger = column_numbers(df, "trigger_index", path, integer=True)
    t = column_numbers(df, "t_pi_ns", path, integer=True, blank=-1)
    t = np.where(t < 0, pulses.time("camera", trigger), t)  # a row without its own time: its pulse's
    frame = column_numbers(df, "video_frame", path, integer=True, blank=-1)
    camera = df["camera"].to_numpy(dtype=str)
    listed = _recorded_videos(session)
    videos = {}
    for cam in cameras:
        mine = np.nonzero((camera == cam) & (frame >= 0))[0]
        if not mine.size:
            continue
        number, last = np.unique(frame[mine][::-1], return_index=True)
        times = t[mine][::-1][last]
        if number[-1] != number.size - 1:
            missing = sorted(set(range(int(number[-1]) + 1)) - set(number.tolist()))[:5]
            logger.warning("%s: camera %s: video frames %s have no row; its video is not referenced",
                           path, cam, missing)
            continue
        if (times < 0).any():
            logger.warning("%s: camera %s: video frame %d has no trigger pulse time; its video is not "
                           "referenced", path, cam, int(number[np.nonzero(times < 0)[0][0]]))
            continue
        videos[cam] = _Video(cam, _video_path(session, cam, listed), times)
    return cameras, videos


def _recorded_videos(session: Path) -> dict[str, str]:
    """recording.json's ``videos`` (camera -> path relative to the session), if it says."""
    try:
        videos = json.loads((session / "recording.json").read_text()).get("videos") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(videos, dict):
        return {}
    return {str(k): str(v) for k, v in videos.items() if isinstance(v, str)}


def _video_path(session: Path, camera: str, listed: Mapping[str, str]) -> Path:
    if camera in listed:
        return session / listed[camera]
    found = sorted((session / "video").glob(f"{camera}.*"))
    if found:
        return found[0]
    path = session / "video" / f"{camera}.mkv"
    logger.warning("%s: not found; the NWB file points at it anyway", path)
    return path


def _read_clips(session: Path) -> list[tuple[str, dict[str, Any]]]:
    clips = []
    for path in sorted((session / "clips").glob("*/event.json")):
        try:
            doc = json.loads(path.read_text())
            start, end = int(doc["start_index"]), int(doc["end_index"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NwbExportError(f"{path}: cannot read the clip's start_index/end_index: {exc}") from None
        events = doc.get("events") if isinstance(doc.get("events"), list) else []
        first = events[0] if events and isinstance(events[0], dict) else {}
        clips.append((path.parent.name, {"start_index": start, "end_index": end,
                                         "event": str(first.get("name") or ""),
                                         "trigger_index": _int_or(first.get("trigger_index"), -1)}))
    return clips


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _load_rig(session: Path) -> RigConfig | None:
    path = session / "rig.yaml"
    if not path.is_file():
        return None
    try:
        return load_rig(path)
    except InputError as exc:
        logger.warning("%s: not used (%s)", path, exc)
        return None


def read_session(session: Path, pose_cameras: Sequence[str]) -> Session:
    """A session folder's tables, read and checked; ``pose_cameras`` join frames.csv's cameras."""
    if not session.is_dir():
        raise NwbExportError(f"{session}: not a folder (expected a rigstream session folder)")
    for name in ("pulses.csv", "frames.csv"):
        if not (session / name).is_file():
            raise NwbExportError(f"{session / name}: not found (a rigstream session folder has pulses.csv "
                                 f"and frames.csv)")
    pulses = _read_pulses(session / "pulses.csv")
    cameras, videos = _read_frames(session / "frames.csv", pulses, session)
    calibration = None
    if (session / "calibration.toml").is_file():
        calibration = Calibration.load(session / "calibration.toml")
    else:
        logger.warning("%s: no calibration.toml; cameras are written without calibration", session)
    cameras = list(dict.fromkeys([*cameras, *pose_cameras]))
    if calibration is not None:
        order = {name: i for i, name in enumerate(calibration.names)}
        cameras.sort(key=lambda c: order.get(c, len(order)))
    firings = events = None
    if (session / "firings.csv").is_file():
        firings = _read_csv(session / "firings.csv", ("rule", "trigger_index", "t_pi_ns"), ("rule",))
    if (session / "events.csv").is_file():
        events = _read_csv(session / "events.csv", ("name", "trigger_index", "t_pi_ns"), ("name",))
    return Session(folder=session, pulses=pulses, cameras=cameras, calibration=calibration,
                   rig=_load_rig(session), videos=videos, firings=firings, events=events,
                   clips=_read_clips(session))


# ---------------------------------------------------------------------------------------------
# Times


@dataclass(frozen=True)
class TimeBase:
    """The file's clock: how Pi nanoseconds become its seconds, and the sentence saying so."""

    clock: str
    """``neural`` or ``pi``."""
    description: str
    to_seconds: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    """(M,) int64 Pi ns (all >= 0) -> (M,) float64 seconds."""

    def seconds(self, t_pi_ns: np.ndarray) -> np.ndarray:
        """(M,) Pi ns -> (M,) float64 seconds on the file's clock; NaN where the time is -1."""
        t = np.asarray(t_pi_ns, dtype=np.int64)
        out = np.full(t.shape, np.nan)
        ok = t >= 0
        if ok.any():
            out[ok] = self.to_seconds(t[ok])
        return out


def time_base(session: Path, pulses: _Pulses, rig: RigConfig | None,
              neural_rate_hz: float | None) -> TimeBase:
    """The file's clock (the module docstring says which); ``neural_rate_hz`` for a recorder in samples."""
    t0 = pulses.first_ns
    pi = TimeBase("pi", f"{PI_CLOCK}: (t_pi_ns - {t0}) / 1e9, zero at the session's first pulse in "
                        f"pulses.csv", lambda t: (t - t0) / 1e9)
    if not (session / MAPPING_FILE).is_file():
        return pi
    to_units = pi_to_neural(session)
    try:
        units = str(json.loads((session / MAPPING_FILE).read_text())["units_b"])
    except (OSError, ValueError, KeyError) as exc:
        raise NwbExportError(f"{session / MAPPING_FILE}: no units_b ({exc})") from None
    clock = rig.neural_clock if rig is not None else None
    name = clock.name if clock is not None else "neural recorder"
    if units in _UNITS_PER_S:
        per_s, how = _UNITS_PER_S[units], f"t_neural_{units} / {_UNITS_PER_S[units]:g}"
    elif units == "samples":
        per_s = neural_rate_hz
        if per_s is None and clock is not None and clock.kind == "sim" and clock.units == "samples":
            per_s = clock.sim.rate_hz
        if per_s is None:
            logger.warning("%s: the recorder's times are samples and its sample rate is unknown (pass "
                           "neural_rate_hz); times are on the Pi clock", session / MAPPING_FILE)
            return TimeBase("pi", f"{pi.description} (the session is aligned to a neural recorder in "
                                  f"samples, but its sample rate was not given)", pi.to_seconds)
        how = f"t_neural_samples / {per_s:g} Hz"
    else:
        logger.warning("%s: the recorder's units %r are not a time unit nor samples; times are on the Pi "
                       "clock", session / MAPPING_FILE, units)
        return TimeBase("pi", f"{pi.description} (the neural recorder's units {units!r} cannot be made "
                              f"seconds)", pi.to_seconds)
    return TimeBase("neural", f"{NEURAL_CLOCK} ({name}): {how}, its time mapped from the Pi's through "
                              f"the sync line ({MAPPING_FILE})",
                    lambda t: np.asarray(to_units(t), dtype=np.float64) / per_s)


def wall_time(session: Path) -> datetime:
    """When the session began, approximately: the folder name's stamp, else rig.yaml's (or
    frames.csv's) modification time; local time zone."""
    m = _STAMP.search(session.resolve().name)
    if m:
        try:
            return datetime.strptime(m.group(1), "%Y%m%d-%H%M%S").astimezone()
        except ValueError:
            pass
    for name in ("rig.yaml", "frames.csv"):
        if (session / name).is_file():
            return datetime.fromtimestamp((session / name).stat().st_mtime).astimezone()
    return datetime.now().astimezone()


# ---------------------------------------------------------------------------------------------
# A session's live pose


def read_pose2d_csv(path: str | Path) -> tuple[list[str], dict[str, Pose2DSeries]]:
    """A session's ``pose2d.csv`` -> (keypoints, camera -> Pose2DSeries), rows in trigger order; a
    trigger posed twice (a restarted engine) keeps its last row."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise NwbExportError(f"{path}: not found (a session recorded with live pose has {POSE2D_FILE})")
    df = _read_csv(path, ("trigger_index", "t_pi_ns", "camera"))
    keypoints = pose2d_keypoints([str(c) for c in df.columns])
    if not keypoints:
        raise NwbExportError(f"{path}: no keypoint columns (<kp>_x, <kp>_y, <kp>_likelihood)")
    trigger = column_numbers(df, "trigger_index", path, integer=True)
    t = column_numbers(df, "t_pi_ns", path, integer=True)
    values = np.stack([np.stack([column_numbers(df, f"{k}_{c}", path, integer=False, blank=np.nan)
                                 for c in ("x", "y", "likelihood")], axis=-1) for k in keypoints], axis=1)
    camera = df["camera"].to_numpy(dtype=str)
    if (camera == "").any():
        raise NwbExportError(f"{path}: line {int(np.nonzero(camera == '')[0][0]) + 2}: no camera")
    pose = {}
    for cam in sorted(dict.fromkeys(camera.tolist())):
        mine = np.nonzero(camera == cam)[0]
        index, last = np.unique(trigger[mine][::-1], return_index=True)
        rows = mine[::-1][last]
        if rows.size != mine.size:
            logger.info("%s: camera %s: %d repeated trigger rows (the last is kept)", path, cam,
                        mine.size - rows.size)
        pose[str(cam)] = Pose2DSeries(trigger_index=index, t_pi_ns=t[rows], values=values[rows])
    return keypoints, pose


def read_pose3d_csv(path: str | Path, keypoints: Sequence[str], session: str | Path | None = None,
                    ) -> Pose3DSeries:
    """A session's 3D table (anipose CSV, ``fnum`` = trigger index) -> Pose3DSeries with the
    keypoints in the order given. Times come from its ``t_pi_ns`` column, else (an anipose file)
    from ``session``'s camera pulses; a trigger repeated keeps its last row."""
    path = Path(path).expanduser()
    points = read_points3d_csv(path)
    if set(points.keypoints) != set(keypoints):
        raise NwbExportError(f"{path}: keypoints {points.keypoints} are not the 2D pose's {list(keypoints)}")
    order = [points.keypoints.index(k) for k in keypoints]
    if "t_pi_ns" in points.extra:
        t = points.extra["t_pi_ns"]
        if np.isnan(t).any():
            raise NwbExportError(f"{path}: line {int(np.nonzero(np.isnan(t))[0][0]) + 2}: no t_pi_ns")
        t = t.astype(np.int64)
    elif session is not None:
        t = _read_pulses(Path(session) / "pulses.csv").time("camera", points.frames)
        if (t < 0).any():
            raise NwbExportError(f"{path}: fnum {points.frames[t < 0][0]} has no camera pulse in "
                                 f"{Path(session) / 'pulses.csv'} (and the file has no t_pi_ns column)")
    else:
        raise NwbExportError(f"{path}: no t_pi_ns column, and no session to take the pulse times from")
    index, last = np.unique(points.frames[::-1], return_index=True)
    rows = np.arange(points.frames.size)[::-1][last]
    return Pose3DSeries(trigger_index=index, t_pi_ns=t[rows], xyz=points.xyz[rows][:, order],
                        score=points.score[rows][:, order])


def session_skeleton(session: str | Path, keypoints: Sequence[str],
                     model: str | None = None) -> list[tuple[str, str]]:
    """The skeleton for a session's keypoints: the pose model card's (``model``, default the
    session's model) when its keypoints are these, else the simulated animal's when they are its
    keypoints, else none (a message in the log)."""
    from rigstream.inference.modeldir import load_model, resolve_model_path

    wanted = set(keypoints)
    model = model if model is not None else session_model_name(Path(session))
    if model:
        try:
            card = load_model(resolve_model_path(model, Path(session))).card
        except (InputError, OSError) as exc:
            logger.info("pose model %s not loaded for its skeleton: %s", model, exc)
        else:
            if set(card.keypoints) == wanted:
                return [(a, b) for a, b in card.skeleton]
    from rigstream.acquisition.sim_world import KEYPOINTS, SKELETON

    if set(KEYPOINTS) == wanted:
        return list(SKELETON)
    logger.info("%s: no skeleton known for keypoints %s; written without edges", session, list(keypoints))
    return []


__all__ = [
    "NEURAL_CLOCK",
    "PI_CLOCK",
    "POSE2D_FILE",
    "NwbExportError",
    "Pose2DSeries",
    "Pose3DSeries",
    "Session",
    "TimeBase",
    "column_numbers",
    "read_pose2d_csv",
    "read_pose3d_csv",
    "read_session",
    "session_skeleton",
    "time_base",
    "wall_time",
]
