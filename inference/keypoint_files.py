"""Reading per-camera 2D keypoint predictions (DeepLabCut, SLEAP) and putting several cameras on one
frame axis. 3D points in anipose's CSV layout are read and written by
:mod:`rigstream.inference.anipose_csv`.

2D predictions, one camera per file (:func:`read_keypoints_2d`):

- DeepLabCut prediction ``.h5``: a pandas HDF table (key ``df_with_missing``) with one row per
  video frame (the index is the frame number) and column levels (scorer, bodyparts, coords), or
  (scorer, individuals, bodyparts, coords) for multi-animal projects; coords ``x``, ``y`` (image
  pixels) and ``likelihood`` (0..1). Needs pandas and PyTables (``tables``).
- DeepLabCut prediction ``.csv``: the same table as text; the header rows are named in the first
  column (``scorer``, [``individuals``,] ``bodyparts``, ``coords``), then one row per frame whose
  first cell is the frame number. Needs pandas.
- SLEAP analysis ``.h5`` (``sleap-convert --format analysis``): plain HDF5 with ``tracks``,
  ``point_scores``, ``node_names``, ``track_names``, ``track_occupancy``, ``instance_scores``.
  SLEAP writes them transposed for MATLAB by default (``tracks`` (n_tracks, 2, n_nodes, n_frames),
  ``point_scores`` (n_tracks, n_nodes, n_frames)); files written untransposed have ``tracks``
  (n_frames, n_nodes, 2, n_tracks) and ``point_scores`` (n_frames, n_nodes, n_tracks). The
  layout is found by matching axis sizes against ``node_names`` (and ``track_names``). Row ``i``
  is frame ``i`` of the video. Needs h5py.

Several cameras are put on one frame axis by :func:`align_cameras`.

Bad files raise :class:`KeypointFileError` (an :class:`~rigstream.config.InputError`) whose
message names the file and what was wrong. A file where every keypoint is missing is not an
error here; the caller decides.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rigstream.config import InputError

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".h5", ".csv")
DLC_KEY = "/df_with_missing"
_DLC_COORDS = ("x", "y", "likelihood")
_DLC_LEVELS_SINGLE = ("scorer", "bodyparts", "coords")
_DLC_LEVELS_MULTI = ("scorer", "individuals", "bodyparts", "coords")
_SLEAP_REQUIRED = ("tracks", "node_names")


class KeypointFileError(InputError):
    """A keypoint file that cannot be read or used; the message names the file and what is wrong."""


@dataclass(frozen=True, eq=False)
class Keypoints2D:
    """One camera's 2D keypoint predictions for one animal.

    Attributes:
        keypoints: the K keypoint (bodypart / node) names, in the file's order.
        xy: (n_frames, K, 2) float64, image pixels (x to the right, y down, as the tool wrote
            them); NaN in both x and y where the keypoint is missing.
        score: (n_frames, K) float64, DeepLabCut likelihood or SLEAP point score; NaN where the
            keypoint is missing.
        frames: (n_frames,) int64 video frame numbers of the rows, increasing (DeepLabCut: the
            file's index; SLEAP: 0 .. n_frames-1).
        source: where the data came from (the file path, plus the track if one was chosen).
    """

    keypoints: tuple[str, ...]
    xy: np.ndarray
    score: np.ndarray
    frames: np.ndarray
    source: str

    def __post_init__(self) -> None:
        n, k = len(self.frames), len(self.keypoints)
        if self.xy.shape != (n, k, 2) or self.xy.dtype != np.float64:
            raise ValueError(f"{self.source}: xy must be float64 of shape ({n}, {k}, 2), "
                             f"got {self.xy.dtype} {self.xy.shape}")
        if self.score.shape != (n, k) or self.score.dtype != np.float64:
            raise ValueError(f"{self.source}: score must be float64 of shape ({n}, {k}), "
                             f"got {self.score.dtype} {self.score.shape}")
        if self.frames.ndim != 1 or self.frames.dtype != np.int64:
            raise ValueError(f"{self.source}: frames must be a 1-D int64 array, "
                             f"got {self.frames.dtype} {self.frames.shape}")
        if n > 1 and not (np.diff(self.frames) > 0).all():
            raise ValueError(f"{self.source}: frames must be strictly increasing")
        if len(set(self.keypoints)) != k:
            raise ValueError(f"{self.source}: keypoint names repeat: {list(self.keypoints)}")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def missing_fraction(self) -> float:
        """Fraction of (frame, keypoint) entries that are missing (0 for an empty file)."""
        if self.xy.size == 0:
            return 0.0
        return float(np.isnan(self.xy[..., 0]).mean())


# ---------------------------------------------------------------------------------------------
# 2D predictions


def read_keypoints_2d(path: str | Path, *, track: str | int | None = None) -> Keypoints2D:
    """Read one camera's 2D keypoint predictions (see the module docstring for the formats).

    Args:
        path: a DeepLabCut prediction ``.h5``/``.csv`` or a SLEAP analysis ``.h5``.
        track: which animal, for files with several: a DeepLabCut individual or SLEAP track,
            by name or by position (0-based). None reads the only one; a file with several then
            raises an error listing them.

    Raises:
        KeypointFileError: the file is missing, of an unsupported kind, malformed, or ``track``
            does not name one of its animals.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise KeypointFileError(f"{path}: unsupported keypoint file type {path.suffix!r}; expected one "
                                f"of {', '.join(SUPPORTED_SUFFIXES)} (DeepLabCut .h5/.csv predictions "
                                f"or a SLEAP analysis .h5)")
    if not path.is_file():
        raise KeypointFileError(f"{path}: keypoint file not found")
    if suffix == ".csv":
        result = _read_dlc_csv(path, track)
    else:
        kind = _sniff_h5(path)
        result = _read_sleap(path, track) if kind == "sleap" else _read_dlc_h5(path, track)
    logger.info("%s: %d frames, %d keypoints, %.0f%% missing", result.source, len(result),
                len(result.keypoints), 100 * result.missing_fraction)
    return result


def _sniff_h5(path: Path) -> str:
    """The kind of an .h5 file ("sleap" or "dlc") from its top-level names; else KeypointFileError."""
    try:
        import h5py
    except ImportError:
        return "dlc"  # without h5py only pandas tables can be read; _read_dlc_h5 says so if not one
    try:
        with h5py.File(path, "r") as f:
            names = sorted(f.keys())
            if all(name in f for name in _SLEAP_REQUIRED):
                return "sleap"
            pandas_tables = sorted(name for name in names
                                   if isinstance(f[name], h5py.Group) and "pandas_type" in f[name].attrs)
    except OSError as exc:
        raise KeypointFileError(f"{path}: cannot read as HDF5: {exc}") from None
    if pandas_tables:
        return "dlc"
    raise KeypointFileError(f"{path}: neither a DeepLabCut prediction file (a pandas table such as "
                            f"'df_with_missing') nor a SLEAP analysis file (datasets "
                            f"{', '.join(_SLEAP_REQUIRED)}); top-level names: {preview_items(names)}")


# --- DeepLabCut ------------------------------------------------------------------------------


def import_pandas(path: Path, what: str) -> Any:
    """The pandas module; KeypointFileError naming ``path`` and ``what`` needs it when missing."""
    try:
        import pandas as pd
    except ImportError:
        raise KeypointFileError(f"{path}: reading {what} needs pandas (pip install pandas tables)") from None
    return pd


def read_dlc_h5_table(path: Path, error: type[InputError], what: str, alternative: str,
                      hint: str = "") -> tuple[Any, str]:
    """The pandas DataFrame in a DeepLabCut ``.h5`` (labels or predictions) and its key: the
    table ``df_with_missing``, or the file's only table. Raises ``error`` naming ``path``; ``what`` and
    ``alternative`` word the message when pandas/PyTables are missing, ``hint`` is added to
    the messages about the file itself."""
    try:
        import pandas as pd
    except ImportError:
        raise error(f"{path}: reading DeepLabCut .h5 {what} needs pandas and PyTables "
                    f"(pip install pandas tables), or {alternative}") from None
    try:
        import tables  # noqa: F401  (pandas needs it for HDF; a clear message if it is missing)
    except ImportError:
        raise error(f"{path}: reading DeepLabCut .h5 {what} needs PyTables (pip install tables), "
                    f"or {alternative}") from None
    try:
        with pd.HDFStore(path, mode="r") as store:
            keys = list(store.keys())
            if DLC_KEY in keys:
                key = DLC_KEY
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise error(f"{path}: expected the DeepLabCut table 'df_with_missing' (or a single "
                            f"table), found keys {keys or 'none'}{hint}")
            df = store[key]
    except error:
        raise
    except Exception as exc:  # PyTables / pandas raise many types for a corrupt or foreign file
        raise error(f"{path}: cannot read as a pandas HDF file (DeepLabCut {what}): {exc}{hint}") from None
    if not isinstance(df, pd.DataFrame):
        raise error(f"{path}: expected a DataFrame in {key!r}, found {type(df).__name__}")
    return df, key


def _read_dlc_h5(path: Path, track: str | int | None) -> Keypoints2D:
    df, key = read_dlc_h5_table(path, KeypointFileError, "predictions",
                                "read the .csv DeepLabCut wrote beside it", _h5py_hint())
    names = tuple("" if n is None else str(n) for n in df.columns.names)
    if df.columns.nlevels not in (3, 4):
        raise KeypointFileError(f"{path}: table {key!r} is not DeepLabCut predictions: expected column "
                                f"levels {_DLC_LEVELS_SINGLE} or {_DLC_LEVELS_MULTI}, found "
                                f"{df.columns.nlevels} level(s) {list(names)}")
    columns = [tuple(str(v) for v in col) for col in df.columns]
    try:
        values = df.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise KeypointFileError(f"{path}: prediction values are not all numbers: {exc}") from None
    frames = _frame_index(path, list(df.index))
    return _dlc_table(path, names, columns, values, frames, track)


def _h5py_hint() -> str:
    """A note for DeepLabCut read errors when h5py (needed to recognise SLEAP files) is missing."""
    try:
        import h5py  # noqa: F401
    except ImportError:
        return "; if it is a SLEAP analysis file, install h5py (pip install h5py) to read it"
    return ""


def _read_dlc_csv(path: Path, track: str | int | None) -> Keypoints2D:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            head = [row for _, row in zip(range(6), csv.reader(f), strict=False)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise KeypointFileError(f"{path}: cannot read: {exc}") from None
    first = [row[0].strip() if row else "" for row in head]
    if first[:4] == list(_DLC_LEVELS_MULTI):
        levels = _DLC_LEVELS_MULTI
    elif first[:3] == list(_DLC_LEVELS_SINGLE):
        levels = _DLC_LEVELS_SINGLE
    else:
        raise KeypointFileError(f"{path}: expected the DeepLabCut header rows "
                                f"{'/'.join(_DLC_LEVELS_SINGLE)} (or {'/'.join(_DLC_LEVELS_MULTI)}) "
                                f"named in the first column, found {first[:4]}")
    header = head[:len(levels)]
    width = len(header[0])
    if any(len(row) != width for row in header):
        raise KeypointFileError(f"{path}: header rows have different lengths {[len(r) for r in header]}")
    if width < 2:
        raise KeypointFileError(f"{path}: header rows name no columns after the frame index")
    n_skip = len(levels)
    # pandas writes one more header row when the index has a name ("frame,,,...").
    if len(head) > n_skip and _is_index_name_row(head[n_skip]):
        n_skip += 1
    columns = [tuple(row[c].strip() for row in header) for c in range(1, width)]

    pd = import_pandas(path, "DeepLabCut .csv predictions")
    try:
        body = pd.read_csv(path, header=None, skiprows=n_skip, skip_blank_lines=True, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        body = pd.DataFrame(np.empty((0, width)))
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ParserError is a ValueError
        raise KeypointFileError(f"{path}: cannot read the rows after the header: {exc}") from None
    if body.shape[1] != width:
        raise KeypointFileError(f"{path}: rows have {body.shape[1]} cells, the header {width}")
    index = body.iloc[:, 0]
    if index.dtype.kind in "iu":
        frames = index.to_numpy(dtype=np.int64)
    else:
        frames = _frame_index(path, [str(v).strip() for v in index], first_line=n_skip + 1)
    values = np.full((len(body), width - 1), np.nan)
    for c in range(1, width):
        cells = body.iloc[:, c]
        if cells.dtype.kind not in "iuf":  # pandas found a non-number (empty cells and "nan" are NaN)
            numbers = pd.to_numeric(cells, errors="coerce")
            bad = np.nonzero((numbers.isna() & cells.notna()).to_numpy())[0]
            if len(bad):
                r = int(bad[0])
                raise KeypointFileError(
                    f"{path}: line {n_skip + 1 + r} (frame {frames[r]}): {str(cells.iloc[r]).strip()!r} in "
                    f"column {'/'.join(columns[c - 1][1:])} is not a number")
            cells = numbers
        values[:, c - 1] = cells.to_numpy(dtype=np.float64, na_value=np.nan)
    return _dlc_table(path, levels, columns, values, frames, track)


def _is_index_name_row(row: list[str]) -> bool:
    if not row or not row[0].strip() or any(cell.strip() for cell in row[1:]):
        return False
    try:
        int(row[0])
    except ValueError:
        return True
    return False


def _frame_index(path: Path, index: list[Any], first_line: int | None = None) -> np.ndarray:
    """(R,) int64 frame numbers from a DeepLabCut index; errors name the first bad row."""
    frames = np.empty(len(index), dtype=np.int64)
    for r, key in enumerate(index):
        try:
            value = float(key) if not isinstance(key, (int, np.integer)) else int(key)
            if value != int(value):
                raise ValueError
            frames[r] = int(value)
        except (TypeError, ValueError, OverflowError):
            where = f"line {first_line + r}" if first_line is not None else f"row {r}"
            raise KeypointFileError(f"{path}: expected integer frame numbers in the index (first column), "
                                    f"{where} has {key!r}; image-folder predictions are not "
                                    f"supported") from None
    return frames


def _dlc_table(path: Path, level_names: Sequence[str], columns: list[tuple[str, ...]], values: np.ndarray,
               frames: np.ndarray, track: str | int | None) -> Keypoints2D:
    """Keypoints2D from DeepLabCut columns (scorer, [individual,] bodypart, coord) and (R, C) values."""
    multi = len(columns[0]) == 4 if columns else len(level_names) == 4
    scorers = list(dict.fromkeys(col[0] for col in columns))
    if len(scorers) > 1:
        raise KeypointFileError(f"{path}: expected one scorer, found {scorers}")
    source = str(path)
    if multi:
        individuals = list(dict.fromkeys(col[1] for col in columns))
        chosen = _choose_track(path, individuals, track, "individual")
        keep = [c for c, col in enumerate(columns) if col[1] == chosen]
        columns = [(col[0], col[2], col[3]) for col in (columns[c] for c in keep)]
        values = values[:, keep]
        source = f"{path} [individual {chosen}]"
    elif track not in (None, 0):
        raise KeypointFileError(f"{path}: track={track!r} given, but this is a single-animal DeepLabCut "
                                f"file (no 'individuals' level); leave track unset")

    bodyparts = list(dict.fromkeys(col[1] for col in columns))
    where: dict[tuple[str, str], int] = {}
    for c, (_, bp, coord) in enumerate(columns):
        if (bp, coord) in where:
            raise KeypointFileError(f"{path}: column {bp}/{coord} appears more than once")
        where[(bp, coord)] = c
    missing = [f"{bp}/{coord}" for bp in bodyparts for coord in _DLC_COORDS if (bp, coord) not in where]
    if missing:
        hint = ""
        if all(m.endswith("/likelihood") for m in missing):
            hint = (" (x/y without likelihood is a labeled-data file; read those with "
                    "rigstream.inference.dlc.load_dlc_project)")
        raise KeypointFileError(f"{path}: missing coordinate columns {preview_items(missing)}; each bodypart "
                                f"needs {', '.join(_DLC_COORDS)}{hint}")
    unknown = sorted({coord for _, _, coord in columns} - set(_DLC_COORDS))
    if unknown:
        logger.debug("%s: ignoring coordinate columns %s", path, unknown)

    n, k = len(values), len(bodyparts)
    xy = np.empty((n, k, 2))
    score = np.empty((n, k))
    for j, bp in enumerate(bodyparts):
        xy[:, j, 0] = values[:, where[(bp, "x")]]
        xy[:, j, 1] = values[:, where[(bp, "y")]]
        score[:, j] = values[:, where[(bp, "likelihood")]]
    return _finish(path, source, bodyparts, xy, score, frames)


def _choose_track(path: Path, names: list[str], track: str | int | None, what: str) -> str:
    """The name of the chosen track/individual; errors list the names."""
    if track is None:
        if len(names) == 1:
            return names[0]
        raise KeypointFileError(f"{path}: {len(names)} {what}s {names}; choose one with track=<name or "
                                f"index>")
    if isinstance(track, (int, np.integer)) and not isinstance(track, bool):
        if not 0 <= track < len(names):
            raise KeypointFileError(f"{path}: track index {track} out of range for {len(names)} "
                                    f"{what}(s) {names}")
        return names[int(track)]
    if isinstance(track, str) and track in names:
        return track
    raise KeypointFileError(f"{path}: no {what} {track!r}; the file has {names}")


def _finish(path: Path, source: str, keypoints: Sequence[str], xy: np.ndarray, score: np.ndarray,
            frames: np.ndarray) -> Keypoints2D:
    """Common checks and NaN conventions: x and y missing together, score NaN where xy is."""
    repeated = sorted({kp for kp in keypoints if list(keypoints).count(kp) > 1})
    if repeated:
        raise KeypointFileError(f"{path}: keypoint names {repeated} appear more than once")
    xy = np.ascontiguousarray(xy, dtype=np.float64)
    score = np.ascontiguousarray(score, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(xy).all(axis=2)
    half = bad & np.isfinite(xy).any(axis=2)
    if half.any():
        logger.warning("%s: %d keypoints have only one of x/y; treated as missing", source, int(half.sum()))
    xy[bad] = np.nan
    score[bad] = np.nan
    frames = np.asarray(frames, dtype=np.int64)
    if len(frames) > 1:
        order = np.argsort(frames, kind="stable")
        sorted_frames = frames[order]
        dupes = np.unique(sorted_frames[1:][np.diff(sorted_frames) == 0])
        if len(dupes):
            raise KeypointFileError(
                f"{path}: frame numbers repeat in the index: {preview_items(dupes.tolist())}")
        if not (order == np.arange(len(frames))).all():
            logger.info("%s: rows were not in frame order; sorted", source)
            frames, xy, score = sorted_frames, xy[order], score[order]
    return Keypoints2D(keypoints=tuple(keypoints), xy=xy, score=score, frames=frames, source=source)


# --- SLEAP -----------------------------------------------------------------------------------


def _read_sleap(path: Path, track: str | int | None) -> Keypoints2D:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            datasets = {name: f[name] for name in f if isinstance(f[name], h5py.Dataset)}
            node_names = _names(path, datasets, "node_names")
            track_names = _names(path, datasets, "track_names") if "track_names" in datasets else []
            tracks = np.asarray(datasets["tracks"][()], dtype=np.float64)
            scores = (np.asarray(datasets["point_scores"][()], dtype=np.float64)
                      if "point_scores" in datasets else None)
    except KeypointFileError:
        raise
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise KeypointFileError(f"{path}: cannot read as a SLEAP analysis file: {exc}") from None

    n_nodes = len(node_names)
    if tracks.ndim != 4:
        raise KeypointFileError(f"{path}: 'tracks' must have 4 axes (n_tracks, 2, n_nodes, n_frames) or "
                                f"(n_frames, n_nodes, 2, n_tracks), got shape {tracks.shape}")
    file_shape = tracks.shape
    transposed = _sleap_layout(path, file_shape, n_nodes, len(track_names))
    if transposed:
        tracks = tracks.transpose(3, 2, 1, 0)  # -> (n_frames, n_nodes, 2, n_tracks)
    n_frames, _, _, n_tracks = tracks.shape
    if scores is not None:
        expected = (n_tracks, n_nodes, n_frames) if transposed else (n_frames, n_nodes, n_tracks)
        if scores.shape != expected:
            raise KeypointFileError(f"{path}: 'point_scores' has shape {scores.shape}, expected {expected} "
                                    f"to match 'tracks' {file_shape}")
        if transposed:
            scores = scores.transpose(2, 1, 0)  # -> (n_frames, n_nodes, n_tracks)
    else:
        logger.info("%s: no 'point_scores'; scores are NaN", path)

    if track_names and len(track_names) != n_tracks:
        raise KeypointFileError(f"{path}: {len(track_names)} track_names {track_names} for {n_tracks} "
                                f"tracks in 'tracks'")
    names = track_names or [f"track_{i}" for i in range(n_tracks)]
    if n_tracks == 0:
        if track is not None:
            raise KeypointFileError(f"{path}: track={track!r} given, but the file has no tracks")
        logger.warning("%s: no tracks (nothing was predicted); every keypoint is missing", path)
        xy = np.full((n_frames, n_nodes, 2), np.nan)
        score = np.full((n_frames, n_nodes), np.nan)
        source = str(path)
    else:
        chosen = _choose_track(path, names, track, "track")
        t = names.index(chosen)
        xy = tracks[:, :, :, t]
        score = scores[:, :, t] if scores is not None else np.full((n_frames, n_nodes), np.nan)
        source = str(path) if n_tracks == 1 and track is None else f"{path} [track {chosen}]"
    return _finish(path, source, node_names, xy, score, np.arange(n_frames, dtype=np.int64))


def _names(path: Path, datasets: Mapping[str, Any], key: str) -> list[str]:
    if key not in datasets:
        raise KeypointFileError(f"{path}: SLEAP analysis file without {key!r}")
    raw = np.asarray(datasets[key][()]).ravel()
    try:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in raw]
    except UnicodeDecodeError as exc:
        raise KeypointFileError(f"{path}: {key!r} are not UTF-8 names: {exc}") from None


def _sleap_layout(path: Path, shape: tuple[int, ...], n_nodes: int, n_track_names: int) -> bool:
    """True for SLEAP's default MATLAB-order layout (n_tracks, 2, n_nodes, n_frames), False for
    (n_frames, n_nodes, 2, n_tracks); decided by the node count and, when that is 2 (both fit), the
    track count."""
    fits_t = shape[1] == 2 and shape[2] == n_nodes
    fits_u = shape[1] == n_nodes and shape[2] == 2
    if fits_t and fits_u and n_track_names:
        fits_t, fits_u = shape[0] == n_track_names, shape[3] == n_track_names
    if fits_t and fits_u:
        logger.warning("%s: 'tracks' %s fits both SLEAP layouts; assuming SLEAP's default "
                       "(n_tracks, 2, n_nodes, n_frames)", path, shape)
        return True
    if fits_t or fits_u:
        return fits_t
    raise KeypointFileError(f"{path}: 'tracks' has shape {shape}, which fits neither SLEAP layout "
                            f"(n_tracks, 2, n_nodes, n_frames) nor (n_frames, n_nodes, 2, n_tracks) for "
                            f"{n_nodes} node_names")


# ---------------------------------------------------------------------------------------------
# Several cameras


def align_cameras(
    per_camera: Mapping[str, Keypoints2D],
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Put several cameras' predictions on one frame axis and one keypoint order.

    Args:
        per_camera: camera name -> that camera's predictions (the dict order is the camera order).

    Returns:
        keypoints: the K names, in the first camera's order.
        xy: (C, F, K, 2) float64 pixels; NaN where missing, including frames a camera lacks.
        score: (C, F, K) float64; NaN where missing.
        frames: (F,) int64, the sorted union of all cameras' frame numbers.

    Raises:
        KeypointFileError: no cameras, or a camera whose keypoint names differ from the first's
            (order may differ; it is reordered).
    """
    if not per_camera:
        raise KeypointFileError("align_cameras: expected at least one camera, got none")
    cams = list(per_camera)
    first = per_camera[cams[0]]
    keypoints = list(first.keypoints)
    for cam in cams[1:]:
        kp = per_camera[cam]
        if set(kp.keypoints) != set(keypoints):
            missing = [k for k in keypoints if k not in kp.keypoints]
            extra = [k for k in kp.keypoints if k not in keypoints]
            raise KeypointFileError(f"{kp.source} (camera {cam!r}): keypoints differ from {first.source} "
                                    f"(camera {cams[0]!r}): missing {missing}, extra {extra}")
    frames = np.unique(np.concatenate([per_camera[c].frames for c in cams])).astype(np.int64)
    n_c, n_f, n_k = len(cams), len(frames), len(keypoints)
    xy = np.full((n_c, n_f, n_k, 2), np.nan)
    score = np.full((n_c, n_f, n_k), np.nan)
    for c, cam in enumerate(cams):
        kp = per_camera[cam]
        order = [kp.keypoints.index(k) for k in keypoints]
        rows = np.searchsorted(frames, kp.frames)
        xy[c, rows] = kp.xy[:, order]
        score[c, rows] = kp.score[:, order]
        lacking = n_f - len(kp.frames)
        if lacking:
            logger.warning("camera %r (%s): %d of %d frames missing from the file (frames %d..%d of the "
                           "union); padded with NaN", cam, kp.source, lacking, n_f,
                           int(frames[0]), int(frames[-1]))
    return keypoints, xy, score, frames


def preview_items(items: Sequence[Any], limit: int = 10) -> str:
    """``[a, b, ... (n more)]``: the first ``limit`` items of a list, for an error message."""
    shown = ", ".join(repr(x) for x in items[:limit])
    return f"[{shown}{f', ... ({len(items) - limit} more)' if len(items) > limit else ''}]"


__all__ = [
    "SUPPORTED_SUFFIXES",
    "KeypointFileError",
    "Keypoints2D",
    "align_cameras",
    "read_keypoints_2d",
]
