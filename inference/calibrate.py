"""Multi-camera calibration from views of a board: intrinsics, extrinsics, bundle adjustment.

The procedure (:func:`calibrate`):

1. **Detect** the board in every image of every camera (:func:`detect_sources`, a thread
   pool). Images pair across cameras by their frame key (see :mod:`rigstream.inference.boards`).
2. **Intrinsics** per camera from its own views (``cv2.calibrateCamera``), with the lens model
   of :data:`MODELS`; views whose error is an outlier (above 3x the median view and 1 px) are
   dropped and the fit repeated.
3. **Board poses** per camera and view (``solvePnP``), then **initial camera poses** along a
   maximum spanning tree over cameras linked by shared views, each link the median of the
   relative poses over the views the two cameras share. Cameras outside the largest linked
   group are reported as not placed (an error only when fewer than two can be placed).
4. **Bundle adjustment** (``scipy.optimize.least_squares``, trf, Huber loss with a 1 px scale,
   sparse Jacobian): per camera its pose and lens (focal, principal point, k1, k2 as the model
   says), per shared view one rigid board pose. The board is rigid, so its 3D corners are not
   free points. The first placed camera is the world origin (aniposelib's choice too; its
   files move it, ours keep it at ``R = I, t = 0``). Observations further off than
   ``max(2 px, 5 x median)`` are dropped and the problem solved again (up to 3 rounds).

The report says, per camera, the reprojection error of the adjusted model (mean, median and RMSE
over all corners of the views used, dropped outliers included), frames and corners used, the
views found inverted (white on black, see :func:`rigstream.inference.boards.detect`), the
intrinsics-only error, and the aniposelib-style triangulated error (:func:`board_error`).

Lengths are in board units (mm for our boards).

Length: one job in stages (the four above, then the report); over 600 lines because the
stages read in order here and share the problem's layout.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.sparse import coo_matrix

from rigstream.calibration import CalibratedCamera, Calibration
from rigstream.config import InputError, TriangulationConfig
from rigstream.inference.board_sources import is_video, iter_video, list_images, read_image
from rigstream.inference.boards import Board, BoardError, Detection, detect
from rigstream.inference.triangulate import Triangulator

logger = logging.getLogger(__name__)

LensModel = Literal["k1", "k1k2", "full"]
MODELS: dict[str, str] = {
    "k1": "fx = fy, principal point fixed at the image centre, k1 (aniposelib's model)",
    "k1k2": "fx = fy, principal point free, k1, k2; no tangential distortion, k3 = 0",
    "full": "fx, fy, principal point free, k1, k2, p1, p2, k3 (OpenCV's 5-coefficient model)",
}
"""Lens models, simplest first: what the intrinsics fit and the bundle adjustment may change.
``auto`` picks one by held-out error (:func:`choose_model`)."""

MIN_CORNERS = 8
"""Fewest corners for a view to count (intrinsics, board pose)."""
MIN_VIEWS = 3
"""Fewest usable views per camera for its intrinsics."""
CV_MIN_VIEWS = 6
"""Model ``auto`` compares models on held-out views only when every camera has this many
usable views; with fewer it takes ``k1`` (fewest parameters)."""
CV_FOLDS = 5
CV_MARGIN = 0.05
"""A richer model must beat a simpler one's held-out error by this share to be chosen."""


class CalibrateError(InputError):
    """Board views that cannot calibrate the cameras (says which camera and why)."""


# ---------------------------------------------------------------------- detection


@dataclass(frozen=True, eq=False)
class CameraDetections:
    """Everything found in one camera's source."""

    name: str
    source: str
    width: int
    """Image width, px."""
    height: int
    """Image height, px."""
    n_images: int
    """Images (or sampled video frames) read."""
    frames: dict[int, Detection] = field(repr=False)
    """Frame key -> corners found (only frames where some were)."""
    both_polarities: bool = False
    """Images were searched in both polarities (as given and inverted), see
    :func:`rigstream.inference.boards.detect`; False: only in the board's own."""

    @property
    def n_inverted(self) -> int:
        """Frames whose board was found in the inverted image (white on black)."""
        return sum(d.inverted for d in self.frames.values())


_Found = tuple[int, tuple[int, int], Detection | None]
"""(frame key, (width, height) px, corners or None)."""


def _detect_files(board: Board, items: list[tuple[int, str]], both: bool) -> list[_Found]:
    out = []
    for key, path in items:
        image = read_image(path)
        out.append((key, (image.shape[1], image.shape[0]), detect(board, image, both)))
    return out


def _detect_video(board: Board, path: str, every: int, both: bool) -> list[_Found]:
    return [(frame.key, (image.shape[1], image.shape[0]), detect(board, image, both))
            for frame, image in iter_video(path, every)]


