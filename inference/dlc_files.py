"""A session's live 2D pose as DeepLabCut prediction files, one pair per camera video.

DeepLabCut's tools (labeled videos, refinement, anipose, DLC2Kinematics, ...) take predictions
as ``<video stem><scorer>.h5`` beside the video, with ``.csv`` the same table as text: a pandas
DataFrame under the key ``df_with_missing``, one row per frame of the video (the index is the
frame number), float64 columns in three levels ``scorer`` / ``bodyparts`` / ``coords`` with
coords ``x``, ``y`` (image pixels) and ``likelihood``; the scorer begins with ``DLC_``, so the
file name is the video stem + ``DLC_`` + the rest. This is the layout
:func:`rigstream.inference.keypoint_files.read_keypoints_2d` reads.

A session's ``pose2d.csv`` has one row per posed frame set and camera, keyed by trigger index;
the live engine is latest-wins, so most sessions pose only some frame sets. ``frames.csv`` says
which frame of that camera's video each trigger index became (``video_frame``, -1 for a dropped
frame). :func:`export_session` maps the rows through it and writes every video frame: posed
frames with their values, the others as NaN rows, so the file lines up with the video frame for
frame. Pose rows whose frame is not in the video are skipped and counted.

Everything is read and checked before the first file is written, so a session that cannot be
exported leaves nothing behind; each file is written under a temporary name and renamed.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rigstream.config import InputError

logger = logging.getLogger(__name__)

DLC_KEY = "df_with_missing"
DLC_LEVELS = ("scorer", "bodyparts", "coords")
DLC_COORDS = ("x", "y", "likelihood")
POSE_FILE = "pose2d.csv"
FRAMES_FILE = "frames.csv"
_POSE_KEY_COLUMNS = ("trigger_index", "camera")
_FRAMES_COLUMNS = ("camera", "trigger_index", "video_frame")


class DlcExportError(InputError):
    """A session that cannot be exported; the message names the file and what is wrong."""


@dataclass(frozen=True)
class CameraExport:
    """What was (or would be) written for one camera."""

    camera: str
    h5: Path
    csv: Path
    video_frames: int
    """Rows of the files: the camera's video frames (frames.csv's largest video_frame + 1)."""
    posed: int
    """Video frames with a pose row; the other ``video_frames - posed`` rows are NaN."""
    skipped_dropped: int
    """Pose rows whose frame has no video frame (video_frame -1: dropped, or video off)."""
    skipped_unknown: int
    """Pose rows whose trigger index frames.csv does not have (a recorder that ended early)."""
    duplicates: int
    """Pose rows for a video frame already posed (a restarted engine); the last one is kept."""

    @property
    def nan_rows(self) -> int:
        return self.video_frames - self.posed


@dataclass
class ExportReport:
    """The result of :func:`export_session`."""

    session: Path
    out: Path
    scorer: str
    keypoints: tuple[str, ...]
    cameras: list[CameraExport] = field(default_factory=list)
    without_video: list[str] = field(default_factory=list)
    """Cameras in frames.csv with no video frame at all (no file is written for them)."""
    not_in_frames: dict[str, int] = field(default_factory=dict)
    """Pose rows of cameras frames.csv does not have, per camera (skipped)."""


# ---------------------------------------------------------------------------------------------
# The table


def require_pandas(what: str) -> Any:
    """pandas, after checking PyTables is there too (pandas needs it for HDF); a
    DlcExportError saying what to install otherwise, so nothing is written without them."""
    try:
        import pandas as pd
    except ImportError:
        raise DlcExportError(f"{what} needs pandas and PyTables (pip install pandas tables)") from None
    try:
        import tables  # noqa: F401
    except ImportError:
        raise DlcExportError(f"{what} needs PyTables for the .h5 files (pip install tables)") from None
    return pd


def dlc_scorer(model: str | None) -> str:
    """DeepLabCut's scorer for a rigstream model: ``DLC_rigstream_<model>``.

    DeepLabCut names a prediction file ``<video stem><scorer>.h5`` with a scorer that begins with
    ``DLC_``, and its tools find the file by that pattern; the model name is reduced to its last
    path part (rig files hold model folders) and to characters safe in a file name.
    """
    name = (model or "").strip().rstrip("/\\")
    name = re.split(r"[/\\]", name)[-1] if name else ""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return f"DLC_rigstream_{name}" if name else "DLC_rigstream"


def dlc_prediction_frame(scorer: str, keypoints: Sequence[str], values: np.ndarray) -> Any:
    """DeepLabCut's prediction table: ``values`` (n_frames, K, 3) of x, y, likelihood (NaN
    where not posed) -> a float64 DataFrame indexed 0..n_frames-1 with columns
    (scorer, bodyparts, coords)."""
    pd = require_pandas("a DeepLabCut prediction table")
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 3 or values.shape[1:] != (len(keypoints), len(DLC_COORDS)):
        raise ValueError(f"values must be (n_frames, {len(keypoints)}, 3), got {values.shape}")
    columns = pd.MultiIndex.from_product([[scorer], list(keypoints), list(DLC_COORDS)],
                                         names=list(DLC_LEVELS))
    return pd.DataFrame(values.reshape(len(values), -1), columns=columns, index=pd.RangeIndex(len(values)))


def write_dlc_predictions(folder: Path, stem: str, scorer: str, keypoints: Sequence[str],
                          values: np.ndarray) -> tuple[Path, Path]:
    """Write ``<stem><scorer>.h5`` and ``.csv`` into ``folder``; returns their paths.

    The .h5 is a PyTables table (``format="table"``), as DeepLabCut writes it, so its readers
    that select rows work; each file is renamed into place only once complete.
    """
    df = dlc_prediction_frame(scorer, keypoints, values)
    h5 = folder / f"{stem}{scorer}.h5"
    csv_path = h5.with_suffix(".csv")
    for path, write in ((h5, lambda p: df.to_hdf(p, key=DLC_KEY, format="table", mode="w")),
                        (csv_path, lambda p: df.to_csv(p))):
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return h5, csv_path


# ---------------------------------------------------------------------------------------------
# A session


def session_model_name(session: Path) -> str | None:
    """The pose model's name: summary.json's pose section (what the engine ran), else rig.yaml's
    ``pose.model``; None when neither says."""
    try:
        summary = json.loads((session / "summary.json").read_text())
        model = (summary.get("pose") or {}).get("model")
        if isinstance(model, str) and model.strip():
            return model
    except (OSError, ValueError, AttributeError):
        pass
    try:
        import yaml

        rig = yaml.safe_load((session / "rig.yaml").read_text())
        model = ((rig or {}).get("pose") or {}).get("model")
        if isinstance(model, str) and model.strip():
            return model
    except Exception:  # a missing or unreadable rig file only costs the name
        logger.debug("%s: no pose model name in rig.yaml", session, exc_info=True)
    return None


def _read_table(pd: Any, path: Path, required: Sequence[str]) -> Any:
    if not path.is_file():
        raise DlcExportError(f"{path}: not found (is this a session folder with live pose?)")
    try:
        df = pd.read_csv(path, dtype={"camera": str})
    except pd.errors.EmptyDataError:
        raise DlcExportError(f"{path}: empty file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DlcExportError(f"{path}: cannot read: {exc}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DlcExportError(f"{path}: missing columns {missing}; found {list(df.columns)[:8]}")
    if len(df) and df.iloc[-1][list(required)].isna().any():
        # A session killed while a row was being written leaves it cut short: not worth failing for.
        logger.warning("%s: the last line is incomplete; ignored", path)
        df = df.iloc[:-1].copy()
    for column in required:
        if column == "camera":
            continue
        numbers = pd.to_numeric(df[column], errors="coerce")
        bad = np.nonzero(numbers.isna().to_numpy() | (numbers % 1 != 0).to_numpy())[0]
        if len(bad):
            raise DlcExportError(f"{path}: line {int(bad[0]) + 2}: {column} "
                                 f"{df[column].iloc[int(bad[0])]!r} is not an integer")
        df[column] = numbers.astype(np.int64)
    if df["camera"].isna().any():
        raise DlcExportError(f"{path}: line {int(np.nonzero(df['camera'].isna().to_numpy())[0][0]) + 2}: "
                             f"no camera")
    return df


def pose2d_keypoints(columns: Sequence[str]) -> list[str]:
    """The keypoints of a pose2d.csv header: every ``<kp>_x`` with its ``_y`` and ``_likelihood``,
    in order (other columns, such as ``t_neural_<units>`` added by alignment, are not keypoints)."""
    names = set(columns)
    return [c[:-2] for c in columns
            if c.endswith("_x") and f"{c[:-2]}_y" in names and f"{c[:-2]}_likelihood" in names]


def export_session(session: str | Path, out: str | Path | None = None,
                   scorer: str | None = None) -> ExportReport:
    """Write DeepLabCut prediction files (``.h5`` and ``.csv``) for every camera's video of a
    session folder, into ``out`` (default: the session's ``video/`` folder, next to the videos).

    Args:
        session: a session folder with ``pose2d.csv`` and ``frames.csv``.
        out: the folder to write to (made if missing).
        scorer: DeepLabCut's scorer (default: :func:`dlc_scorer` of the session's pose model).

    Raises:
        DlcExportError: pandas/PyTables missing, the tables missing or malformed, or no camera
            with a video; raised before any file is written.
    """
    session = Path(session).expanduser()
    if not session.is_dir():
        raise DlcExportError(f"{session}: not a folder")
    for name in (POSE_FILE, FRAMES_FILE):  # before importing pandas: the common mistake, said fast
        if not (session / name).is_file():
            raise DlcExportError(f"{session / name}: not found (a session folder recorded with live "
                                 f"pose has {POSE_FILE} and {FRAMES_FILE})")
    pd = require_pandas("rigstream export")
    pose = _read_table(pd, session / POSE_FILE, _POSE_KEY_COLUMNS)
    frames = _read_table(pd, session / FRAMES_FILE, _FRAMES_COLUMNS)
    keypoints = pose2d_keypoints([str(c) for c in pose.columns])
    if not keypoints:
        raise DlcExportError(f"{session / POSE_FILE}: no keypoint columns (<kp>_x, <kp>_y, <kp>_likelihood)")
    value_columns = [f"{k}_{c}" for k in keypoints for c in DLC_COORDS]
    values = pose[value_columns].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().to_numpy() & pose[value_columns].notna().to_numpy()
    if bad.any():
        r, c = (int(v[0]) for v in np.nonzero(bad))
        raise DlcExportError(f"{session / POSE_FILE}: line {r + 2}: {value_columns[c]} "
                             f"{pose[value_columns[c]].iloc[r]!r} is not a number")
    all_values = values.to_numpy(dtype=np.float64, na_value=np.nan).reshape(len(pose), len(keypoints), 3)

    scorer = scorer or dlc_scorer(session_model_name(session))
    folder = Path(out).expanduser() if out is not None else session / "video"
    report = ExportReport(session=session, out=folder, scorer=scorer, keypoints=tuple(keypoints))
    frames = frames.drop_duplicates(subset=["camera", "trigger_index"], keep="last")
    pose_cameras = pose["camera"].to_numpy()
    planned: list[tuple[CameraExport, np.ndarray]] = []
    for camera, rows in frames.groupby("camera", sort=True):
        camera = str(camera)
        n_video = int(rows["video_frame"].max()) + 1
        if n_video <= 0:
            report.without_video.append(camera)
            continue
        mine = np.nonzero(pose_cameras == camera)[0]
        lookup = pd.Series(rows["video_frame"].to_numpy(), index=rows["trigger_index"].to_numpy())
        video_frame = lookup.reindex(pose["trigger_index"].to_numpy()[mine]).to_numpy()
        unknown = np.isnan(video_frame) if video_frame.dtype.kind == "f" else np.zeros(len(mine), bool)
        video_frame = np.where(unknown, -1, video_frame).astype(np.int64)
        dropped = (video_frame < 0) & ~unknown
        keep = video_frame >= 0
        # A video frame posed twice (a restarted engine) keeps its last row in file order.
        last_first, first_at = np.unique(video_frame[keep][::-1], return_index=True)
        source = mine[keep][::-1][first_at]
        table = np.full((n_video, len(keypoints), 3), np.nan)
        table[last_first] = all_values[source]
        posed = len(last_first)
        planned.append((CameraExport(camera=camera, h5=folder / f"{camera}{scorer}.h5",
                                     csv=folder / f"{camera}{scorer}.csv", video_frames=n_video,
                                     posed=posed, skipped_dropped=int(dropped.sum()),
                                     skipped_unknown=int(unknown.sum()),
                                     duplicates=int(keep.sum()) - posed), table))
    known = {c.camera for c, _ in planned} | set(report.without_video)
    for camera in dict.fromkeys(str(c) for c in pose_cameras):
        if camera not in known:
            report.not_in_frames[camera] = int((pose_cameras == camera).sum())
    if not planned:
        raise DlcExportError(f"{session / FRAMES_FILE}: no camera has a video frame (recorded with "
                             f"recording.video: off?); nothing to line predictions up with")

    folder.mkdir(parents=True, exist_ok=True)
    for cam, table in planned:
        write_dlc_predictions(folder, cam.camera, scorer, keypoints, table)
        report.cameras.append(cam)
        logger.debug("%s: %d video frames, %d posed -> %s", cam.camera, cam.video_frames, cam.posed, cam.h5)
    return report
