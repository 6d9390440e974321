"""What ``rigstream analyze`` writes for a session once every chunk is posed.

Into the analysis folder (default ``<session>/analysis/``), each file under a temporary name
and renamed:

- ``pose2d.csv``: one row per frame set and camera, in trigger order then the rig's camera
  order: ``trigger_index, t_pi_ns, camera, video_frame, status`` and ``<kp>_x, <kp>_y,
  <kp>_likelihood`` (frame pixels; empty where ``status`` is not ``posed``);
- per camera, DeepLabCut's prediction files ``<camera>DLC_rigstream_<model>.h5`` and ``.csv``,
  one row per frame of that camera's video;
- ``points3d.csv`` (triangulated) and ``points3d_smoothed.csv`` (the Rauch-Tung-Striebel pass),
  anipose's 3D CSV with ``fnum`` = trigger index, and ``t_pi_ns`` (and the neural recorder's time
  where the session is aligned);
- ``<session>.nwb`` (NWB with ndx-pose) and, when asked, ``<camera>_labeled.mp4``;
- ``analysis.json``: counts per row state, the settings, speeds, and on the simulated rig the
  errors against its ground truth.

Then the chunk folder is removed: a finished analysis is the tables.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from rigstream.inference.analyze import (
    POINTS3D_FILE,
    POSE2D_FILE,
    POSED,
    REPORT_FILE,
    SMOOTHED_FILE,
    STATUS_NAMES,
    AnalyzeError,
    SessionPlan,
    load_chunk,
    output_settings,
    write_atomic,
)

logger = logging.getLogger(__name__)


def load_all(plan: SessionPlan) -> tuple[np.ndarray, np.ndarray]:
    """Every chunk of a session: (N, V, K, 3) values and (N, V) row states."""
    n, v, k = len(plan.trigger_index), len(plan.cameras), len(plan.keypoints)
    values = np.full((n, v, k, 3), np.nan, np.float32)
    status = np.empty((n, v), np.int8)
    for i in range(plan.chunks):
        chunk = load_chunk(plan, i)
        if chunk is None:
            raise AnalyzeError(f"{plan.chunk_dir}: chunk {i} of {plan.chunks} is missing")
        rows = plan.chunk_rows(i)
        values[rows] = chunk.values
        status[rows] = chunk.status
    return values, status


def write_pose2d_table(path: Path, plan: SessionPlan, values: np.ndarray, status: np.ndarray) -> None:
    """``pose2d.csv`` (see the module docstring), streamed to a temporary file and renamed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    blank = [""] * (3 * len(plan.keypoints))
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["trigger_index", "t_pi_ns", "camera", "video_frame", "status"]
                   + [f"{kp}_{c}" for kp in plan.keypoints for c in ("x", "y", "likelihood")])
        for i, n in enumerate(plan.trigger_index.tolist()):
            t = int(plan.t_pi_ns[i])
            for c, cam in enumerate(plan.cameras):
                s = int(status[i, c])
                head = [n, t, cam, int(plan.video_frame[i, c]), STATUS_NAMES[s]]
                if s != POSED:
                    w.writerow(head + blank)
                    continue
                cells = []
                for x, y, p in values[i, c].tolist():
                    cells += ["" if x != x else f"{x:.3f}", "" if y != y else f"{y:.3f}",
                              "" if p != p else f"{p:.4f}"]
                w.writerow(head + cells)
    tmp.replace(path)


def video_tables(plan: SessionPlan, values: np.ndarray) -> dict[str, np.ndarray]:
    """Per camera, (video frames, K, 3) float64 indexed by video frame (NaN where not posed)."""
    out = {}
    for c, cam in enumerate(plan.cameras):
        vf = plan.video_frame[:, c]
        keep = vf >= 0
        if not keep.any():
            continue
        table = np.full((int(vf.max()) + 1, len(plan.keypoints), 3), np.nan)
        table[vf[keep]] = values[keep, c]
        out[cam] = table
    return out


def _neural_column(plan: SessionPlan) -> tuple[str, np.ndarray] | None:
    """The session's neural-recorder time of each frame set, where it is aligned."""
    from rigstream.sync.session_align import MAPPING_FILE, SessionAlignError, pi_to_neural

    if not (plan.session / MAPPING_FILE).is_file():
        return None
    try:
        to_neural = pi_to_neural(plan.session)
        units = json.loads((plan.session / MAPPING_FILE).read_text()).get("units_b", "units")
    except (SessionAlignError, OSError, ValueError) as exc:
        logger.warning("%s: the clock mapping cannot be used (%s); no neural time column", plan.session, exc)
        return None
    return f"t_neural_{units}", np.asarray(to_neural(plan.t_pi_ns), np.float64)