def detect_sources(board: Board, sources: Mapping[str, str | Path], every: int = 1,
                   workers: int | None = None, both_polarities: bool = True) -> dict[str, CameraDetections]:
    """Detect ``board`` in every camera's source (a folder of images or a video file).

    ``every``: read every k-th frame of videos (folders: every image). ``workers``: threads
    (default: CPU count). ``both_polarities``: look for a ChArUco board not found in an image
    in the inverted image too (see :func:`rigstream.inference.boards.detect`). Returns the
    cameras in the given order.
    """
    if not sources:
        raise CalibrateError("no cameras given (expected CAM=SOURCE pairs)")
    tasks: list[tuple[str, Any, tuple[Any, ...]]] = []
    for name, src in sources.items():
        p = Path(src)
        if is_video(p):
            if not p.is_file():
                raise CalibrateError(f"camera {name}: {p}: no such video file")
            tasks.append((name, _detect_video, (board, str(p), every, both_polarities)))
        elif p.is_dir():
            images = [(k, str(f)) for k, f in list_images(p)]
            n_chunks = max(1, min(len(images), 2 * (workers or os.cpu_count() or 1)))
            for i in range(n_chunks):
                if images[i::n_chunks]:
                    tasks.append((name, _detect_files, (board, images[i::n_chunks], both_polarities)))
        elif p.exists():
            raise CalibrateError(f"camera {name}: {p}: expected a folder of images or a video "
                                 f"(.mp4, .avi, .mov, ...), got another kind of file")
        else:
            raise CalibrateError(f"camera {name}: {p}: no such folder or video")
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    t0 = time.perf_counter()
    results: dict[str, list[_Found]] = {n: [] for n in sources}
    # Threads: OpenCV releases the GIL while it decodes and detects, and threads need no
    # ``if __name__ == "__main__"`` guard in the caller's script.
    with ThreadPoolExecutor(n_workers, thread_name_prefix="detect") as pool:
        futures = [(name, pool.submit(fn, *fargs)) for name, fn, fargs in tasks]
        for name, fut in futures:
            try:
                results[name] += fut.result()
            except BoardError as exc:
                raise CalibrateError(f"camera {name}: {exc}") from None
    out: dict[str, CameraDetections] = {}
    for name, rows in results.items():
        rows.sort(key=lambda r: r[0])
        sizes = sorted({r[1] for r in rows})
        if len(sizes) != 1:
            raise CalibrateError(f"camera {name}: images of different sizes in {sources[name]}: "
                                 f"{', '.join(f'{w}x{h}' for w, h in sizes)} (expected one size per camera)")
        frames = {k: d for k, _, d in rows if d is not None}
        both = both_polarities and board.kind == "charuco"
        out[name] = CameraDetections(name, str(sources[name]), sizes[0][0], sizes[0][1], len(rows), frames,
                                     both)
        logger.info("camera %s: board in %d of %d images (%d found inverted)", name, len(frames), len(rows),
                    out[name].n_inverted)
    logger.info("detection took %.1f s (%d processes)", time.perf_counter() - t0, n_workers)
    return out


# ---------------------------------------------------------------------- rotations


