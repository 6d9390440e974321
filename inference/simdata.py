"""Training and test frames rendered by the simulated rig, with exact ground truth.

Views come from rings of 2 to 6 cameras at the rig's frame size (the demo's ``--cameras``
changes the ring), the animal from motion seeds that never include seed 0 (the demo's own
animal), so errors measured on the demo are on motion the model never saw.

A session's live keypoints are checked against the animal at each pulse as the simulated
cameras showed it (:func:`rigstream.acquisition.sim_camera.sim_pose_time_s`: the pulse's time,
or its place in the loop when the cameras pre-render one).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from rigstream.acquisition import sim_world
from rigstream.inference.metrics import error_stats
from rigstream.inference.preprocess import ViewTransform

TRAIN_SEEDS = range(1, 200)
TEST_SEEDS = range(10_000, 10_050)
RING_SIZES = (2, 3, 4, 5, 6)


class SimFrames:
    """Draws (model-input image, keypoints) pairs from rendered simulated views."""

    def __init__(self, frame_wh: tuple[int, int], input_wh: tuple[int, int], channels: int = 1,
                 seeds: range = TRAIN_SEEDS, ring_sizes: tuple[int, ...] = RING_SIZES,
                 max_t_s: float = 600.0) -> None:
        fw, fh = frame_wh
        self.channels = channels
        self.seeds = seeds
        self.max_t_s = max_t_s
        self.renderers: list[sim_world.ViewRenderer] = []
        for n in ring_sizes:
            names = [f"cam{i}" for i in range(n)]
            for cam in sim_world.ring_of_cameras(names, fw, fh):
                self.renderers.append(sim_world.ViewRenderer(cam, channels=channels))
        self.transform = ViewTransform.make("sim", frame_wh, input_wh)
        self._frame = np.zeros((fh, fw) + ((3,) if channels == 3 else ()), np.uint8)
        self._motions: dict[int, sim_world.AnimalMotion] = {}

    def motion(self, seed: int) -> sim_world.AnimalMotion:
        m = self._motions.get(seed)
        if m is None:
            m = self._motions[seed] = sim_world.AnimalMotion(seed=seed)
        return m

    def render(self, renderer: int, seed: int, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Full frame (a copy) and its (K, 2) ground-truth keypoints in frame pixels."""
        kp = self.renderers[renderer].render(self.motion(seed).pose_at(t_s), self._frame)
        return self._frame.copy(), kp

    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        r = int(rng.integers(len(self.renderers)))
        seed = int(self.seeds[int(rng.integers(len(self.seeds)))])
        frame, kp = self.render(r, seed, float(rng.uniform(0, self.max_t_s)))
        return self.to_input(frame), self.transform.to_input(kp).astype(np.float32)

    def to_input(self, frame: np.ndarray) -> np.ndarray:
        if self.transform.identity:
            return frame
        import cv2

        return cv2.resize(frame, self.transform.input_wh, interpolation=cv2.INTER_AREA)

    def test_set(self, n: int, seed: int = 1,
                 seeds: range = TEST_SEEDS) -> tuple[list[np.ndarray], np.ndarray]:
        """``n`` frames (model-input scale) from motion ``seeds`` (default: ones never trained
        on), and (n, K, 2) keypoints in frame pixels."""
        rng = np.random.default_rng(seed)
        images, kps = [], []
        for _ in range(n):
            r = int(rng.integers(len(self.renderers)))
            s = int(seeds[int(rng.integers(len(seeds)))])
            frame, kp = self.render(r, s, float(rng.uniform(0, self.max_t_s)))
            images.append(self.to_input(frame))
            kps.append(kp)
        return images, np.stack(kps)


def pose2d_errors(rig: Any, pose_csv: Path) -> dict[str, Any]:
    """Error of a session's live 2D keypoints (``pose2d.csv``) against the simulated rig's
    ground truth: per frame set and camera, the exact projection of the animal at that pulse."""
    with open(pose_csv, newline="") as f:
        reader = csv.reader(f)
        head = next(reader)
        rows = list(reader)
    kp_cols = [i for i, name in enumerate(head) if name.endswith("_x")]
    cam_col, n_col = head.index("camera"), head.index("trigger_index")
    cameras = [row[cam_col] for row in rows]
    index = np.array([int(row[n_col]) for row in rows], np.int64)
    xy = np.array([[[float(row[i] or "nan"), float(row[i + 1] or "nan")] for i in kp_cols] for row in rows],
                  np.float64).reshape(len(rows), len(kp_cols), 2)
    return pose2d_errors_of(rig, index, cameras, xy)


def pose2d_errors_of(rig: Any, trigger_index: np.ndarray, cameras: list[str],
                     xy: np.ndarray) -> dict[str, Any]:
    """Error of 2D keypoints against the simulated animal: row ``i`` is camera ``cameras[i]``'s
    (K, 2) keypoints (frame pixels, NaN where none) at pulse ``trigger_index[i]``; rows without a
    finite point do not count as posed."""
    from rigstream.acquisition.sim_camera import rig_cameras, sim_pose_time_s

    views = rig_cameras(rig)
    motion = sim_world.AnimalMotion()
    posed = np.isfinite(xy).all(axis=2).any(axis=1)
    if not posed.any():
        return {"framesets": 0, "median_px": None, "p95_px": None, "mean_px": None}
    errors = np.full(xy.shape[:2], np.nan)
    truth_cache: dict[int, np.ndarray] = {}
    for i in np.nonzero(posed)[0]:
        n = int(trigger_index[i])
        pose = truth_cache.get(n)
        if pose is None:
            pose = truth_cache[n] = motion.pose_at(sim_pose_time_s(rig, n))
        errors[i] = np.linalg.norm(xy[i] - views[cameras[i]].project(pose), axis=1)
    e = errors[np.isfinite(errors)]
    stats = error_stats(e)
    return {"framesets": len(truth_cache), "points": stats.pop("n"), **stats}


def pose3d_errors(rig: Any, points_csv: Path) -> dict[str, Any]:
    """Error of a session's live 3D keypoints (anipose CSV, ``fnum`` = trigger index) against
    the simulated animal at each pulse, mm; the calibration must be in the simulated world's
    frame (the simulated rig's is)."""
    from rigstream.acquisition.sim_camera import sim_pose_times_s
    from rigstream.inference.anipose_csv import read_points3d_csv

    pts = read_points3d_csv(points_csv)
    if len(pts.frames) == 0:
        return {"framesets": 0, "points": 0}
    motion = sim_world.AnimalMotion()
    truth = motion.poses_at(sim_pose_times_s(rig, np.asarray(pts.frames)))
    names = list(sim_world.KEYPOINTS)
    order = [names.index(k) for k in pts.keypoints]
    err = np.linalg.norm(pts.xyz - truth[:, order], axis=-1)  # (F, K), NaN without a point
    per_kp = {k: round(float(np.nanmedian(err[:, i])), 2) if np.isfinite(err[:, i]).any() else None
              for i, k in enumerate(pts.keypoints)}
    e = err[np.isfinite(err)]
    out: dict[str, Any] = {"framesets": len(pts.frames), "points": int(e.size),
                           "points_missing": int(err.size - e.size)}
    if e.size:
        out.update(median_mm=round(float(np.median(e)), 3), p95_mm=round(float(np.percentile(e, 95)), 3),
                   mean_mm=round(float(e.mean()), 3))
    out["median_mm_per_keypoint"] = per_kp
    return out
