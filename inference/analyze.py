"""Every frame set of a recorded session posed after the fact: ``rigstream analyze``.

The live engine is latest-wins (it poses the newest set and skips those that came while it
worked); a lab wants pose for every frame, as ``deeplabcut.analyze_videos`` and anipose give
it. This module reads a session's videos and ``frames.csv``, poses every frame set with all
its views in one engine batch (``batch`` frame sets x the cameras per call), triangulates
with the session's calibration, smooths the 3D tracks with a Rauch-Tung-Striebel pass over the
live Kalman filter's model (:mod:`rigstream.inference.smoother`: it uses the future too, so
there is no lag), and writes what labs open (:func:`finish_session`).

Work is cut into chunks of ``chunk`` frame sets. A chunk is a pure function of the session
and the settings (:func:`pose_chunk`), so chunks run anywhere: in this process, or as tasks
on a Dask cluster (:mod:`rigstream.inference.analyze_cluster`). Each finished chunk is saved
under ``analysis/.chunks/`` (written under a temporary name and renamed, so a file there is
whole); a run that is killed and started again poses only the chunks not saved and writes no
row twice: the tables are written once, from the chunks, when all are there. The chunk folder
records the settings' fingerprint, and a run with other settings refuses to mix its chunks
with it (``restart`` starts afresh).

Frame sets that cannot be posed stay in the tables as NaN rows with the reason, per camera:
``dropped`` and ``overrun`` (from frames.csv), ``lost_in_transport``, ``not_in_video`` (a
frame the recorder did not write, e.g. ``recording.video: off``), ``not_recorded`` (a camera
pulse with no row for the camera: the recorder ended before it), ``not_decoded`` (the video
ends before the frame: a recorder killed mid-write).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rigstream.config import InputError, RigConfig, load_rig
from rigstream.inference.modeldir import ModelError, PoseModel, load_model, resolve_model_path
from rigstream.inference.preprocess import ViewError, ViewTransform

logger = logging.getLogger(__name__)

ANALYSIS_DIR = "analysis"
CHUNKS_DIR = ".chunks"
PLAN_FILE = "plan.json"
REPORT_FILE = "analysis.json"
POSE2D_FILE = "pose2d.csv"
POINTS3D_FILE = "points3d.csv"
SMOOTHED_FILE = "points3d_smoothed.csv"

PENDING = -1
STATUS_NAMES = ("posed", "dropped", "overrun", "lost_in_transport", "not_in_video", "not_recorded",
                "not_decoded")
"""Row states of the analysis tables; a state's code is its index here (``PENDING`` before a
chunk has run)."""
POSED, DROPPED, OVERRUN, LOST, NOT_IN_VIDEO, NOT_RECORDED, NOT_DECODED = range(len(STATUS_NAMES))


class AnalyzeError(InputError):
    """A session that cannot be analysed, said before any work; the message names the file."""


@dataclass(frozen=True)
class AnalyzeSettings:
    """What a run does; everything that changes a result is in :meth:`fingerprint`."""

    engine: str = "onnxruntime"
    model: str | None = None
    """A model name or folder (default: the session's rig file's ``pose.model``)."""
    device: str = "cpu"
    threads: int = 2
    """CPU threads of the engine in each process (results do not depend on it)."""
    batch: int = 8
    """Frame sets per engine call (each of all the cameras' views)."""
    chunk: int = 500
    """Frame sets per chunk: the unit of resuming and of a cluster task."""
    smooth: bool = True
    accel_noise_mm_s2: float | None = None
    """The smoother's process noise (default: the rig's ``triangulation.kalman``)."""
    meas_noise_mm: float | None = None
    """The smoother's measurement noise; default: estimated per keypoint from the session."""
    nwb: bool = True
    neural_rate_hz: float | None = None
    """The neural recorder's samples per second, for NWB times on its clock when the session's
    mapping is in samples (default: the rig's simulated recorder's)."""
    labeled_videos: bool = False

    def __post_init__(self) -> None:
        for name in ("threads", "batch", "chunk"):
            if int(getattr(self, name)) < 1:
                raise AnalyzeError(f"analyze: {name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class SessionPlan:
    """A session read and checked: everything a chunk needs, small enough to send to a worker."""

    session: Path
    out: Path
    rig: RigConfig
    model_dir: Path
    keypoints: tuple[str, ...]
    skeleton: tuple[tuple[str, str], ...]
    cameras: tuple[str, ...]
    videos: tuple[Path, ...]
    transforms: tuple[ViewTransform, ...]
    trigger_index: np.ndarray = field(repr=False)
    """(N,) int64: every trigger index of the session, in order."""
    t_pi_ns: np.ndarray = field(repr=False)
    """(N,) int64: each set's pulse on the Pi's clock (interpolated where no time was kept)."""
    video_frame: np.ndarray = field(repr=False)
    """(N, V) int64: the frame of each camera's video (-1 where none)."""
    status: np.ndarray = field(repr=False)
    """(N, V) int8: ``PENDING`` for frames to pose, else the reason there is none."""
    settings: AnalyzeSettings
    fingerprint: str

    @property
    def name(self) -> str:
        return self.session.name

    @property
    def chunks(self) -> int:
        return -(-len(self.trigger_index) // self.settings.chunk)

    def chunk_rows(self, i: int) -> slice:
        c = self.settings.chunk
        return slice(i * c, min((i + 1) * c, len(self.trigger_index)))

    def chunk_len(self, i: int) -> int:
        rows = self.chunk_rows(i)
        return rows.stop - rows.start

    @property
    def chunk_dir(self) -> Path:
        return self.out / CHUNKS_DIR


@dataclass
class ChunkResult:
    index: int
    values: np.ndarray
    """(n, V, K, 3) float32 x, y (frame pixels), likelihood; NaN where not posed."""
    status: np.ndarray
    """(n, V) int8 row states."""
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# Reading a session


def _read_csv_columns(path: Path, columns: Sequence[str],
                      optional: Sequence[str] = ()) -> dict[str, list[str]]:
    if not path.is_file():
        raise AnalyzeError(f"{path}: not found")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        head = next(reader, None)
        if head is None:
            raise AnalyzeError(f"{path}: empty file")
        missing = [c for c in columns if c not in head]
        if missing:
            raise AnalyzeError(f"{path}: missing columns {missing}; found {head[:8]}")
        at = {c: head.index(c) for c in (*columns, *optional) if c in head}
        out: dict[str, list[str]] = {c: [] for c in at}
        width = len(head)
        for line, row in enumerate(reader, start=2):
            if len(row) != width:
                # a session killed while a row was written leaves the last one cut short
                logger.warning("%s: line %d has %d fields, not %d; ignored", path, line, len(row), width)
                continue
            for c, i in at.items():
                out[c].append(row[i])
    return out


def _ints(path: Path, name: str, values: list[str], default: int | None = None) -> np.ndarray:
    try:
        return np.array([default if (v == "" and default is not None) else int(v) for v in values],
                        dtype=np.int64)
    except ValueError:
        bad = next(i for i, v in enumerate(values) if not v.lstrip("-").isdigit())
        raise AnalyzeError(f"{path}: row {bad + 1}: {name} {values[bad]!r} is not an integer") from None


def _session_rig(session: Path) -> RigConfig:
    path = session / "rig.yaml"
    if not path.is_file():
        raise AnalyzeError(f"{path}: not found (a session folder holds the rig file it ran with)")
    rig = load_rig(path)
    local = session / "calibration.toml"
    if local.is_file() and (rig.calibration is None or not Path(rig.calibration).is_file()):
        # a session copied elsewhere keeps its own calibration beside the rig file
        from rigstream.config import with_overrides

        rig = with_overrides(rig, calibration=str(local))
    return rig


def plan_session(session: str | Path, settings: AnalyzeSettings,
                 out: str | Path | None = None) -> SessionPlan:
    """Read and check a session for analysis; raises AnalyzeError before any work."""
    session = Path(session).expanduser().resolve()
    if not session.is_dir():
        raise AnalyzeError(f"{session}: not a folder")
    rig = _session_rig(session)
    model_ref = settings.model or (rig.pose.model if rig.pose is not None else None)
    if not model_ref:
        raise AnalyzeError(f"{session / 'rig.yaml'}: no pose model; pass --model")
    try:
        # --model is relative to where the command runs; the rig file's, to the session
        model = load_model(resolve_model_path(model_ref, None if settings.model else session))
    except ModelError as exc:
        raise AnalyzeError(f"model: {exc}") from None
    cameras = tuple(c.name for c in rig.cameras)
    crops = rig.pose.crops if rig.pose is not None else {}
    transforms = []
    for cam in rig.cameras:
        crop = crops.get(cam.name)
        try:
            transforms.append(ViewTransform.make(cam.name, (cam.width, cam.height),
                                                 (model.card.input.width, model.card.input.height),
                                                 tuple(crop) if crop else None))  # type: ignore[arg-type]
        except ViewError as exc:
            raise AnalyzeError(f"{session / 'rig.yaml'}: {exc} (model {model.folder})") from None

    frames_path = session / "frames.csv"
    cols = _read_csv_columns(frames_path, ("camera", "trigger_index", "video_frame"),
                             ("t_pi_ns", "dropped", "overrun", "lost_in_transport"))
    trig = _ints(frames_path, "trigger_index", cols["trigger_index"])
    vf = _ints(frames_path, "video_frame", cols["video_frame"])
    flags = {k: _ints(frames_path, k, cols[k], default=0) if k in cols else np.zeros(len(trig), np.int64)
             for k in ("dropped", "overrun", "lost_in_transport")}
    t_frames = _ints(frames_path, "t_pi_ns", cols["t_pi_ns"], default=-1) if "t_pi_ns" in cols \
        else np.full(len(trig), -1, np.int64)
    cam_of = np.array(cols["camera"], dtype=object)
    unknown = sorted(set(cam_of) - set(cameras))
    if unknown:
        raise AnalyzeError(f"{frames_path}: cameras {unknown} are not in the session's rig file "
                           f"{list(cameras)}")

    pulse_idx, pulse_t = _camera_pulses(session)
    universe = np.union1d(np.unique(trig), pulse_idx)
    if len(universe) == 0:
        raise AnalyzeError(f"{frames_path}: no frames")
    n, v = len(universe), len(cameras)
    video_frame = np.full((n, v), -1, np.int64)
    status = np.full((n, v), NOT_RECORDED, np.int8)
    t_pi = np.full(n, -1, np.int64)
    for j, cam in enumerate(cameras):
        mine = np.nonzero(cam_of == cam)[0]
        rows = np.searchsorted(universe, trig[mine])
        st = np.full(len(mine), PENDING, np.int8)
        st[vf[mine] < 0] = NOT_IN_VIDEO
        st[flags["lost_in_transport"][mine] != 0] = LOST
        st[flags["overrun"][mine] != 0] = OVERRUN
        st[flags["dropped"][mine] != 0] = DROPPED
        # a trigger index seen twice (a restarted camera) keeps its last row, as the recorder did
        status[rows, j] = st
        video_frame[rows, j] = np.where(st == PENDING, vf[mine], -1)
        t_pi[rows] = np.where(t_frames[mine] >= 0, t_frames[mine], t_pi[rows])
    have = np.searchsorted(universe, pulse_idx)
    t_pi[have] = pulse_t
    t_pi = _fill_times(t_pi, universe, rig.trigger.period_ns)

    videos = []
    for j, cam in enumerate(cameras):
        path = _video_of(session, cam)
        wanted = (status[:, j] == PENDING).any()
        if path is None and wanted:
            raise AnalyzeError(f"{session / 'video'}: no video of camera {cam} (frames.csv lists "
                               f"{int((status[:, j] == PENDING).sum())} frames in it)")
        videos.append(path or session / "video" / f"{cam}.mkv")
    if not (status == PENDING).any():
        raise AnalyzeError(f"{frames_path}: no frame is in a video (recorded with recording.video: off? "
                           f"clips-only sessions keep no whole-session video to pose)")

    out_dir = Path(out).expanduser().resolve() if out is not None else session / ANALYSIS_DIR
    skeleton = tuple((a, b) for a, b in model.card.skeleton)
    fp = _fingerprint(session, model, settings, cameras, videos)
    return SessionPlan(session=session, out=out_dir, rig=rig, model_dir=model.folder,
                       keypoints=tuple(model.keypoints), skeleton=skeleton, cameras=cameras,
                       videos=tuple(videos), transforms=tuple(transforms), trigger_index=universe,
                       t_pi_ns=t_pi, video_frame=video_frame, status=status, settings=settings,
                       fingerprint=fp)


def _camera_pulses(session: Path) -> tuple[np.ndarray, np.ndarray]:
    path = session / "pulses.csv"
    if not path.is_file():
        logger.warning("%s: not found; frame set times come from frames.csv", path)
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cols = _read_csv_columns(path, ("index", "t_pi_ns", "line"))
    camera = np.array([line == "camera" for line in cols["line"]], bool)
    idx = _ints(path, "index", cols["index"])[camera]
    t = _ints(path, "t_pi_ns", cols["t_pi_ns"])[camera]
    idx, first = np.unique(idx, return_index=True)
    return idx, t[first]


def _fill_times(t: np.ndarray, index: np.ndarray, period_ns: int) -> np.ndarray:
    """Times where unknown (-1) from the known ones (linear, or the period past the ends), so
    the smoother's timeline increases strictly."""
    known = t >= 0
    if known.all():
        return t
    if not known.any():
        return index * period_ns
    filled = np.interp(index, index[known], t[known]).round().astype(np.int64)
    first, last = np.nonzero(known)[0][[0, -1]]
    filled[:first] = t[first] - (index[first] - index[:first]) * period_ns
    filled[last + 1:] = t[last] + (index[last + 1:] - index[last]) * period_ns
    return filled


def _video_of(session: Path, camera: str) -> Path | None:
    for suffix in (".mkv", ".mp4", ".avi"):
        p = session / "video" / f"{camera}{suffix}"
        if p.is_file():
            return p
    return None


def _fingerprint(session: Path, model: PoseModel, settings: AnalyzeSettings, cameras: Sequence[str],
                 videos: Sequence[Path]) -> str:
    h = hashlib.sha256()
    h.update(hashlib.sha256(model.onnx_path.read_bytes()).digest())
    for name in ("frames.csv", "pulses.csv"):
        p = session / name
        h.update(hashlib.sha256(p.read_bytes()).digest() if p.is_file() else b"-")
    for v in videos:
        st = v.stat() if v.is_file() else None
        h.update(f"{v.name}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}".encode())
    keep = {k: getattr(settings, k) for k in ("engine", "device", "batch", "chunk")}
    h.update(json.dumps({"cameras": list(cameras), **keep}, sort_keys=True).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# One chunk (runs in any process)

_ENGINES: dict[tuple[Any, ...], Any] = {}
"""Engines of this process, by (engine, model, views, device, threads): a worker that runs many
chunks loads its model once."""


def _engine(plan: SessionPlan) -> Any:
    from rigstream.inference.backends import open_engine

    s = plan.settings
    views = len(plan.cameras) * s.batch
    key = (s.engine, str(plan.model_dir), views, s.device, s.threads)
    engine = _ENGINES.get(key)
    if engine is None:
        model = load_model(plan.model_dir)
        if s.engine == "onnxruntime":
            engine = open_engine("onnxruntime", model, views, threads=s.threads)
        elif s.engine == "torch":
            import torch

            torch.set_num_threads(s.threads)
            engine = open_engine("torch", model, views, device=s.device)
        else:
            engine = open_engine(s.engine, model, views)
        _ENGINES[key] = engine
    return engine


class _VideoCursor:
    """One camera's video, read forward; a frame before the one last read reopens it there."""

    _DONE = (1 << 62, None)

    def __init__(self, path: Path) -> None:
        self.path = path
        self._it: Iterator[tuple[int, np.ndarray]] | None = None
        self._next: tuple[int, np.ndarray | None] = self._DONE
        self._last = -1
        self._end: int | None = None  # the last frame number, once the video has ended

    def get(self, frame: int) -> np.ndarray | None:
        """The pixels of video frame ``frame`` (valid until the next call), or None if the
        video has no such frame."""
        from rigstream.acquisition.video import read_frames_from

        if self._end is not None and frame > self._end:
            return None
        number, pixels = self._next
        if self._it is None or frame < number:
            self._it = read_frames_from(self.path, frame)
            self._end = None
            number, pixels = self._advance()
        while pixels is not None and number < frame:
            number, pixels = self._advance()
        self._next = (number, pixels)
        return pixels if pixels is not None and number == frame else None

    def _advance(self) -> tuple[int, np.ndarray | None]:
        assert self._it is not None
        item = next(self._it, None)
        if item is None:
            self._end = self._last
            return self._DONE
        self._last = item[0]
        return item


def pose_chunk(plan: SessionPlan, index: int) -> ChunkResult:
    """Pose chunk ``index`` of a session: every frame set in it, ``batch`` sets per engine call."""
    t0 = time.perf_counter()
    rows = plan.chunk_rows(index)
    status = plan.status[rows].copy()
    frames = plan.video_frame[rows]
    n, v, k = len(status), len(plan.cameras), len(plan.keypoints)
    values = np.full((n, v, k, 3), np.nan, np.float32)
    engine = _engine(plan)
    batch = np.zeros(engine.input_shape, np.float32)
    cursors = [_VideoCursor(p) for p in plan.videos]
    per_call = plan.settings.batch
    for start in range(0, n, per_call):
        group = range(start, min(start + per_call, n))
        slots: list[tuple[int, int, int]] = []  # (row, camera, batch slot)
        for j, row in enumerate(group):
            for c in range(v):
                slot = j * v + c
                pixels = cursors[c].get(int(frames[row, c])) if status[row, c] == PENDING else None
                if pixels is None:
                    if status[row, c] == PENDING:
                        status[row, c] = NOT_DECODED
                    batch[slot] = 0.0
                    continue
                plan.transforms[c].apply(pixels, batch[slot])
                slots.append((row, c, slot))
        batch[len(group) * v:] = 0.0
        out = engine.infer(batch)
        for row, c, slot in slots:
            values[row, c] = plan.transforms[c].to_frame(out[slot])
            status[row, c] = POSED
    return ChunkResult(index=index, values=values, status=status, seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# Chunks on disk (resuming)


def open_chunks(plan: SessionPlan, restart: bool = False) -> list[int]:
    """Prepare the chunk folder; the chunks still to run. Chunks of a run with other settings
    (or of another recording) are refused unless ``restart``, which clears them."""
    d = plan.chunk_dir
    meta = d / PLAN_FILE
    if d.is_dir() and restart:
        shutil.rmtree(d)
    elif d.is_dir() and any(d.iterdir()):
        try:
            old = json.loads(meta.read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            old = None
        if old != plan.fingerprint:
            raise AnalyzeError(f"{d}: chunks of an analysis with other settings or of another recording "
                               f"(fingerprint {old}, now {plan.fingerprint}); pass --restart to discard them")
    d.mkdir(parents=True, exist_ok=True)
    write_atomic(meta, json.dumps({"fingerprint": plan.fingerprint, "chunks": plan.chunks,
                                    "frame_sets": len(plan.trigger_index),
                                    "settings": asdict(plan.settings)}, indent=1).encode())
    return [i for i in range(plan.chunks) if load_chunk(plan, i) is None]


def finished_report(plan: SessionPlan) -> dict[str, Any] | None:
    """The report of a finished analysis with the same fingerprint (nothing left to do), else None."""
    path = plan.out / REPORT_FILE
    if plan.chunk_dir.exists() or not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or report.get("fingerprint") != plan.fingerprint:
        return None
    return report if report.get("outputs") == output_settings(plan.settings) else None


def output_settings(settings: AnalyzeSettings) -> dict[str, Any]:
    """The settings that change the outputs but not the posed chunks."""
    return {k: getattr(settings, k) for k in ("smooth", "accel_noise_mm_s2", "meas_noise_mm", "nwb",
                                                "neural_rate_hz", "labeled_videos")}


def _chunk_path(plan: SessionPlan, i: int) -> Path:
    return plan.chunk_dir / f"chunk_{i:05d}.npz"


def save_chunk(plan: SessionPlan, result: ChunkResult) -> None:
    path = _chunk_path(plan, result.index)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, values=result.values, status=result.status)
    tmp.replace(path)


def load_chunk(plan: SessionPlan, i: int) -> ChunkResult | None:
    path = _chunk_path(plan, i)
    if not path.is_file():
        return None
    rows = plan.chunk_rows(i)
    shape = (rows.stop - rows.start, len(plan.cameras), len(plan.keypoints), 3)
    try:
        with np.load(path) as z:
            values, status = z["values"], z["status"]
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("%s: unreadable (%s); it runs again", path, exc)
        return None
    if values.shape != shape or status.shape != shape[:2]:
        logger.warning("%s: shape %s, expected %s; it runs again", path, values.shape, shape)
        return None
    return ChunkResult(index=i, values=values, status=status)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` under a temporary name and rename it: a reader sees it whole or not at all."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# Running (serial; a cluster in analyze_cluster)

Progress = Callable[[str, int, int], None]
"""progress(session name, frame sets done, frame sets in all)."""


@dataclass
class SessionStart:
    """Where a run of one session begins (:func:`start_session`)."""

    skipped: dict[str, Any] | None
    """The finished analysis's report when there is nothing to do (marked ``skipped``)."""
    todo: list[int]
    """The chunks still to pose."""
    done: int
    """Frame sets already posed (saved by an earlier run)."""


def start_session(plan: SessionPlan, restart: bool = False, progress: Progress | None = None) -> SessionStart:
    """What a run of ``plan`` has left: nothing when it was analysed with these settings (unless
    ``restart``), else the chunks not saved yet; reports the frame sets done so far."""
    finished = None if restart else finished_report(plan)
    if finished is not None:
        logger.info("%s: already analysed with these settings (%s); --restart to redo", plan.name, plan.out)
        return SessionStart({**finished, "skipped": True}, [], len(plan.trigger_index))
    todo = open_chunks(plan, restart)
    total = len(plan.trigger_index)
    done = total - sum(plan.chunk_len(i) for i in todo)
    if todo and done:
        logger.info("%s: resuming: %d of %d chunks were done", plan.name, plan.chunks - len(todo),
                    plan.chunks)
    if progress:
        progress(plan.name, done, total)
    return SessionStart(None, todo, done)


def analyze_serial(plans: Sequence[SessionPlan], restart: bool = False,
                   progress: Progress | None = None) -> list[dict[str, Any]]:
    """Analyse sessions one chunk at a time in this process; the sessions' reports."""
    from rigstream.inference.analyze_output import finish_session

    reports = []
    for plan in plans:
        start = start_session(plan, restart, progress)
        if start.skipped is not None:
            reports.append(start.skipped)
            continue
        todo, done, total = start.todo, start.done, len(plan.trigger_index)
        started = time.perf_counter()
        for i in todo:
            save_chunk(plan, pose_chunk(plan, i))
            done += plan.chunk_len(i)
            if progress:
                progress(plan.name, done, total)
        reports.append(finish_session(plan, posed_s=time.perf_counter() - started,
                                      posed_sets=sum(plan.chunk_len(i) for i in todo),
                                      resumed_chunks=plan.chunks - len(todo)))
    return reports