def _rodrigues(rvecs: np.ndarray) -> np.ndarray:
    """(N, 3) Rodrigues vectors -> (N, 3, 3) rotation matrices."""
    theta = np.linalg.norm(rvecs, axis=1)
    small = theta < 1e-12
    axis = rvecs / np.where(small, 1.0, theta)[:, None]
    k = np.zeros((len(rvecs), 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k[:, 1, 0], k[:, 2, 0], k[:, 2, 1] = axis[:, 2], -axis[:, 1], axis[:, 0]
    s, c = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
    rot = np.eye(3) + s * k + (1 - c) * (k @ k)
    rot[small] = np.eye(3)
    return rot


def _rvec(rot: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.ascontiguousarray(rot, dtype=np.float64))[0].ravel()


def _median_pose(rots: np.ndarray, tvecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Robust mean of poses: element-wise median of the rotation matrices projected back onto
    SO(3), and the element-wise median translation. ``rots``: (K, 3, 3); ``tvecs``: (K, 3)."""
    u, _, vt = np.linalg.svd(np.median(rots, axis=0))
    rot = u @ vt
    if np.linalg.det(rot) < 0:
        rot = u @ np.diag([1.0, 1.0, -1.0]) @ vt
    return rot, np.median(tvecs, axis=0)


# ---------------------------------------------------------------------- intrinsics


@dataclass(frozen=True, eq=False)
class Intrinsics:
    """One camera's lens from its own views."""

    matrix: np.ndarray = field(repr=False)
    """(3, 3) float64 camera matrix, px."""
    dist: np.ndarray = field(repr=False)
    """(5,) float64 OpenCV distortion k1, k2, p1, p2, k3."""
    views: tuple[int, ...]
    """Frame keys used."""
    rejected: tuple[int, ...]
    """Frame keys dropped as outliers."""
    view_rms_px: dict[int, float] = field(repr=False)
    """Frame key -> RMS corner error of that view (all usable views, rejected ones too), px."""
    mean_px: float
    """Mean corner reprojection error over the views used, px."""


def _usable(board: Board, det: Detection) -> bool:
    """Enough corners, not all on one row or column (a pose needs a plane, not a line)."""
    if len(det) < MIN_CORNERS:
        return False
    cols, rows = det.ids % board.corners_x, det.ids // board.corners_x
    return len(np.unique(cols)) >= 2 and len(np.unique(rows)) >= 2


def _calib_flags(model: str) -> int:
    flags = cv2.CALIB_USE_INTRINSIC_GUESS
    if model in ("k1", "k1k2"):
        flags |= cv2.CALIB_FIX_ASPECT_RATIO | cv2.CALIB_ZERO_TANGENT_DIST | cv2.CALIB_FIX_K3
    if model == "k1":
        flags |= cv2.CALIB_FIX_PRINCIPAL_POINT | cv2.CALIB_FIX_K2
    return flags


def _fit_lens(objp: list[np.ndarray], imgp: list[np.ndarray], size: tuple[int, int], model: str
              ) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.calibrateCamera`` under ``model``: (3, 3) matrix and (5,) distortion. ``objp``:
    per view (n, 3) float32 board units; ``imgp``: per view (n, 2) float32 px; ``size``: (w, h) px."""
    matrix = cv2.initCameraMatrix2D(objp, imgp, size, 1.0)
    f = float(np.sqrt(matrix[0, 0] * matrix[1, 1]))
    matrix = np.array([[f, 0, (size[0] - 1) / 2], [0, f, (size[1] - 1) / 2], [0, 0, 1]])
    _, matrix, dist, _, _ = cv2.calibrateCamera(
        objp, imgp, size, matrix, np.zeros(5), flags=_calib_flags(model),
        criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10))
    return matrix, dist.ravel()[:5]


def _view_errors(objp: np.ndarray, imgp: np.ndarray, matrix: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """(n,) px corner errors of one view after fitting its board pose to the lens (matrix, dist)."""
    ok, rvec, tvec = cv2.solvePnP(objp, imgp, matrix, dist)
    if not ok:
        return np.full(len(objp), np.inf)
    rvec, tvec = cv2.solvePnPRefineLM(objp, imgp, matrix, dist, rvec, tvec)
    proj = cv2.projectPoints(objp, rvec, tvec, matrix, dist)[0].reshape(-1, 2)
    return np.linalg.norm(proj - imgp, axis=1)


def held_out_error(board: Board, cam: CameraDetections, model: str, folds: int = CV_FOLDS) -> float:
    """Mean corner error (px) of ``cam``'s views, each scored by a lens fitted (``model``) without
    the fold that holds it; only the view's board pose is fitted to it."""
    keys = [k for k, d in cam.frames.items() if _usable(board, d)]
    obj_all = board.object_points.astype(np.float32)
    objp = [obj_all[cam.frames[k].ids] for k in keys]
    imgp = [cam.frames[k].image_points_px.astype(np.float32) for k in keys]
    errs = []
    for fold in range(min(folds, len(keys))):
        test = set(range(fold, len(keys), folds))
        train = [i for i in range(len(keys)) if i not in test]
        matrix, dist = _fit_lens([objp[i] for i in train], [imgp[i] for i in train], (cam.width, cam.height),
                                 model)
        errs += [_view_errors(objp[i], imgp[i], matrix, dist) for i in sorted(test)]
    return float(np.mean(np.concatenate(errs)))


def calibrate_intrinsics(board: Board, cam: CameraDetections, model: str) -> Intrinsics:
    """Fit ``cam``'s lens (``model``, see :data:`MODELS`) to its usable views, dropping outlier views."""
    keys = [k for k, d in cam.frames.items() if _usable(board, d)]
    if len(keys) < MIN_VIEWS:
        raise CalibrateError(
            f"camera {cam.name}: board seen well ({MIN_CORNERS}+ corners) in {len(keys)} of {cam.n_images} "
            f"images; intrinsics need at least {MIN_VIEWS} (take more views of the board)")
    obj_all = board.object_points.astype(np.float32)
    objp = {k: obj_all[cam.frames[k].ids] for k in keys}
    imgp = {k: cam.frames[k].image_points_px.astype(np.float32) for k in keys}

    def fit(use: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return _fit_lens([objp[k] for k in use], [imgp[k] for k in use], (cam.width, cam.height), model)

    def errors(matrix: np.ndarray, dist: np.ndarray) -> dict[int, np.ndarray]:
        return {k: _view_errors(objp[k], imgp[k], matrix, dist) for k in keys}

    matrix, dist = fit(keys)
    errs = errors(matrix, dist)
    rms = {k: float(np.sqrt(np.mean(e ** 2))) for k, e in errs.items()}
    limit = max(1.0, 3.0 * float(np.median(list(rms.values()))))
    use = [k for k in keys if rms[k] <= limit]
    if len(use) < len(keys) and len(use) >= MIN_VIEWS:
        matrix, dist = fit(use)
        errs = errors(matrix, dist)
        rms = {k: float(np.sqrt(np.mean(e ** 2))) for k, e in errs.items()}
    else:
        use = keys
    rejected = tuple(k for k in keys if k not in use)
    if rejected:
        logger.info("camera %s: views %s dropped from intrinsics (RMS above %.2f px)", cam.name,
                    list(rejected), limit)
    mean_px = float(np.mean(np.concatenate([errs[k] for k in use])))
    return Intrinsics(matrix, dist, tuple(use), rejected, rms, mean_px)


def _board_pose(board: Board, det: Detection, matrix: np.ndarray, dist: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Board -> camera (R (3, 3), t (3,), RMS px) of one view, or None."""
    obj = board.object_points[det.ids]
    img = det.image_points_px
    ok, rvec, tvec = cv2.solvePnP(obj, img, matrix, dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        return None
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, matrix, dist, rvec, tvec)
    proj = cv2.projectPoints(obj, rvec, tvec, matrix, dist)[0].reshape(-1, 2)
    rms = float(np.sqrt(np.mean(np.sum((proj - img) ** 2, axis=1))))
    if tvec[2, 0] <= 0 or not np.isfinite(rms):
        return None
    return cv2.Rodrigues(rvec)[0], tvec.ravel(), rms


# ---------------------------------------------------------------------- extrinsics


def _components(names: Sequence[str], shared: dict[tuple[str, str], int]) -> list[list[str]]:
    """Groups of cameras linked by shared views, largest first (ties: the earlier camera first)."""
    parent = {n: n for n in names}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for (a, b), count in shared.items():
        if count > 0:
            parent[root(a)] = root(b)
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(root(n), []).append(n)
    return sorted(groups.values(), key=lambda g: (-len(g), names.index(g[0])))


def _initial_extrinsics(names: list[str], poses: dict[str, dict[int, tuple[np.ndarray, np.ndarray, float]]]
                        ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """World -> camera (R, t) per camera of ``names`` (one linked group), ``names[0]`` at the
    origin, along the maximum spanning tree of shared views."""
    placed = {names[0]: (np.eye(3), np.zeros(3))}
    while len(placed) < len(names):
        best: tuple[int, str, str] | None = None
        for a in placed:
            for b in names:
                if b in placed:
                    continue
                n = len(poses[a].keys() & poses[b].keys())
                if n > 0 and (best is None or n > best[0]):
                    best = (n, a, b)
        if best is None:
            raise AssertionError("camera group not linked")  # _components guarantees it is
        _, a, b = best
        frames = sorted(poses[a].keys() & poses[b].keys())
        rots, tvecs = [], []
        for f in frames:
            ra, ta, _ = poses[a][f]
            rb, tb, _ = poses[b][f]
            r_ba = rb @ ra.T
            rots.append(r_ba)
            tvecs.append(tb - r_ba @ ta)
        r_ba, t_ba = _median_pose(np.array(rots), np.array(tvecs))
        ra, ta = placed[a]
        placed[b] = (r_ba @ ra, r_ba @ ta + t_ba)
        logger.debug("placed camera %s from %s over %d shared views", b, a, len(frames))
    return placed


# ---------------------------------------------------------------------- bundle adjustment


def _n_lens(model: str) -> int:
    return {"k1": 2, "k1k2": 5, "full": 9}[model]


def _lens_params(model: str, matrix: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """The bundle adjustment's lens parameters of one camera."""
    fx, fy, cx, cy = matrix[0, 0], matrix[1, 1], matrix[0, 2], matrix[1, 2]
    if model == "k1":
        return np.array([np.sqrt(fx * fy), dist[0]])
    if model == "k1k2":
        return np.array([np.sqrt(fx * fy), cx, cy, dist[0], dist[1]])
    return np.array([fx, fy, cx, cy, *dist[:5]])


def _lens_unpack(model: str, lens: np.ndarray, cxcy: np.ndarray) -> tuple[np.ndarray, ...]:
    """(C, n) lens params -> fx, fy, cx, cy, k1, k2, p1, p2, k3, each (C,).
    ``cxcy``: (C, 2) image centres, px (the fixed principal point of model k1)."""
    zero = np.zeros(len(lens))
    if model == "k1":
        return lens[:, 0], lens[:, 0], cxcy[:, 0], cxcy[:, 1], lens[:, 1], zero, zero, zero, zero
    if model == "k1k2":
        return lens[:, 0], lens[:, 0], lens[:, 1], lens[:, 2], lens[:, 3], lens[:, 4], zero, zero, zero
    return tuple(lens[:, i] for i in range(9))


@dataclass
class _Problem:
    """Observations and parameter layout:
    ``full`` = [per camera: rvec, tvec, lens] + [per frame: rvec, tvec]."""

    model: str
    cxcy: np.ndarray
    """(C, 2) image centres, px (fixed principal point of model k1)."""
    obj: np.ndarray
    """(N, 3) board coordinates of each observation's corner."""
    cam: np.ndarray
    """(N,) int camera index of each observation."""
    frame: np.ndarray
    """(N,) int frame index (into the BA frames) of each observation."""
    uv_px: np.ndarray
    """(N, 2) observed corner, px."""
    n_cams: int
    n_frames: int

    @property
    def per_cam(self) -> int:
        return 6 + _n_lens(self.model)

    def unpack(self, full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cams = full[: self.n_cams * self.per_cam].reshape(self.n_cams, self.per_cam)
        frames = full[self.n_cams * self.per_cam:].reshape(self.n_frames, 6)
        return cams, frames

    def project(self, full: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(len(rows), 2) projections of observations ``rows`` under parameters ``full``, px."""
        cams, frames = self.unpack(full)
        ci, fi = self.cam[rows], self.frame[rows]
        r_cam, r_frame = _rodrigues(cams[:, :3]), _rodrigues(frames[:, :3])
        xw = np.einsum("nij,nj->ni", r_frame[fi], self.obj[rows]) + frames[fi, 3:]
        xc = np.einsum("nij,nj->ni", r_cam[ci], xw) + cams[ci, 3:6]
        fx, fy, cx, cy, k1, k2, p1, p2, k3 = (a[ci] for a in _lens_unpack(self.model, cams[:, 6:], self.cxcy))
        z = np.where(np.abs(xc[:, 2]) < 1e-9, 1e-9, xc[:, 2])
        x, y = xc[:, 0] / z, xc[:, 1] / z
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return np.stack([fx * xd + cx, fy * yd + cy], axis=1)

    def jacobian(self, full: np.ndarray, free: np.ndarray, rows: np.ndarray, dense: bool) -> Any:
        """(2 len(rows), len(free)) Jacobian of the residuals of observations ``rows`` with
        respect to ``full[free]``, by central differences.

        Each observation depends on one camera's and one frame's parameters only, so one
        parameter slot of *all* cameras (or all frames) is stepped at once: 2 x (camera
        parameters + 6) projections per Jacobian, however many cameras and frames.
        """
        n_full = len(full)
        col_of = np.full(n_full, -1)
        col_of[free] = np.arange(len(free))
        base = self.n_cams * self.per_cam
        groups = [np.arange(self.n_cams) * self.per_cam + j for j in range(self.per_cam)]
        groups += [base + np.arange(self.n_frames) * 6 + j for j in range(6)]
        owner_cam, owner_frame = self.cam[rows] * self.per_cam, base + self.frame[rows] * 6
        out_rows, out_cols, out_vals = [], [], []
        for j, cols in enumerate(groups):
            step = 1e-6 * np.maximum(1.0, np.abs(full[cols]))
            plus, minus = full.copy(), full.copy()
            plus[cols] += step
            minus[cols] -= step
            diff = self.project(plus, rows) - self.project(minus, rows)  # (n, 2)
            owner = (owner_cam + j) if j < self.per_cam else (owner_frame + j - self.per_cam)
            h = np.zeros(n_full)
            h[cols] = step
            col = col_of[owner]
            ok = col >= 0
            idx = np.flatnonzero(ok)
            deriv = diff[idx] / (2 * h[owner[idx]])[:, None]
            out_rows += [2 * idx, 2 * idx + 1]
            out_cols += [col[idx], col[idx]]
            out_vals += [deriv[:, 0], deriv[:, 1]]
        r, c, v = np.concatenate(out_rows), np.concatenate(out_cols), np.concatenate(out_vals)
        shape = (2 * len(rows), len(free))
        if dense:
            jac = np.zeros(shape)
            jac[r, c] = v
            return jac
        return coo_matrix((v, (r, c)), shape=shape).tocsr()


DENSE_JACOBIAN_MAX_BYTES = 256 * 2**20
"""Above this a dense Jacobian is too big: the solver switches from exact trust-region steps to
sparse LSMR steps (many more iterations; measured on multicam_mouse, LSMR had not converged
after 200 evaluations where the exact steps converged in 15)."""


def _bundle_adjust(prob: _Problem, full0: np.ndarray, free: np.ndarray, max_rounds: int = 3
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Adjust ``full0[free]``; returns (parameters, (N,) bool observations kept)."""
    full = full0.copy()
    keep = np.ones(len(prob.cam), dtype=bool)
    for round_ in range(max_rounds + 1):
        rows = np.flatnonzero(keep)
        dense = 2 * len(rows) * len(free) * 8 <= DENSE_JACOBIAN_MAX_BYTES

        def residuals(x: np.ndarray, rows: np.ndarray = rows) -> np.ndarray:
            p = full.copy()
            p[free] = x
            return (prob.project(p, rows) - prob.uv_px[rows]).ravel()

        def jacobian(x: np.ndarray, rows: np.ndarray = rows, dense: bool = dense) -> Any:
            p = full.copy()
            p[free] = x
            return prob.jacobian(p, free, rows, dense)

        t0 = time.perf_counter()
        sol = least_squares(residuals, full[free], jac=jacobian, method="trf", loss="huber", f_scale=1.0,
                            x_scale="jac", tr_solver="exact" if dense else "lsmr", max_nfev=200)
        full[free] = sol.x
        err = np.linalg.norm(prob.project(full, np.arange(len(prob.cam))) - prob.uv_px, axis=1)
        limit = max(2.0, 5.0 * float(np.median(err[keep])))
        new_keep = err <= limit
        logger.info("bundle adjustment round %d: %d observations, median %.3f px, %.1f s "
                    "(%d evaluations, %s); %d beyond %.2f px", round_, len(rows), float(np.median(err[keep])),
                    time.perf_counter() - t0, sol.nfev, sol.message, int((~new_keep).sum()), limit)
        if round_ == max_rounds or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return full, keep


# ---------------------------------------------------------------------- the procedure


@dataclass(frozen=True, eq=False)
class CalibrationResult:
    calibration: Calibration
    report: dict[str, Any]
    """See :func:`calibrate`; also in ``calibration.metadata['report']``."""
    residuals_px: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Placed camera -> (n,) px reprojection error of each corner of the adjusted model (the
    observations the report's ``mean_px``, ``median_px`` and ``rmse_px`` are taken over)."""


def choose_model(board: Board, detections: Mapping[str, CameraDetections], model: str = "auto"
                 ) -> tuple[str, dict[str, float]]:
    """The lens model to use, and the held-out error (px, mean over cameras) of each model tried.

    ``auto``: with :data:`CV_MIN_VIEWS`+ usable views in every camera, each model of
    :data:`MODELS` is scored by :func:`held_out_error` (:data:`CV_FOLDS`-fold) and the simplest
    whose error is within :data:`CV_MARGIN` of the best is chosen; otherwise ``k1``.
    """
    if model != "auto":
        if model not in MODELS:
            raise CalibrateError(f"model: expected auto or one of {', '.join(MODELS)}, got {model!r}")
        return model, {}
    fewest = min(sum(_usable(board, d) for d in cam.frames.values()) for cam in detections.values())
    if fewest < CV_MIN_VIEWS:
        return "k1", {}
    scores = {m: float(np.mean([held_out_error(board, cam, m) for cam in detections.values()]))
              for m in MODELS}
    best = min(scores.values())
    chosen = next(m for m in MODELS if scores[m] <= best * (1 + CV_MARGIN))
    logger.info("held-out error by lens model: %s -> %s",
                ", ".join(f"{m} {v:.3f} px" for m, v in scores.items()), chosen)
    return chosen, scores


def calibrate(board: Board, detections: Mapping[str, CameraDetections], model: str = "auto"
              ) -> CalibrationResult:
    """Calibrate the cameras of ``detections`` (see :func:`detect_sources`) from their views of ``board``.

    Returns the placed cameras (input order, the first placed one at the world origin) and a
    report: ``cameras`` (per placed camera: ``images``, ``frames_detected``,
    ``frames_found_inverted``, ``intrinsics_mean_px``, ``intrinsics_views``,
    ``intrinsics_views_rejected``, ``frames_used``, ``corners_used``, ``corners_dropped``,
    ``mean_px``, ``median_px``, ``rmse_px``, ``triangulated_mean_px``), ``not_placed`` (camera ->
    reason), ``mean_px`` / ``median_px`` / ``rmse_px`` over all cameras, and ``triangulated``
    (:func:`board_error` summary). ``rmse_px`` is sqrt(mean(e^2)) of the same per-corner errors
    e as the mean and median (it weighs large errors more: OpenCV's and caliscope's number).
    """
    t0 = time.perf_counter()
    names = list(detections)
    for name, cam in detections.items():
        if not cam.frames:
            raise CalibrateError(_found_nowhere(board, name, cam))
    model, scores = choose_model(board, detections, model)
    logger.info("lens model %s: %s", model, MODELS[model])
    intr = {n: calibrate_intrinsics(board, detections[n], model) for n in names}
    for n in names:
        logger.info("camera %s: intrinsics from %d views, mean %.3f px", n, len(intr[n].views),
                    intr[n].mean_px)

    poses: dict[str, dict[int, tuple[np.ndarray, np.ndarray, float]]] = {}
    for n in names:
        poses[n] = {}
        for k, det in detections[n].frames.items():
            if k in intr[n].rejected or not _usable(board, det):
                continue
            pose = _board_pose(board, det, intr[n].matrix, intr[n].dist)
            if pose is not None:
                poses[n][k] = pose
    shared = {(a, b): len(poses[a].keys() & poses[b].keys())
              for i, a in enumerate(names) for b in names[i + 1:]}
    groups = _components(names, shared) if len(names) > 1 else [names]
    placed_names = groups[0]
    not_placed = {}
    for group in groups[1:]:
        for n in group:
            not_placed[n] = f"could not be placed: no views shared with {', '.join(placed_names)}"
            logger.warning("camera %s %s", n, not_placed[n])
    if len(placed_names) < 2:
        raise CalibrateError(
            "cameras " + ", ".join(names) + ": no two cameras saw the board in the same frame "
            "(expected at least two cameras with shared views; check that the images pair up by frame "
            "number)")
    ext = _initial_extrinsics(placed_names, poses)

    # Frames seen (with a usable pose) by two or more placed cameras; one rigid board pose each.
    counts: dict[int, int] = {}
    for n in placed_names:
        for k in poses[n]:
            counts[k] = counts.get(k, 0) + 1
    ba_frames = sorted(k for k, c in counts.items() if c >= 2)
    cam_index = {n: i for i, n in enumerate(placed_names)}
    obj_all = board.object_points
    obj, cam_i, frame_i, uv = [], [], [], []
    frame_pose = np.zeros((len(ba_frames), 6))
    for j, k in enumerate(ba_frames):
        seen = [n for n in placed_names if k in poses[n]]
        best = max(seen, key=lambda n: len(detections[n].frames[k]))
        r_cb, t_cb, _ = poses[best][k]
        r_c, t_c = ext[best]
        frame_pose[j, :3] = _rvec(r_c.T @ r_cb)
        frame_pose[j, 3:] = r_c.T @ (t_cb - t_c)
        for n in seen:
            det = detections[n].frames[k]
            obj.append(obj_all[det.ids])
            uv.append(det.image_points_px)
            cam_i.append(np.full(len(det), cam_index[n]))
            frame_i.append(np.full(len(det), j))
    cxcy = np.array([[(detections[n].width - 1) / 2, (detections[n].height - 1) / 2] for n in placed_names])
    prob = _Problem(model, cxcy, np.concatenate(obj), np.concatenate(cam_i), np.concatenate(frame_i),
                    np.concatenate(uv), len(placed_names), len(ba_frames))
    cam_params = [np.r_[_rvec(ext[n][0]), ext[n][1], _lens_params(model, intr[n].matrix, intr[n].dist)]
                  for n in placed_names]
    full0 = np.concatenate([np.concatenate(cam_params), frame_pose.ravel()])
    free = np.arange(6, len(full0))  # the first placed camera's pose is the world: fixed
    logger.info("bundle adjustment: %d cameras, %d frames, %d corners", len(placed_names), len(ba_frames),
                len(prob.cam))
    full, keep = _bundle_adjust(prob, full0, free)
    cams, _ = prob.unpack(full)
    fx, fy, cx, cy, *dist_coefs = _lens_unpack(model, cams[:, 6:], cxcy)
    calibrated = []
    for i, n in enumerate(placed_names):
        matrix = np.array([[fx[i], 0, cx[i]], [0, fy[i], cy[i]], [0, 0, 1]])
        dist = np.array([d[i] for d in dist_coefs])
        calibrated.append(CalibratedCamera(n, detections[n].width, detections[n].height, matrix, dist,
                                           cams[i, :3], cams[i, 3:6]))
    err = np.linalg.norm(prob.project(full, np.arange(len(prob.cam))) - prob.uv_px, axis=1)

    calibration = Calibration(tuple(calibrated), {})
    tri = board_error(calibration, detections, board)
    per_cam: dict[str, Any] = {}
    residuals: dict[str, np.ndarray] = {}
    for i, n in enumerate(placed_names):
        mine = prob.cam == i
        cam = detections[n]
        residuals[n] = err[mine]
        per_cam[n] = {
            "images": cam.n_images,
            "frames_detected": len(cam.frames),
            "frames_found_inverted": cam.n_inverted,
            "intrinsics_views": len(intr[n].views),
            "intrinsics_views_rejected": [int(k) for k in intr[n].rejected],
            "intrinsics_mean_px": round(intr[n].mean_px, 4),
            "frames_used": len(np.unique(prob.frame[mine])),
            "corners_used": int(np.sum(mine & keep)),
            "corners_dropped": int(np.sum(mine & ~keep)),
            "mean_px": round(float(np.mean(err[mine])), 4),
            "median_px": round(float(np.median(err[mine])), 4),
            "rmse_px": round(_rmse(err[mine]), 4),
            "triangulated_mean_px": round(tri.per_camera_mean_px.get(n, float("nan")), 4),
        }
    report: dict[str, Any] = {
        "procedure": "rigstream calibrate",
        "board": board.to_dict(),
        "model": model,
        "model_description": MODELS[model],
        "model_held_out_px": {m: round(v, 4) for m, v in scores.items()},
        "world": f"camera {placed_names[0]} (R = I, t = 0); lengths in board units",
        "frames_adjusted": len(ba_frames),
        "mean_px": round(float(np.mean(err)), 4),
        "median_px": round(float(np.median(err)), 4),
        "rmse_px": round(_rmse(err), 4),
        "triangulated": tri.summary(),
        "time_s": round(time.perf_counter() - t0, 2),
        "cameras": per_cam,
        "not_placed": not_placed,
    }
    calibration = Calibration(tuple(calibrated), {"report": report})
    return CalibrationResult(calibration, report, residuals)


def _rmse(err: np.ndarray) -> float:
    """Root mean square of per-corner errors (px), from the errors themselves, not from their mean."""
    return float(np.sqrt(np.mean(np.square(err))))


def _found_nowhere(board: Board, name: str, cam: CameraDetections) -> str:
    """The error for a camera whose images hold no board: what was searched (polarities) and the
    board as configured, so a lab can hold the numbers against its printout."""
    if cam.both_polarities:
        tried = "searched as given and inverted (white on black)"
    elif board.kind == "checkerboard":
        tried = "a checkerboard is found in either polarity"
    elif board.inverted:
        tried = "searched inverted only (the board is marked inverted)"
    else:
        tried = ("searched as given only, not inverted (a board printed white on black needs the "
                 "inverted flag)")
    hint = ("squares across and down, marker length, dictionary" if board.kind == "charuco"
            else "inner corners across and down, not squares")
    return (f"board {board.describe()} found in 0 of {cam.n_images} images of camera {name}: check the board "
            f"definition ({hint}) against the printout: configured {board.describe_size()}; {tried}")


# ---------------------------------------------------------------------- aniposelib-style error


@dataclass(frozen=True)
class TriangulatedError:
    """Reprojection error of board corners triangulated from all cameras that see them
    (aniposelib's measure: DLT on undistorted points, reproject, pixel distance)."""

    per_camera_mean_px: dict[str, float]
    """Camera -> mean error of its observations, px."""
    per_camera_median_px: dict[str, float]
    points: int
    """Corners triangulated (seen by 2+ cameras in one frame)."""
    point_median_px: float
    """Median over corners of the mean error over the cameras seeing it: the number aniposelib's
    ``calibrate_rows`` prints and returns (it takes it on a random sample of up to ~1000 corners)."""
    point_mean_px: float
    """Mean over corners of the same."""

    def summary(self) -> dict[str, Any]:
        return {"points": self.points, "point_median_px": round(self.point_median_px, 4),
                "point_mean_px": round(self.point_mean_px, 4),
                "per_camera_mean_px": {k: round(v, 4) for k, v in self.per_camera_mean_px.items()}}


def board_error(calibration: Calibration,
                detections: Mapping[str, CameraDetections | Mapping[int, Detection]],
                board: Board) -> TriangulatedError:
    """Score ``calibration`` on board detections, aniposelib's way.

    For every frame seen by two or more of the calibration's cameras, each corner seen by two or
    more of them is triangulated (linear DLT on undistorted, normalized points, all views equal)
    and reprojected into each camera that saw it. ``detections``: camera name ->
    :class:`CameraDetections` or {frame key: :class:`Detection`}; cameras absent from either side
    are left out. ``board`` gives the number of corner ids.
    """
    names = [n for n in calibration.names if n in detections]
    frames = {n: (d.frames if isinstance(d, CameraDetections) else d) for n, d in detections.items()}
    keys = sorted({k for n in names for k in frames[n]})
    n_pts = len(keys) * board.n_corners
    px = np.full((len(names), n_pts, 2), np.nan)
    for c, n in enumerate(names):
        for j, k in enumerate(keys):
            det = frames[n].get(k)
            if det is not None:
                px[c, j * board.n_corners + det.ids] = det.image_points_px
    seen = np.isfinite(px[:, :, 0])
    multi = seen.sum(axis=0) >= 2
    px, seen = px[:, multi], seen[:, multi]
    err = np.full(seen.shape, np.nan)
    if px.shape[1]:
        # Plain DLT, every view equal, none dropped: the score aniposelib reports.
        tri = Triangulator(calibration.subset(names),
                           TriangulationConfig(min_score=0.0, max_error_px=1e12, weighted=False))
        xyz = tri.triangulate(px).xyz
        err[seen] = np.linalg.norm(tri.project(xyz) - px, axis=-1)[seen]
    per_point = np.nanmean(err, axis=0) if px.shape[1] else np.empty(0)
    nan = float("nan")
    return TriangulatedError(
        {n: float(np.nanmean(err[c])) if seen[c].any() else nan for c, n in enumerate(names)},
        {n: float(np.nanmedian(err[c])) if seen[c].any() else nan for c, n in enumerate(names)},
        int(px.shape[1]),
        float(np.median(per_point)) if len(per_point) else nan,
        float(np.mean(per_point)) if len(per_point) else nan,
    )
