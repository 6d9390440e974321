"""Triangulate multicam_mouse's real 2D predictions with rigstream and with aniposelib, side by side.

Run it in the comparison environment (rigstream and aniposelib together)::

    bash tools/anipose_env.sh            # once: .venv-anipose with aniposelib 0.8
    .venv-anipose/bin/python tools/anipose_compare.py [CALIBRATION.toml ...]

Default calibrations: the folder's ``calibration_recalibrated.toml`` (aniposelib's own) and,
when present, ``/tmp/mouse_calibration.toml`` (``rigstream calibrate`` on the same images).
Both libraries see the same points: views whose score is under 0.3 are NaN for both. Errors
are per point, the mean over views, px. "all confident views" scores every 3D point against
every view that had a confident detection (aniposelib's ``reprojection_error``); rigstream's
own ``error`` is over the views it used (the worst-view re-solve may drop one).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multicam_mouse"
CAMERAS = ("back", "mid", "side", "top")
MIN_SCORE = 0.3


def stats(e: np.ndarray) -> dict[str, float]:
    e = e[np.isfinite(e)]
    return {"n": int(e.size), "median_px": round(float(np.median(e)), 3),
            "p95_px": round(float(np.percentile(e, 95)), 3), "mean_px": round(float(e.mean()), 3)}


def main(paths: list[str]) -> None:
    from aniposelib.cameras import CameraGroup

    from rigstream.calibration import Calibration
    from rigstream.config import TriangulationConfig
    from rigstream.inference.keypoint_files import align_cameras, read_keypoints_2d
    from rigstream.inference.triangulate import Triangulator

    files = {c: DATA / c / f"minimal_{c}_proofread.analysis.h5" for c in CAMERAS}
    _, xy, score, _ = align_cameras({c: read_keypoints_2d(p) for c, p in files.items()})
    xy = np.where((score >= MIN_SCORE)[..., None], xy, np.nan)  # (C, F, K, 2)
    c, f, k, _ = xy.shape
    flat = xy.reshape(c, f * k, 2)
    out = {}
    for path in paths:
        cal = Calibration.load(path).subset(list(CAMERAS))
        group = CameraGroup.load(path)
        t0 = time.perf_counter()
        theirs = group.triangulate(flat, progress=False)
        t_theirs = time.perf_counter() - t0
        their_err = group.reprojection_error(theirs, flat, mean=True)
        row = {"aniposelib": {"all_confident_views": stats(their_err), "seconds": round(t_theirs, 3)}}
        keep_all = 1e9
        for name, cfg in (
            ("rigstream", TriangulationConfig(min_score=MIN_SCORE)),
            ("rigstream_no_resolve", TriangulationConfig(min_score=MIN_SCORE, max_error_px=keep_all)),
            ("rigstream_unweighted_no_resolve",
             TriangulationConfig(min_score=MIN_SCORE, max_error_px=keep_all, weighted=False)),
        ):
            tri = Triangulator(cal, cfg)
            tri.warm_up()
            t0 = time.perf_counter()
            ours = tri.triangulate(flat, np.where(np.isfinite(flat[..., 0]), score.reshape(c, -1), np.nan))
            t_ours = time.perf_counter() - t0
            all_err = group.reprojection_error(ours.xyz, flat, mean=True)
            row[name] = {"used_views": stats(ours.error), "all_confident_views": stats(all_err),
                         "seconds": round(t_ours, 4),
                         "max_abs_diff_vs_aniposelib_mm": float(np.nanmax(np.abs(ours.xyz - theirs)))}
        out[Path(path).name] = row
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    args = sys.argv[1:] or [str(DATA / "calibration_recalibrated.toml")] + (
        ["/tmp/mouse_calibration.toml"] if Path("/tmp/mouse_calibration.toml").is_file() else [])
    main(args)
