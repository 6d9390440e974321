"""3D points in the CSV layout of anipose's ``pose-3d`` output (:func:`write_points3d_csv`,
:func:`read_points3d_csv`): per keypoint, in order, ``<kp>_x, <kp>_y, <kp>_z, <kp>_error, <kp>_ncams,
<kp>_score``; then ``M_00 .. M_22`` (the rotation applied to the points, row-major),
``center_0 .. center_2`` and ``fnum`` (the frame number). Missing values are empty cells. A bad
file raises :class:`~rigstream.inference.keypoint_files.KeypointFileError` (an
:class:`~rigstream.config.InputError`) whose message names the file and what was wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rigstream.inference.keypoint_files import KeypointFileError, import_pandas, preview_items

logger = logging.getLogger(__name__)

_POINT_SUFFIXES = ("x", "y", "z", "error", "ncams", "score")
_ROTATION_COLUMNS = tuple(f"M_{i}{j}" for i in range(3) for j in range(3))
_CENTER_COLUMNS = tuple(f"center_{i}" for i in range(3))
_FRAME_COLUMN = "fnum"


class Points3D(NamedTuple):
    """3D points as read by :func:`read_points3d_csv` (a tuple in the argument order of
    :func:`write_points3d_csv`, then the rotation and center columns).

    Attributes:
        keypoints: the K keypoint names, in column order.
        frames: (F,) int64 frame numbers (``fnum``).
        xyz: (F, K, 3) float64, in the units of the calibration (anipose: the board's square
            size unit, usually mm); NaN where missing.
        error: (F, K) float64 mean reprojection error in pixels; NaN where missing.
        ncams: (F, K) int64 number of cameras used (0 where the file has an empty cell).
        score: (F, K) float64 2D score (anipose: the minimum over the cameras); NaN where missing.
        extra: other per-frame columns, name -> (F,) float64.
        rotation: (3, 3) float64, ``M_ij`` of the first row (identity when the file has no rows).
        center: (3,) float64, ``center_i`` of the first row (zeros when the file has no rows).
    """

    keypoints: list[str]
    frames: np.ndarray
    xyz: np.ndarray
    error: np.ndarray
    ncams: np.ndarray
    score: np.ndarray
    extra: dict[str, np.ndarray]
    rotation: np.ndarray
    center: np.ndarray


def points3d_columns(keypoints: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """The column names :func:`write_points3d_csv` writes, in order."""
    cols = [f"{kp}_{s}" for kp in keypoints for s in _POINT_SUFFIXES]
    return [*cols, *_ROTATION_COLUMNS, *_CENTER_COLUMNS, _FRAME_COLUMN, *extra]


def write_points3d_csv(path: str | Path, keypoints: Sequence[str], frames: np.ndarray, xyz: np.ndarray,
                       error: np.ndarray, ncams: np.ndarray, score: np.ndarray,
                       extra: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write 3D points as anipose's ``pose-3d`` CSV (see the module docstring for the columns).

    The rotation columns are the identity and the center zeros (the points are written as
    given). Missing values (NaN) are empty cells; ``ncams`` and ``fnum`` are integers.

    Args:
        path: the CSV file to write (parent folders are made).
        keypoints: K unique names.
        frames: (F,) integer frame numbers.
        xyz: (F, K, 3) float, in the calibration's units (usually mm).
        error: (F, K) float mean reprojection error in pixels.
        ncams: (F, K) integer number of cameras used.
        score: (F, K) float 2D score.
        extra: more per-frame columns, name -> (F,) numbers, written after ``fnum``. Names may not
            end in ``_x``/``_y``/``_z``/``_error``/``_ncams``/``_score`` (they would read back as a
            keypoint) nor repeat another column.

    Returns:
        The path written.

    Raises:
        ValueError: arrays of the wrong shape or type, repeated names.
    """
    import pandas as pd

    path = Path(path)
    keypoints = [str(k) for k in keypoints]
    extra = dict(extra or {})
    frames = np.asarray(frames)
    n_f, n_k = len(frames), len(keypoints)
    if frames.ndim != 1 or not (np.issubdtype(frames.dtype, np.integer) or n_f == 0):
        raise ValueError(f"{path}: frames must be a 1-D integer array, got {frames.dtype} {frames.shape}")
    if len(set(keypoints)) != n_k:
        raise ValueError(f"{path}: keypoint names repeat: {keypoints}")
    xyz = np.asarray(xyz, dtype=np.float64)
    error = np.asarray(error, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    ncams = np.asarray(ncams)
    for name, arr, shape in (("xyz", xyz, (n_f, n_k, 3)), ("error", error, (n_f, n_k)),
                             ("ncams", ncams, (n_f, n_k)), ("score", score, (n_f, n_k))):
        if arr.shape != shape:
            raise ValueError(f"{path}: {name} must have shape {shape} (frames, keypoints"
                             f"{', 3' if name == 'xyz' else ''}), got {arr.shape}")
    if not (np.issubdtype(ncams.dtype, np.integer) or ncams.size == 0):
        raise ValueError(f"{path}: ncams must be integers, got {ncams.dtype}")
    fixed = points3d_columns(keypoints)
    for name, arr in extra.items():
        if name in fixed or name.endswith(tuple(f"_{s}" for s in _POINT_SUFFIXES)):
            raise ValueError(f"{path}: extra column {name!r} clashes with the anipose columns (names may "
                             f"not repeat one nor end in _{'/_'.join(_POINT_SUFFIXES)})")
        if np.shape(arr) != (n_f,):
            raise ValueError(f"{path}: extra column {name!r} must have shape ({n_f},), got {np.shape(arr)}")

    data: dict[str, np.ndarray] = {}
    for j, kp in enumerate(keypoints):
        for a, axis in enumerate("xyz"):
            data[f"{kp}_{axis}"] = xyz[:, j, a]
        data[f"{kp}_error"] = error[:, j]
        data[f"{kp}_ncams"] = ncams[:, j].astype(np.int64)
        data[f"{kp}_score"] = score[:, j]
    identity = np.eye(3)
    for i in range(3):
        for j in range(3):
            data[f"M_{i}{j}"] = np.full(n_f, identity[i, j])
    for i in range(3):
        data[f"center_{i}"] = np.zeros(n_f)
    data[_FRAME_COLUMN] = frames.astype(np.int64)
    for name, arr in extra.items():
        data[name] = np.asarray(arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(data, columns=list(data)).to_csv(path, index=False)
    logger.info("%s: wrote %d frames x %d keypoints", path, n_f, n_k)
    return path


def read_points3d_csv(path: str | Path) -> Points3D:
    """Read a 3D points CSV in anipose's layout (written by :func:`write_points3d_csv` or anipose).

    Keypoints are the names ``<kp>`` with a ``<kp>_x`` column, in column order; each needs all six
    columns. ``ncams`` empty cells (anipose writes those for fewer than 2 cameras) read as 0. Other
    columns (not rotation/center/fnum) are returned in ``extra``.

    Raises:
        KeypointFileError: the file is missing, not a CSV with those columns, or has non-numbers.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise KeypointFileError(f"{path}: 3D points file not found")
    pd = import_pandas(path, "3D point CSVs")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise KeypointFileError(f"{path}: empty file; expected an anipose 3D points CSV") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise KeypointFileError(f"{path}: cannot read as CSV: {exc}") from None
    columns = [str(c) for c in df.columns]
    if _FRAME_COLUMN not in columns:
        raise KeypointFileError(f"{path}: no {_FRAME_COLUMN!r} column; not an anipose 3D points CSV "
                                f"(columns: {preview_items(columns)})")
    keypoints = [c[:-2] for c in columns if c.endswith("_x")]
    if not keypoints:
        raise KeypointFileError(f"{path}: no '<keypoint>_x' columns; not an anipose 3D points CSV "
                                f"(columns: {preview_items(columns)})")
    missing = [f"{kp}_{s}" for kp in keypoints for s in _POINT_SUFFIXES if f"{kp}_{s}" not in columns]
    if missing:
        raise KeypointFileError(f"{path}: missing columns {preview_items(missing)}; each keypoint needs "
                                f"<kp>_{', <kp>_'.join(_POINT_SUFFIXES)}")
    used = {f"{kp}_{s}" for kp in keypoints for s in _POINT_SUFFIXES}
    used.update(_ROTATION_COLUMNS, _CENTER_COLUMNS, (_FRAME_COLUMN,))

    def numbers(name: str) -> np.ndarray:
        col = pd.to_numeric(df[name], errors="coerce")
        bad = col.isna() & df[name].notna()
        if bad.any():
            r = int(np.nonzero(bad.to_numpy())[0][0])
            raise KeypointFileError(f"{path}: line {r + 2}: {df[name].iloc[r]!r} in column {name!r} is not "
                                    f"a number")
        return col.to_numpy(dtype=np.float64, na_value=np.nan)

    n_f, n_k = len(df), len(keypoints)
    fnum = numbers(_FRAME_COLUMN)
    if np.isnan(fnum).any() or (fnum != np.round(fnum)).any():
        r = int(np.nonzero(np.isnan(fnum) | (fnum != np.round(fnum)))[0][0])
        raise KeypointFileError(f"{path}: line {r + 2}: {_FRAME_COLUMN} must be an integer frame number, "
                                f"got {df[_FRAME_COLUMN].iloc[r]!r}")
    xyz = np.empty((n_f, n_k, 3))
    error = np.empty((n_f, n_k))
    ncams_f = np.empty((n_f, n_k))
    score = np.empty((n_f, n_k))
    for j, kp in enumerate(keypoints):
        for a, axis in enumerate("xyz"):
            xyz[:, j, a] = numbers(f"{kp}_{axis}")
        error[:, j] = numbers(f"{kp}_error")
        ncams_f[:, j] = numbers(f"{kp}_ncams")
        score[:, j] = numbers(f"{kp}_score")
    ncams_f = np.nan_to_num(ncams_f, nan=0.0)
    if (ncams_f != np.round(ncams_f)).any() or (ncams_f < 0).any():
        raise KeypointFileError(f"{path}: _ncams columns must hold counts (non-negative integers)")

    rotation, center = np.eye(3), np.zeros(3)
    if n_f:
        if all(c in columns for c in _ROTATION_COLUMNS):
            rotation = np.array([numbers(c)[0] for c in _ROTATION_COLUMNS]).reshape(3, 3)
        if all(c in columns for c in _CENTER_COLUMNS):
            center = np.array([numbers(c)[0] for c in _CENTER_COLUMNS])
    extra = {c: numbers(c) for c in columns if c not in used}
    return Points3D(keypoints=keypoints, frames=fnum.astype(np.int64), xyz=xyz, error=error,
                    ncams=ncams_f.astype(np.int64), score=score, extra=extra, rotation=rotation,
                    center=center)


__all__ = [
    "Points3D",
    "points3d_columns",
    "read_points3d_csv",
    "write_points3d_csv",
]
