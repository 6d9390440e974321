"""Virtual cameras for the simulated arena.

:func:`ring_of_cameras` builds calibrated pinhole cameras (:class:`rigstream.calibration.
CalibratedCamera`) with mild OpenCV barrel distortion, evenly spaced on a ring around the
:class:`.body.Arena` and aimed at its centre, with focal lengths chosen so the whole arena fits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from rigstream.acquisition.sim_world.body import Arena
from rigstream.calibration import CalibratedCamera


def _look_at(center_mm: np.ndarray, target_mm: np.ndarray) -> np.ndarray:
    """World -> camera rotation for a camera at ``center_mm`` looking at ``target_mm``
    with world z up in the image (OpenCV axes: x right, y down, z forward). (3, 3)."""
    forward = target_mm - center_mm
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    if np.linalg.norm(right) < 1e-6:  # looking straight down
        right = np.array([0.0, -1.0, 0.0])
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


def ring_of_cameras(
    names: Sequence[str],
    width: int,
    height: int,
    arena: Arena = Arena(),  # noqa: B008 (Arena is frozen)
    radius_mm: float = 900.0,
    height_mm: float = 700.0,
    fov_deg: float = 55.0,
) -> list[CalibratedCamera]:
    """Cameras evenly spaced on a circle around the arena, all looking at its centre.

    Camera ``i`` sits at azimuth ``360 * i / n`` degrees (the first on the +x axis),
    ``radius_mm`` from the arena centre, alternately 60 mm above and below ``height_mm``
    (a spread in elevation helps triangulation), aimed 60 mm above the floor centre. The
    focal length gives a horizontal field of view of ``fov_deg``, shortened if the whole
    arena (floor and wall tops) would not otherwise fit (wide sensors such as 16:9). The
    principal point is near the image centre and lenses have mild barrel distortion
    (k1 about -0.08), each camera slightly different. Positions and orientations depend
    only on the camera count and order, not on the resolution.
    """
    n = len(names)
    if n == 0:
        raise ValueError("ring_of_cameras: expected at least one camera name, got none")
    if len(set(names)) != n:
        raise ValueError(f"ring_of_cameras: expected unique camera names, got {list(names)}")
    if not 0.0 < fov_deg < 170.0:
        raise ValueError(f"ring_of_cameras: expected 0 < fov_deg < 170, got {fov_deg}")
    half_diag_mm = 0.5 * math.hypot(arena.width_mm, arena.depth_mm)
    if not radius_mm > half_diag_mm:
        raise ValueError(
            f"ring_of_cameras: expected radius_mm > {half_diag_mm:.0f} (outside the arena), "
            f"got {radius_mm}"
        )
    target = np.array([0.0, 0.0, 60.0])
    poses = []
    for i in range(n):
        azimuth = 2 * math.pi * i / n
        lift_mm = 0.0 if n == 1 else (60.0 if i % 2 == 0 else -60.0)
        center = np.array(
            [radius_mm * math.cos(azimuth), radius_mm * math.sin(azimuth), height_mm + lift_mm]
        )
        poses.append((center, _look_at(center, target)))
    # Focal length from the field of view, shortened where the arena box (floor and wall
    # tops) would not fit the image (wide or tall sensors), with a 4% margin.
    focal_px = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    hw, hd = 0.5 * arena.width_mm, 0.5 * arena.depth_mm
    box = np.array([[x, y, z] for x in (-hw, hw) for y in (-hd, hd) for z in (0.0, arena.wall_mm)])
    for center, rot in poses:
        cam = (box - center) @ rot.T
        if np.any(cam[:, 2] <= 0.0):
            continue  # the camera is inside the box's extent; nothing sensible to fit
        norm = np.abs(cam[:, :2] / cam[:, 2:3]).max(axis=0)
        focal_px = min(focal_px, 0.46 * width / norm[0], 0.46 * height / norm[1])
    cameras = []
    for i, (name, (center, rot)) in enumerate(zip(names, poses, strict=True)):
        # Small per-camera differences, as a real calibration would find.
        wobble = math.sin(1.7 * i + 0.3)
        f_px = focal_px * (1.0 + 0.004 * wobble)
        cx_px = (width - 1) / 2 + 0.01 * width * wobble
        cy_px = (height - 1) / 2 - 0.008 * height * wobble
        matrix = np.array([[f_px, 0.0, cx_px], [0.0, f_px, cy_px], [0.0, 0.0, 1.0]])
        dist = np.array([-0.08 + 0.015 * wobble, 0.02, 0.0, 0.0, 0.0])
        cameras.append(
            CalibratedCamera(
                name=str(name),
                width=int(width),
                height=int(height),
                matrix=matrix,
                dist=dist,
                rvec=cv2.Rodrigues(rot)[0].reshape(3),
                tvec=-rot @ center,
            )
        )
    return cameras