def triangulate_all(plan: SessionPlan, values: np.ndarray) -> Any | None:
    """Points3D of every frame set (N, K), or None without a calibration or two cameras."""
    from rigstream.calibration import Calibration, CalibrationError
    from rigstream.inference.triangulate import Triangulator

    rig = plan.rig
    if rig.calibration is None or len(plan.cameras) < 2:
        return None
    try:
        cal = Calibration.load(rig.calibration).for_rig_cameras(rig.cameras)
    except CalibrationError as exc:
        raise AnalyzeError(f"calibration: {exc}") from None
    cfg = rig.pose.triangulation if rig.pose is not None else None
    tri = Triangulator(cal, cfg)
    xy = np.ascontiguousarray(values[..., :2].transpose(1, 0, 2, 3), dtype=np.float64)  # (V, N, K, 2)
    score = np.nan_to_num(values[..., 2].transpose(1, 0, 2).astype(np.float64), nan=0.0)
    return tri.triangulate(xy, score)


def smooth_points(plan: SessionPlan, xyz: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The Rauch-Tung-Striebel pass over triangulated points; and what it used."""
    from rigstream.inference.smoother import estimate_meas_noise_mm, rts_smooth

    s = plan.settings
    tri = plan.rig.pose.triangulation if plan.rig.pose is not None else None
    accel = s.accel_noise_mm_s2 or (tri.kalman.accel_noise_mm_s2 if tri else 1000.0)
    fallback = tri.kalman.meas_noise_mm if tri else 1.0
    t_s = (plan.t_pi_ns - plan.t_pi_ns[0]) / 1e9
    if s.meas_noise_mm is not None:
        meas = np.full(len(plan.keypoints), float(s.meas_noise_mm))
        how = "given"
    else:
        meas = estimate_meas_noise_mm(t_s, xyz)
        meas = np.where(np.isfinite(meas) & (meas > 0), meas, fallback)
        how = "estimated from the session (second differences)"
    max_gap = tri.max_gap_s if tri else 0.1
    out = rts_smooth(t_s, xyz, accel_noise_mm_s2=accel, meas_noise_mm=meas, max_gap_s=max_gap)
    per_keypoint = dict(zip(plan.keypoints, np.round(meas, 3).tolist(), strict=True))
    return out, {"accel_noise_mm_s2": accel, "meas_noise_mm": per_keypoint, "meas_noise": how,
                 "max_gap_s": max_gap}


def finish_session(plan: SessionPlan, posed_s: float = 0.0, posed_sets: int = 0,
                   resumed_chunks: int = 0) -> dict[str, Any]:
    """Write every output of a fully posed session (see the module docstring); its report."""
    from rigstream.inference.anipose_csv import write_points3d_csv
    from rigstream.inference.dlc_files import dlc_scorer, write_dlc_predictions

    t0 = time.perf_counter()
    values, status = load_all(plan)
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    write_pose2d_table(out / POSE2D_FILE, plan, values, status)
    files.append(POSE2D_FILE)

    scorer = dlc_scorer(plan.model_dir.name)
    tables = video_tables(plan, values)
    for cam, table in tables.items():
        h5, text = write_dlc_predictions(out, cam, scorer, list(plan.keypoints), table)
        files += [h5.name, text.name]

    counts = {cam: {name: int((status[:, c] == code).sum()) for code, name in enumerate(STATUS_NAMES)}
              for c, cam in enumerate(plan.cameras)}
    sets_posed = int((status == POSED).any(axis=1).sum())
    report: dict[str, Any] = {
        "session": str(plan.session), "out": str(out), "fingerprint": plan.fingerprint,
        "model": plan.model_dir.name, "engine": plan.settings.engine, "cameras": list(plan.cameras),
        "frame_sets": len(plan.trigger_index), "frame_sets_posed": sets_posed,
        "frame_sets_complete": int((status == POSED).all(axis=1).sum()),
        "rows": counts, "chunks": plan.chunks, "chunks_resumed": resumed_chunks,
        "posed_s": round(posed_s, 3), "posed_this_run": posed_sets,
        "frame_sets_per_s": round(posed_sets / posed_s, 1) if posed_s > 0 and posed_sets else None,
        "settings": {k: getattr(plan.settings, k) for k in ("batch", "chunk", "threads", "device")},
        "outputs": output_settings(plan.settings),
    }
    neural = _neural_column(plan)
    extra = {"t_pi_ns": plan.t_pi_ns} | ({neural[0]: neural[1]} if neural else {})
    pts = triangulate_all(plan, values)
    smoothed = None
    if pts is not None:
        write_points3d_csv(out / POINTS3D_FILE, plan.keypoints, plan.trigger_index, pts.xyz, pts.error,
                           pts.ncams, pts.score, extra=extra)
        files.append(POINTS3D_FILE)
        if plan.settings.smooth:
            smoothed, report["smoother"] = smooth_points(plan, pts.xyz)
            write_points3d_csv(out / SMOOTHED_FILE, plan.keypoints, plan.trigger_index, smoothed, pts.error,
                               pts.ncams, pts.score, extra=extra)
            files.append(SMOOTHED_FILE)
    report["time_base"] = "neural recorder" if neural else "Pi"
    if all(c.backend == "sim" for c in plan.rig.cameras):
        report["error_vs_truth"] = _errors_vs_truth(plan, values, status)
    if plan.settings.nwb:
        files.append(_write_nwb(plan, values, status, pts, smoothed).name)
    if plan.settings.labeled_videos:
        files += [p.name for p in _write_labeled(plan, tables)]
    report["files"] = files
    report["finish_s"] = round(time.perf_counter() - t0, 3)
    write_atomic(out / REPORT_FILE, (json.dumps(report, indent=1) + "\n").encode())
    shutil.rmtree(plan.chunk_dir, ignore_errors=True)
    return report


def _errors_vs_truth(plan: SessionPlan, values: np.ndarray, status: np.ndarray) -> dict[str, Any]:
    from rigstream.inference.simdata import pose2d_errors_of, pose3d_errors

    rows, cams = np.nonzero(status == POSED)
    out: dict[str, Any] = {"pose2d": pose2d_errors_of(plan.rig, plan.trigger_index[rows],
                                                       [plan.cameras[c] for c in cams],
                                                       values[rows, cams, :, :2].astype(np.float64))}
    for key, name in (("points3d", POINTS3D_FILE), ("points3d_smoothed", SMOOTHED_FILE)):
        if (plan.out / name).is_file():
            out[key] = pose3d_errors(plan.rig, plan.out / name)
    return out


def _write_nwb(plan: SessionPlan, values: np.ndarray, status: np.ndarray, pts: Any,
               smoothed: np.ndarray | None) -> Path:
    from rigstream.inference.nwb_files import Pose2DSeries, Pose3DSeries, write_session_nwb

    pose2d = {}
    for c, cam in enumerate(plan.cameras):
        keep = status[:, c] == POSED
        pose2d[cam] = Pose2DSeries(trigger_index=plan.trigger_index[keep], t_pi_ns=plan.t_pi_ns[keep],
                                   values=values[keep, c].astype(np.float64))
    pose3d = None
    if pts is not None:
        xyz = smoothed if smoothed is not None else pts.xyz
        pose3d = Pose3DSeries(trigger_index=plan.trigger_index, t_pi_ns=plan.t_pi_ns, xyz=xyz,
                              score=pts.score)
    return write_session_nwb(plan.session, plan.out / f"{plan.name}.nwb", keypoints=list(plan.keypoints),
                             skeleton=list(plan.skeleton), pose2d=pose2d, pose3d=pose3d,
                             source="rigstream analyze, every frame set, 3D "
                                    + ("smoothed (Rauch-Tung-Striebel)" if smoothed is not None
                                       else "triangulated"),
                             model=plan.model_dir.name, neural_rate_hz=plan.settings.neural_rate_hz)


def _write_labeled(plan: SessionPlan, tables: dict[str, np.ndarray]) -> list[Path]:
    from rigstream.inference.labeled_video import write_labeled_video

    written = []
    for c, cam in enumerate(plan.cameras):
        if cam not in tables:
            continue
        report = write_labeled_video(plan.videos[c], plan.out / f"{cam}_labeled.mp4", list(plan.keypoints),
                                     tables[cam], list(plan.skeleton))
        written.append(report.out)
    return written
