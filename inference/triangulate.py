"""Confidence-weighted triangulation of 2D keypoints from calibrated cameras, vectorized.

For every point, each camera that sees it contributes two rows of the DLT system
``A X = 0`` (``X`` homogeneous), built from its undistorted, normalized observation
``(u, v)`` and its extrinsics ``P = [R | t]``::

    w * (u * P[2] - P[0])
    w * (v * P[2] - P[1])

``w`` is the view's weight: its confidence score (or 1), zero for views under the score
threshold or with no detection. The solution is the eigenvector of ``AᵀA`` (4 x 4, summed
over views) with the smallest eigenvalue, which is the smallest right singular vector of
``A``: the same answer as the textbook SVD (and aniposelib's ``triangulate_simple``) with
equal weights. The eigenvector is found by inverse iteration on the shifted 4 x 4
system (a Cholesky solve per step; the smallest eigenvalue is the algebraic residual, orders of
magnitude under the next, so each step gains several digits).

Where a view of a point reprojects further than ``max_error_px`` and the point was seen by
three or more cameras, the point is re-solved leaving out each view in turn and the best fit
is kept if it explains the disagreement (repeatedly, down to two views): one bad detection
(a swapped paw, a reflection) no longer drags the 3D point away. Leaving out the view that
reprojects worst is not enough: the bad view pulls the point towards itself, so a good view
can reproject worse than the bad one.

The whole pipeline (undistortion, solve, reprojection, re-solve) is one numba kernel looping
over points: at 4 cameras x 20 keypoints a frame set takes microseconds, where a numpy version
spends hundreds of them in per-operation overhead. The kernel is compiled on first use and
cached on disk (``Triangulator.warm_up`` compiles it before live data arrives).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from rigstream.calibration import Calibration
from rigstream.config import InputError, TriangulationConfig

logger = logging.getLogger(__name__)


class TriangulationError(InputError):
    """Input that cannot be triangulated (wrong shapes, cameras not in the calibration)."""


@dataclass(frozen=True)
class Points3D:
    """Triangulated points; N is the number of points (keypoints x frames, flattened or not)."""

    xyz: np.ndarray
    """(..., 3) float64, calibration units (mm for our boards); NaN where fewer than two views."""
    error: np.ndarray
    """(...,) float64 mean reprojection error over the views used, px; NaN where no point."""
    ncams: np.ndarray
    """(...,) int64 views used (after the score threshold and any worst-view drop)."""
    score: np.ndarray
    """(...,) float64 mean confidence of the views used; 0 where no point."""


class Triangulator:
    """Triangulates points seen by the cameras of a calibration, in the given order.

    ``calibration`` holds exactly the cameras whose observations come in, first axis order.
    """

    def __init__(self, calibration: Calibration, config: TriangulationConfig | None = None) -> None:
        if len(calibration.cameras) < 2:
            raise TriangulationError(
                f"{calibration.source}: triangulation needs at least two cameras, "
                f"got {len(calibration.cameras)}"
            )
        self.calibration = calibration
        self.config = config or TriangulationConfig()
        self.names = calibration.names
        cams = calibration.cameras
        self._ext = np.ascontiguousarray(np.stack([c.extrinsics for c in cams]))  # (C, 3, 4)
        # fx, fy, cx, cy: OpenCV's projection and undistortion ignore the skew term too.
        self._intr = np.array([[c.matrix[0, 0], c.matrix[1, 1], c.matrix[0, 2], c.matrix[1, 2]]
                               for c in cams])
        self._dist = np.zeros((len(cams), 12))  # k1 k2 p1 p2 k3 k4 k5 k6 s1 s2 s3 s4
        for i, cam in enumerate(cams):
            d = cam.dist
            if d.size == 14 and np.any(d[12:] != 0.0):
                raise TriangulationError(
                    f"{calibration.source}: camera {cam.name!r} uses OpenCV's tilted-sensor model "
                    f"(tauX, tauY), which triangulation does not support"
                )
            self._dist[i, : min(d.size, 12)] = d[:12]

    def warm_up(self) -> None:
        """Compile (or load from the on-disk cache) the kernel before live data arrives."""
        c = len(self.names)
        self.triangulate(np.zeros((c, 1, 2)) + self._intr[:, None, 2:4])

    def undistort(self, xy_px: np.ndarray) -> np.ndarray:
        """(C, ..., 2) px -> (C, ..., 2) normalized coordinates; NaN stays NaN."""
        xy = np.asarray(xy_px, dtype=np.float64)
        if xy.ndim < 2 or xy.shape[0] != len(self.names) or xy.shape[-1] != 2:
            raise TriangulationError(
                f"undistort: expected points of shape ({len(self.names)} cameras, ..., 2), got {xy.shape}")
        flat = np.ascontiguousarray(xy.reshape(len(self.names), -1, 2))
        return _undistort_all(flat, self._intr, self._dist).reshape(xy.shape)

    def project(self, xyz: np.ndarray) -> np.ndarray:
        """(..., 3) -> (C, ..., 2) px in every camera (distorted, OpenCV's model); NaN for NaN
        points and for points behind a camera."""
        pts = np.asarray(xyz, dtype=np.float64)
        if pts.ndim < 1 or pts.shape[-1] != 3:
            raise TriangulationError(f"project: expected points of shape (..., 3), got {pts.shape}")
        flat = np.ascontiguousarray(pts.reshape(-1, 3))
        out = _project_all(flat, self._ext, self._intr, self._dist)
        return out.reshape((len(self.names), *pts.shape[:-1], 2))

    def triangulate(self, xy_px: np.ndarray, score: np.ndarray | None = None) -> Points3D:
        """Triangulate.

        ``xy_px``: (C, ..., 2) float px, distorted (as detected); NaN where a camera has no
        detection. ``score``: (C, ...) float confidences in [0, 1], or None (every
        detection counts fully). Returns :class:`Points3D` with shape ``(...)``.
        """
        xy = np.asarray(xy_px, dtype=np.float64)
        c = len(self.names)
        if xy.ndim < 2 or xy.shape[0] != c or xy.shape[-1] != 2:
            raise TriangulationError(
                f"expected 2D points of shape ({c} cameras, ..., 2), got {xy.shape}"
            )
        shape = xy.shape[1:-1]
        flat = np.ascontiguousarray(xy.reshape(c, -1, 2))
        n = flat.shape[1]
        if score is None:
            s = np.ones((c, n))
        else:
            s = np.asarray(score, dtype=np.float64)
            if s.shape != (c, *shape):
                raise TriangulationError(f"expected scores of shape {(c, *shape)}, got {s.shape}")
            s = np.ascontiguousarray(s.reshape(c, n))
        xyz = np.empty((n, 3))
        error = np.empty(n)
        ncams = np.empty(n, dtype=np.int64)
        mean_score = np.empty(n)
        cfg = self.config
        _triangulate_kernel(flat, s, cfg.min_score, cfg.weighted, cfg.max_error_px,
                            self._ext, self._intr, self._dist, xyz, error, ncams, mean_score)
        return Points3D(xyz=xyz.reshape((*shape, 3)), error=error.reshape(shape),
                        ncams=ncams.reshape(shape), score=mean_score.reshape(shape))


def triangulate_rig(calibration: Calibration, names: list[str],
                    config: TriangulationConfig | None = None) -> Triangulator:
    """A triangulator for the cameras ``names``, in that order (a clear error if any is missing)."""
    return Triangulator(calibration.subset(names), config)


# ------------------------------------------------------------------------------ kernel
# Distortion coefficients follow OpenCV's order: k1 k2 p1 p2 k3 k4 k5 k6 s1 s2 s3 s4.

_UNDISTORT_ITERATIONS = 100
"""Fixed-point steps at most; converged to 1e-14 (normalized) in a handful near the image
centre, a few dozen in strongly distorted corners. OpenCV's ``undistortPoints`` stops after
5 by default, which leaves up to ~0.1 px there (k1 = -0.29 on a 1280 px sensor)."""
_INVERSE_STEPS = 8


@njit(cache=True, nogil=True)
def _undistort(x_px: float, y_px: float, intr: np.ndarray, d: np.ndarray) -> tuple[float, float]:
    x0 = (x_px - intr[2]) / intr[0]
    y0 = (y_px - intr[3]) / intr[1]
    x, y = x0, y0
    for _ in range(_UNDISTORT_ITERATIONS):
        r2 = x * x + y * y
        icdist = (1.0 + ((d[7] * r2 + d[6]) * r2 + d[5]) * r2) / (
            1.0 + ((d[4] * r2 + d[1]) * r2 + d[0]) * r2)
        if icdist < 0.0:  # beyond where the model is invertible: OpenCV's fallback
            return x0, y0
        dx = 2.0 * d[2] * x * y + d[3] * (r2 + 2.0 * x * x) + d[8] * r2 + d[9] * r2 * r2
        dy = d[2] * (r2 + 2.0 * y * y) + 2.0 * d[3] * x * y + d[10] * r2 + d[11] * r2 * r2
        nx = (x0 - dx) * icdist
        ny = (y0 - dy) * icdist
        done = abs(nx - x) < 1e-14 and abs(ny - y) < 1e-14
        x, y = nx, ny
        if done:
            break
    return x, y


@njit(cache=True, nogil=True)
def _project(p: np.ndarray, ext: np.ndarray, intr: np.ndarray, d: np.ndarray) -> tuple[float, float]:
    """One world point through one camera: px, distorted; NaN behind the camera."""
    xc = ext[0, 0] * p[0] + ext[0, 1] * p[1] + ext[0, 2] * p[2] + ext[0, 3]
    yc = ext[1, 0] * p[0] + ext[1, 1] * p[1] + ext[1, 2] * p[2] + ext[1, 3]
    zc = ext[2, 0] * p[0] + ext[2, 1] * p[1] + ext[2, 2] * p[2] + ext[2, 3]
    if not zc > 0.0:
        return np.nan, np.nan
    x = xc / zc
    y = yc / zc
    r2 = x * x + y * y
    radial = (1.0 + ((d[4] * r2 + d[1]) * r2 + d[0]) * r2) / (
        1.0 + ((d[7] * r2 + d[6]) * r2 + d[5]) * r2)
    xd = x * radial + 2.0 * d[2] * x * y + d[3] * (r2 + 2.0 * x * x) + d[8] * r2 + d[9] * r2 * r2
    yd = y * radial + d[2] * (r2 + 2.0 * y * y) + 2.0 * d[3] * x * y + d[10] * r2 + d[11] * r2 * r2
    return intr[0] * xd + intr[2], intr[1] * yd + intr[3]


@njit(cache=True, nogil=True)
def _undistort_all(xy: np.ndarray, intr: np.ndarray, dist: np.ndarray) -> np.ndarray:
    out = np.empty_like(xy)
    for c in range(xy.shape[0]):
        for n in range(xy.shape[1]):
            x, y = xy[c, n, 0], xy[c, n, 1]
            if np.isfinite(x) and np.isfinite(y):
                out[c, n, 0], out[c, n, 1] = _undistort(x, y, intr[c], dist[c])
            else:
                out[c, n, 0] = out[c, n, 1] = np.nan
    return out


@njit(cache=True, nogil=True)
def _project_all(xyz: np.ndarray, ext: np.ndarray, intr: np.ndarray, dist: np.ndarray) -> np.ndarray:
    out = np.empty((ext.shape[0], xyz.shape[0], 2))
    for c in range(ext.shape[0]):
        for n in range(xyz.shape[0]):
            out[c, n, 0], out[c, n, 1] = _project(xyz[n], ext[c], intr[c], dist[c])
    return out


@njit(cache=True, nogil=True)
def _solve_point(un: np.ndarray, w: np.ndarray, active: np.ndarray, views: np.ndarray, nv: int,
                 ext: np.ndarray, m: np.ndarray, chol: np.ndarray, vec: np.ndarray,
                 tmp: np.ndarray, out: np.ndarray) -> bool:
    """Weighted DLT of one point from its active views; writes xyz to ``out``."""
    m[:] = 0.0
    for j in range(nv):
        if not active[j]:
            continue
        p = ext[views[j]]
        ww = w[j] * w[j]
        for i in range(2):
            uv = un[j, i]
            for a in range(4):
                ra = uv * p[2, a] - p[i, a]
                for b in range(a, 4):
                    m[a, b] += ww * ra * (uv * p[2, b] - p[i, b])
    trace = m[0, 0] + m[1, 1] + m[2, 2] + m[3, 3]
    shift = 1e-10 * trace + 1e-300
    for a in range(4):
        m[a, a] += shift
        for b in range(a):
            m[a, b] = m[b, a]
    # Cholesky of the (positive definite, shifted) normal matrix.
    for a in range(4):
        acc = m[a, a]
        for k in range(a):
            acc -= chol[a, k] * chol[a, k]
        if not acc > 0.0:
            return False
        chol[a, a] = np.sqrt(acc)
        for b in range(a + 1, 4):
            acc = m[b, a]
            for k in range(a):
                acc -= chol[b, k] * chol[a, k]
            chol[b, a] = acc / chol[a, a]
    vec[:] = 0.0
    vec[3] = 1.0
    for _ in range(_INVERSE_STEPS):
        for a in range(4):  # L y = vec
            acc = vec[a]
            for k in range(a):
                acc -= chol[a, k] * tmp[k]
            tmp[a] = acc / chol[a, a]
        for a in range(3, -1, -1):  # Lᵀ x = y
            acc = tmp[a]
            for k in range(a + 1, 4):
                acc -= chol[k, a] * tmp[k]
            tmp[a] = acc / chol[a, a]
        norm = np.sqrt(tmp[0] ** 2 + tmp[1] ** 2 + tmp[2] ** 2 + tmp[3] ** 2)
        sign = 1.0 if tmp[3] >= 0.0 else -1.0
        change = 0.0
        for a in range(4):
            value = sign * tmp[a] / norm
            change = max(change, abs(value - vec[a]))
            vec[a] = value
        if change < 1e-9:  # the next step would move it by ~1e-14
            break
    if vec[3] == 0.0:
        return False
    for a in range(3):
        out[a] = vec[a] / vec[3]
    return True


@njit(cache=True, nogil=True)
def _view_errors(xyz: np.ndarray, obs: np.ndarray, active: np.ndarray, views: np.ndarray, nv: int,
                 ext: np.ndarray, intr: np.ndarray, dist: np.ndarray, err: np.ndarray) -> float:
    """Reprojection error (px) of every active view into ``err``; returns their mean."""
    total = 0.0
    count = 0
    for j in range(nv):
        if not active[j]:
            err[j] = 0.0
            continue
        c = views[j]
        u, v = _project(xyz, ext[c], intr[c], dist[c])
        e = np.sqrt((u - obs[j, 0]) ** 2 + (v - obs[j, 1]) ** 2)
        err[j] = e if np.isfinite(e) else np.inf  # behind a camera: as bad as it gets
        total += err[j]
        count += 1
    return total / count


@njit(cache=True, nogil=True)
def _max_active(err: np.ndarray, active: np.ndarray, nv: int) -> float:
    worst = 0.0
    for j in range(nv):
        if active[j] and err[j] > worst:
            worst = err[j]
    return worst


@njit(cache=True, nogil=True)
def _triangulate_kernel(xy: np.ndarray, score: np.ndarray, min_score: float, weighted: bool,
                        max_error_px: float, ext: np.ndarray, intr: np.ndarray, dist: np.ndarray,
                        out_xyz: np.ndarray, out_error: np.ndarray, out_ncams: np.ndarray,
                        out_score: np.ndarray) -> None:
    c_count, n_points = score.shape
    views = np.empty(c_count, dtype=np.int64)
    obs = np.empty((c_count, 2))
    un = np.empty((c_count, 2))
    w = np.empty(c_count)
    s = np.empty(c_count)
    active = np.empty(c_count, dtype=np.bool_)
    err = np.empty(c_count)
    err2 = np.empty(c_count)
    m = np.empty((4, 4))
    chol = np.zeros((4, 4))
    vec = np.empty(4)
    tmp = np.empty(4)
    xyz = np.empty(3)
    xyz2 = np.empty(3)
    xyz_best = np.empty(3)
    err_best = np.empty(c_count)
    for n in range(n_points):
        nv = 0
        for c in range(c_count):
            x = xy[c, n, 0]
            y = xy[c, n, 1]
            sc = score[c, n]
            if np.isfinite(x) and np.isfinite(y) and sc >= min_score:  # NaN scores fail
                views[nv] = c
                obs[nv, 0] = x
                obs[nv, 1] = y
                un[nv, 0], un[nv, 1] = _undistort(x, y, intr[c], dist[c])
                w[nv] = sc if weighted else 1.0
                s[nv] = sc
                active[nv] = True
                nv += 1
        if nv < 2 or not _solve_point(un, w, active, views, nv, ext, m, chol, vec, tmp, xyz):
            out_xyz[n, :] = np.nan
            out_error[n] = np.nan
            out_ncams[n] = 0
            out_score[n] = 0.0
            continue
        n_active = nv
        mean_err = _view_errors(xyz, obs, active, views, nv, ext, intr, dist, err)
        # While some view reprojects further than max_error_px and three or more views remain,
        # leave out the view whose removal fits best (lowest mean error). Not simply the view
        # that reprojects worst: one bad view pulls the point towards itself, so a good view
        # can end up reprojecting worse than the bad one.
        while _max_active(err, active, nv) > max_error_px and n_active >= 3:
            best = -1
            best_err = np.inf
            for j in range(nv):
                if not active[j]:
                    continue
                active[j] = False
                if _solve_point(un, w, active, views, nv, ext, m, chol, vec, tmp, xyz2):
                    mean2 = _view_errors(xyz2, obs, active, views, nv, ext, intr, dist, err2)
                    if mean2 < best_err:
                        best, best_err = j, mean2
                        xyz_best[:] = xyz2
                        err_best[:nv] = err2[:nv]
                active[j] = True
            if best < 0:
                break
            active[best] = False
            # Keep the drop only if it explains the disagreement: every remaining view within
            # max_error_px, or the mean error at least halved. Evenly poor views (blur, a
            # marginal calibration) are not dropped one by one down to two.
            if not (_max_active(err_best, active, nv) <= max_error_px or best_err < 0.5 * mean_err):
                active[best] = True
                break
            xyz[:] = xyz_best
            err[:nv] = err_best[:nv]
            mean_err = best_err
            n_active -= 1
        total = 0.0
        for j in range(nv):
            if active[j]:
                total += s[j]
        out_xyz[n, :] = xyz
        out_error[n] = mean_err
        out_ncams[n] = n_active
        out_score[n] = total / n_active


# ------------------------------------------------------------------------------ offline


def triangulate_files(calibration_path: str | Path, files: dict[str, str | Path], out: str | Path,
                      config: TriangulationConfig | None = None, track: str | int | None = None,
                      ) -> dict[str, Any]:
    """``rigstream triangulate``: one 2D keypoint file per camera (DeepLabCut .h5/.csv or SLEAP
    analysis .h5) -> anipose's 3D CSV at ``out``. Returns a report (also what the CLI prints).

    Raises InputError subclasses for a missing camera, differing keypoints, a file no
    keypoint of which has a detection, or fewer than two files.
    """
    from rigstream.inference.anipose_csv import write_points3d_csv
    from rigstream.inference.keypoint_files import align_cameras, read_keypoints_2d

    if len(files) < 2:
        raise TriangulationError(f"triangulation needs two or more cameras' files, got {len(files)}")
    calibration = Calibration.load(calibration_path).subset(list(files))
    per_camera = {cam: read_keypoints_2d(path, track=track) for cam, path in files.items()}
    empty = [f"{p.source} (camera {cam})" for cam, p in per_camera.items()
             if not np.isfinite(p.xy).any()]
    if len(empty) == len(per_camera):
        raise TriangulationError("nothing to triangulate: every keypoint is missing (NaN) in every file: "
                                 + ", ".join(empty))
    keypoints, xy, score, frames = align_cameras(per_camera)
    tri = Triangulator(calibration, config)
    t0 = time.perf_counter()
    pts = tri.triangulate(xy, score)  # (F, K)
    seconds = time.perf_counter() - t0
    path = write_points3d_csv(out, keypoints, frames, pts.xyz, pts.error, pts.ncams, pts.score)
    cfg = tri.config
    usable = (np.isfinite(xy).all(axis=-1) & (score >= cfg.min_score)).sum(axis=0)  # (F, K)
    have = pts.ncams >= 2
    err = pts.error[have]
    report: dict[str, Any] = {
        "out": str(path), "calibration": str(calibration_path), "cameras": list(files),
        "keypoints": keypoints, "frames": len(frames),
        "points": int(have.sum()), "points_possible": int(pts.ncams.size),
        "points_under_two_views": int((usable < 2).sum()),
        "views_dropped_by_resolve": int((usable - pts.ncams)[have].sum()),
        "ncams": {str(n): int((pts.ncams == n).sum()) for n in range(2, len(files) + 1)},
        "reprojection_error_px": {
            "median": round(float(np.median(err)), 4) if err.size else None,
            "p95": round(float(np.percentile(err, 95)), 4) if err.size else None,
            "mean": round(float(err.mean()), 4) if err.size else None,
        },
        "per_keypoint_median_error_px": {
            k: (round(float(np.median(pts.error[:, i][have[:, i]])), 3) if have[:, i].any() else None)
            for i, k in enumerate(keypoints)},
        "seconds": round(seconds, 4),
        "config": {"min_score": cfg.min_score, "max_error_px": cfg.max_error_px, "weighted": cfg.weighted},
        "files_without_detections": empty,
    }
    return report
