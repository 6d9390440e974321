"""``rigstream bench triangulate``: time per frame set of live triangulation, beside aniposelib.

For each camera count N, a ring of N simulated 1280x1024 cameras (mild barrel distortion)
looks at K random points in the arena (the animal's volume), seen with 0.7 px of noise.
Frame sets are timed one call each, rigstream and aniposelib interleaved round by round in
the same process, so machine noise hits both alike. Reported per N: median and p99 per
frame set for rigstream (confidence weighted, and with every view counting the same) and
for aniposelib's ``CameraGroup.triangulate`` when it is importable, their ratio, and the
largest difference between the two results, both end to end and with the same undistorted
points fed to both (aniposelib undistorts with OpenCV's default of 5 iterations, rigstream to
convergence, so end to end they differ by that undistortion residual). No view is dropped in
this input: the re-solve threshold is above every point's error.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rigstream.acquisition.sim_world import ring_of_cameras
from rigstream.calibration import CalibratedCamera, Calibration
from rigstream.config import TriangulationConfig
from rigstream.inference.backends import make_filter
from rigstream.inference.triangulate import Triangulator
from rigstream.latency import latency_stats

logger = logging.getLogger(__name__)

NOISE_PX = 0.7
FRAME_SETS = 64


def _scene(n_cams: int, keypoints: int, seed: int) -> tuple[Calibration, np.ndarray, np.ndarray]:
    """Calibration, (S, K, 3) true points (mm), (S, C, K, 2) noisy detections (px)."""
    rng = np.random.default_rng(seed)
    cal = Calibration(tuple(ring_of_cameras([f"cam{i}" for i in range(n_cams)], 1280, 1024)))
    truth = rng.uniform([-250.0, -150.0, 0.0], [250.0, 150.0, 120.0], (FRAME_SETS, keypoints, 3))
    tri = Triangulator(cal)
    xy = tri.project(truth.reshape(-1, 3)).reshape(n_cams, FRAME_SETS, keypoints, 2)
    xy = xy.transpose(1, 0, 2, 3) + rng.normal(0.0, NOISE_PX, (FRAME_SETS, n_cams, keypoints, 2))
    return cal, truth, np.ascontiguousarray(xy)


def _normalized_twin(cal: Calibration) -> Calibration:
    """The same cameras with identity intrinsics and no distortion: their 'pixels' are
    normalized coordinates, so both libraries can be fed identical undistorted points."""
    return Calibration(tuple(
        CalibratedCamera(c.name, c.width, c.height, np.eye(3), np.zeros(5), c.rvec, c.tvec)
        for c in cal.cameras))


def _load_aniposelib(cal: Calibration, folder: Path) -> Any | None:
    try:
        from aniposelib.cameras import CameraGroup
    except ImportError:
        return None
    path = cal.save(folder / f"calibration-{len(cal.cameras)}.toml")
    return CameraGroup.load(str(path))


def bench_triangulate(cameras: tuple[int, ...] = (2, 4, 6), keypoints: int = 20,
                      rounds: int = 300, seed: int = 0) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    config = TriangulationConfig(max_error_px=1e9)  # no view is dropped: comparable with aniposelib
    with tempfile.TemporaryDirectory(prefix="rigstream-bench-") as tmp:
        for n in cameras:
            cal, truth, xy = _scene(n, keypoints, seed + n)
            rng = np.random.default_rng(seed)
            scores = rng.uniform(0.5, 1.0, (FRAME_SETS, n, keypoints))
            tri = Triangulator(cal, config)
            tri.warm_up()
            group = _load_aniposelib(cal, Path(tmp))
            if group is not None:
                group.triangulate(xy[0], progress=False)  # let jax compile before timing
            times: dict[str, list[float]] = {"rigstream_weighted": [], "rigstream": [], "aniposelib": []}
            for r in range(rounds):
                s = r % FRAME_SETS
                t0 = time.perf_counter()
                tri.triangulate(xy[s], scores[s])
                t1 = time.perf_counter()
                tri.triangulate(xy[s])
                t2 = time.perf_counter()
                times["rigstream_weighted"].append((t1 - t0) * 1e3)
                times["rigstream"].append((t2 - t1) * 1e3)
                if group is not None:
                    t3 = time.perf_counter()
                    group.triangulate(xy[s], progress=False)
                    times["aniposelib"].append((time.perf_counter() - t3) * 1e3)
            ours = tri.triangulate(xy.transpose(1, 0, 2, 3))  # (S, K) at once
            entry: dict[str, Any] = {
                "cameras": n, "keypoints": keypoints, "frame_sets_timed": rounds,
                "ms_per_frame_set": {k: latency_stats(v) for k, v in times.items() if v},
                "error_vs_truth_mm_median": round(float(np.median(
                    np.linalg.norm(ours.xyz - truth, axis=-1))), 4),
                "views_dropped": int(n * ours.ncams.size - ours.ncams.sum()),
            }
            if group is not None:
                theirs = np.stack([group.triangulate(xy[s], progress=False) for s in range(FRAME_SETS)])
                twin = Triangulator(_normalized_twin(cal), config)
                norm = tri.undistort(xy.transpose(1, 0, 2, 3))  # (C, S, K, 2)
                ours_same = twin.triangulate(norm).xyz
                theirs_same = np.stack([group.triangulate(norm[:, s], undistort=False, progress=False)
                                        for s in range(FRAME_SETS)])
                p50 = entry["ms_per_frame_set"]
                entry["speedup_vs_aniposelib"] = round(p50["aniposelib"]["p50"] / p50["rigstream"]["p50"], 1)
                entry["max_abs_diff_mm"] = float(np.abs(ours.xyz - theirs).max())
                entry["max_abs_diff_same_undistortion_mm"] = float(np.abs(ours_same - theirs_same).max())
            results.append(entry)
    out: dict[str, Any] = {
        "benchmark": "triangulate", "noise_px": NOISE_PX, "image": [1280, 1024],
        "aniposelib": _aniposelib_version(), "results": results,
        "filters_us_per_update_k20": {k: bench_filter(k, keypoints=keypoints)["median_us"]
                                      for k in ("one_euro", "kalman")},
    }
    return out


def _aniposelib_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("aniposelib")
    except Exception:  # not installed
        return None


def bench_filter(kind: str, keypoints: int = 20, n: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Time ``update`` and ``predict`` of a filter made by ``make_filter(kind)`` with default parameters.

    Feeds ``n`` poses of ``keypoints`` keypoints at ~200 Hz (jittered timestamps, a smooth random
    trajectory plus 1 mm noise, 5% of keypoints invalid per frame). The first 50 updates are not timed.

    Returns:
        ``{"kind", "keypoints", "n", "median_us", "p99_us", "predict_median_us"}``; ``median_us`` and
        ``p99_us`` are per ``update`` call (µs), ``predict_median_us`` per ``predict(0.02)`` call. All zero
        for kind ``"none"``.
    """
    filt = make_filter(kind)
    result: dict[str, Any] = {"kind": kind, "keypoints": keypoints, "n": n, "median_us": 0.0, "p99_us": 0.0,
                              "predict_median_us": 0.0}
    if filt is None:
        return result
    rng = np.random.default_rng(seed)
    t_ns = np.cumsum(rng.integers(4_000_000, 6_000_000, size=n))
    xyz = np.cumsum(rng.normal(0.0, 0.5, size=(n, keypoints, 3)), axis=0)
    xyz += rng.normal(0.0, 1.0, size=xyz.shape)
    valid = rng.random((n, keypoints)) > 0.05
    warmup = min(50, n // 10)
    upd_ns = np.zeros(n, np.int64)
    pred_ns = np.zeros(n, np.int64)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        filt.update(int(t_ns[i]), xyz[i], valid[i])
        t1 = clock()
        filt.predict(0.02)
        t2 = clock()
        upd_ns[i], pred_ns[i] = t1 - t0, t2 - t1
    upd_us, pred_us = upd_ns[warmup:] * 1e-3, pred_ns[warmup:] * 1e-3
    result.update(median_us=round(float(np.median(upd_us)), 2),
                  p99_us=round(float(np.percentile(upd_us, 99)), 2),
                  predict_median_us=round(float(np.median(pred_us)), 2))
    return result
