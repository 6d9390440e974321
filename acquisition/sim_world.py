"""A simulated animal in an arena, seen through calibrated virtual cameras.

The simulated camera renders this scene at each trigger, so every frame comes with
ground-truth keypoints (the exact distorted projection of the 3D pose).

World frame: millimetres, origin at the centre of the arena floor, ``z`` up, floor at
``z = 0``. The arena is a rectangle of ``width_mm`` (along ``x``) by ``depth_mm`` (along
``y``) with clear walls ``wall_mm`` high, so every camera sees the whole floor through them.

- :class:`AnimalMotion`: a procedurally animated rat (walks with a trotting gait, turns
  smoothly, stays away from the walls, rears now and then). The pose is a pure function of
  ``(seed, t_s)``, so processes that render the same trigger time agree exactly.
- :func:`ring_of_cameras`: calibrated pinhole cameras (:class:`rigstream.calibration.
  CalibratedCamera`) with OpenCV distortion, placed on a ring around the arena.
- :class:`ViewRenderer`: draws the animal into a preallocated frame over a background that
  is ray-cast once per camera (textured floor, room floor, wall edges).

Only numpy, OpenCV and the standard library are used.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from rigstream.calibration import CalibratedCamera

logger = logging.getLogger(__name__)

KEYPOINTS: tuple[str, ...] = (
    "snout",
    "left_ear",
    "right_ear",
    "neck",
    "spine_mid",
    "tail_base",
    "tail_mid",
    "tail_tip",
    "left_forepaw",
    "right_forepaw",
    "left_hindpaw",
    "right_hindpaw",
)
"""Keypoint names, in the order of the rows of every pose array."""

SKELETON: tuple[tuple[str, str], ...] = (
    ("snout", "left_ear"),
    ("snout", "right_ear"),
    ("left_ear", "neck"),
    ("right_ear", "neck"),
    ("neck", "spine_mid"),
    ("spine_mid", "tail_base"),
    ("tail_base", "tail_mid"),
    ("tail_mid", "tail_tip"),
    ("neck", "left_forepaw"),
    ("neck", "right_forepaw"),
    ("tail_base", "left_hindpaw"),
    ("tail_base", "right_hindpaw"),
)
"""Edges between keypoints, for drawing and for skeleton-aware models."""

LEFT_RIGHT: tuple[tuple[str, str], ...] = (
    ("left_ear", "right_ear"),
    ("left_forepaw", "right_forepaw"),
    ("left_hindpaw", "right_hindpaw"),
)
"""Keypoint pairs whose labels swap under a horizontal image flip."""

_KP = {name: i for i, name in enumerate(KEYPOINTS)}
_N_KP = len(KEYPOINTS)

# Body-frame rest pose, mm: x forward, y to the animal's left, z up; origin on the floor
# under spine_mid. Snout to tail base is 180 mm (an adult rat without its tail).
_REST_MM = np.array(
    [
        [95.0, 0.0, 32.0],  # snout
        [62.0, 14.0, 52.0],  # left_ear
        [62.0, -14.0, 52.0],  # right_ear
        [45.0, 0.0, 42.0],  # neck
        [0.0, 0.0, 45.0],  # spine_mid
        [-85.0, 0.0, 30.0],  # tail_base
        [-150.0, 0.0, 10.0],  # tail_mid
        [-212.0, 0.0, 3.0],  # tail_tip
        [45.0, 18.0, 0.0],  # left_forepaw
        [45.0, -18.0, 0.0],  # right_forepaw
        [-60.0, 26.0, 0.0],  # left_hindpaw
        [-60.0, -26.0, 0.0],  # right_hindpaw
    ]
)
# Keypoint groups as slices of KEYPOINTS (cheap views, no fancy indexing per call).
_HEAD = slice(0, 3)  # snout, ears
_FRONT = slice(0, 5)  # snout .. spine_mid: pitches up about the hips when rearing
_TAIL = slice(6, 8)  # tail_mid, tail_tip
_PAWS = slice(8, 12)  # LF, RF, LH, RH
_FOREPAWS = slice(8, 10)
_PAW_INDEX = (8, 9, 10, 11)
_NECK_PIVOT_MM = np.array([45.0, 0.0])  # head yaw pivot (x, y), body frame
_HIP_PIVOT_MM = np.array([-55.0, 35.0])  # rearing pivot (x, z), body frame
_FOREPAW_TUCK_MM = np.array([[62.0, 13.0, 18.0], [62.0, -13.0, 18.0]])  # paws at the chest
# Trot: diagonal pairs in phase (LF with RH, RF with LH), pairs half a cycle apart.
_PAW_PHASE_RAD = np.array([0.0, math.pi, math.pi, 0.0])
_STRIDE_HALF_MM = 18.0  # half the fore-aft paw excursion at 120 mm/s
_STEP_LIFT_MM = 10.0
_TAIL_WAVE_MM = np.array([8.0, 22.0])  # lateral tail sway, tail_mid and tail_tip
_BEND_SPEED_MM_S = 120.0  # body curvature = turning rate / this speed, before saturation
_BODY_REACH_MM = 110.0  # how far a body keypoint (not the tail) can be from spine_mid
_WALL_CLEARANCE_MM = 5.0  # keypoints are kept this far inside the walls (the tail bends)


@dataclass(frozen=True)
class Arena:
    """The open-field arena: a rectangular floor with walls, origin at the floor centre."""

    width_mm: float = 600.0
    """Extent along world x."""
    depth_mm: float = 600.0
    """Extent along world y."""
    wall_mm: float = 300.0
    """Wall height."""

    def __post_init__(self) -> None:
        for name in ("width_mm", "depth_mm"):
            value = getattr(self, name)
            if not value >= 2 * _BODY_REACH_MM + 40.0:
                raise ValueError(
                    f"Arena.{name}: expected at least {2 * _BODY_REACH_MM + 40.0:g} mm "
                    f"(room for a rat to turn), got {value!r}"
                )
        if not self.wall_mm > 0:
            raise ValueError(f"Arena.wall_mm: expected a positive height, got {self.wall_mm!r}")


# --------------------------------------------------------------------------------------
# Motion
# --------------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _hash_keys(seed: int, salts: int) -> np.ndarray:
    """(salts, 1) uint64 keys for :func:`_hash_unit`, one per independent stream."""
    return np.array(
        [
            (seed * 0x632BE59BD9B4E019 + (j + 1) * 0x85EBCA77C2B2AE63) % (1 << 64)
            for j in range(salts)
        ],
        dtype=np.uint64,
    )[:, None]


def _hash_unit(keys: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Deterministic uniform numbers in [0, 1) for integer ``index`` (splitmix64).

    ``keys``: (S, 1) uint64 from :func:`_hash_keys`; ``index``: (T,) int64. Returns (S, T)
    float64, one independent row per key. Pure: the same (keys, index) gives the same
    numbers on every call and in every process.
    """
    with np.errstate(over="ignore"):
        x = index.astype(np.int64).view(np.uint64) * _GOLDEN + keys
        x ^= x >> np.uint64(30)
        x *= _MIX1
        x ^= x >> np.uint64(27)
        x *= _MIX2
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _unit_clip(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, 0.0), 1.0)


def _plateau(u: np.ndarray, length: np.ndarray | float, edge: float) -> np.ndarray:
    """Smooth bump: 0 outside [0, length], raised-cosine edges of ``edge`` s, 1 between."""
    rise = 0.5 - 0.5 * np.cos(np.pi * _unit_clip(u / edge))
    fall = 0.5 - 0.5 * np.cos(np.pi * _unit_clip((length - u) / edge))
    return np.minimum(rise, fall)


def _plateau_integral(u: np.ndarray, length: float, edge: float) -> np.ndarray:
    """Integral of :func:`_plateau` from -inf to ``u``; ``length - edge`` once past the end."""
    rise = edge * _unit_clip(u / edge)
    fall = edge * _unit_clip((length - u) / edge)
    middle = np.minimum(np.maximum(u - edge, 0.0), length - 2 * edge)
    k = np.pi / edge
    return 0.5 * (rise - np.sin(k * rise) / k) + middle + 0.5 * (edge - fall + np.sin(k * fall) / k)


def _sines(
    tau: np.ndarray, amp: np.ndarray, omega: np.ndarray, phase: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum of sines and its first two derivatives. ``tau``: (T,); params: (M,). -> 3 x (T,)."""
    arg = tau[:, None] * omega + phase
    s, c = np.sin(arg), np.cos(arg)
    return s @ amp, c @ (amp * omega), -(s @ (amp * omega * omega))


class AnimalMotion:
    """A procedurally animated rat walking around an arena.

    The path is a smooth rosette around the arena centre: the polar radius and angle are
    sums of sines with the angle always advancing, so the walking speed never reaches zero,
    the heading turns smoothly and the path stays clear of the walls (it turns away from a
    wall as the radius passes its maximum). The body bends into the turns, the
    paws trot at 3.5-4.5 Hz with strides scaled by speed, the head sways and sniffs, and the
    tail trails and bends against a wall if it touches one.

    Once per window of 10-14 s the rat stops and rears for 1-2 s: the body pitches up
    65-80 degrees about the hips, lifting the snout to about 180 mm and the forepaws to
    about 140 mm. Walking is slowed with a bump of fixed area, so the path clock has a
    closed form and :meth:`pose_at` stays a pure function of ``t_s``.
    """

    _SLOW_LEN_S = 2.6  # the walking slow-down around a rear
    _SLOW_EDGE_S = 0.4
    _SLOW_DEPTH = 0.95  # fraction of walking speed removed at the slowest
    _REAR_DELAY_S = 0.3  # rear starts this long after the slow-down starts
    _REAR_EDGE_S = 0.4

    def __init__(self, arena: Arena = Arena(), seed: int = 0) -> None:
        self.arena = arena
        self.seed = int(seed)
        rng = np.random.default_rng([0x5EED, self.seed % (1 << 64)])
        # Path: polar radius in [0.29, 0.95] of the reachable half-extent.
        self._half_x_mm = 0.5 * arena.width_mm - _BODY_REACH_MM
        self._half_y_mm = 0.5 * arena.depth_mm - _BODY_REACH_MM
        self._radius0 = 0.62
        self._r_amp = np.array([0.17, 0.10, 0.06]) * rng.uniform(0.85, 1.0, 3)
        self._r_omega = np.array([0.55, 1.1, 1.9]) * rng.uniform(0.8, 1.25, 3)
        self._r_phase = rng.uniform(0.0, 2 * np.pi, 3)
        # Polar angle: omega0 * tau + wobble, with |wobble'| < 0.55 omega0 so it always advances.
        self._direction = 1.0 if rng.random() < 0.5 else -1.0
        self._omega0 = rng.uniform(0.5, 0.8)
        a_omega = np.array([0.35, 0.9]) * rng.uniform(0.8, 1.25, 2)
        self._a_omega = a_omega
        self._a_amp = self._omega0 * np.array([0.35, 0.2]) / a_omega
        self._a_phase = rng.uniform(0.0, 2 * np.pi, 2)
        self._angle0 = rng.uniform(0.0, 2 * np.pi)
        # Gait, head, tail.
        self._step_hz = rng.uniform(3.5, 4.5)
        # Free-running oscillators of real time: head yaw (slow, fast), sniffing, tail wave
        # (tail_mid, then tail_tip lagging).
        tail_hz, tail_phase = rng.uniform(0.6, 1.0), rng.uniform(0.0, 2 * np.pi)
        self._osc_hz = np.array(
            [
                rng.uniform(0.09, 0.16),
                rng.uniform(0.55, 0.8),
                rng.uniform(1.5, 2.2),
                tail_hz,
                tail_hz,
            ]
        )
        self._osc_phase = np.array(
            [
                rng.uniform(0.0, 2 * np.pi),
                rng.uniform(0.0, 2 * np.pi),
                0.0,
                tail_phase,
                tail_phase - 0.8,
            ]
        )
        # Rearing schedule: one rear per window.
        self._rear_window_s = rng.uniform(10.0, 14.0)
        self._rear_keys = _hash_keys(self.seed, 3)

    # -- helpers -------------------------------------------------------------------

    def _rear_schedule(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Path clock and rearing state. ``t``: (T,) s -> tau (T,) s, slow (T,) in [0, 1],
        pitch (T,) rad."""
        window = self._rear_window_s
        k = np.floor(t / window)
        u_start, u_len, u_pitch = _hash_unit(self._rear_keys, k.astype(np.int64))
        slow_len, edge = self._SLOW_LEN_S, self._SLOW_EDGE_S
        u = t - (k * window + 0.5 + u_start * (window - slow_len - 1.0))
        slowed = k * (slow_len - edge) + _plateau_integral(u, slow_len, edge)
        tau = t - self._SLOW_DEPTH * slowed
        slow = _plateau(u, slow_len, edge)
        rear = _plateau(u - self._REAR_DELAY_S, 1.0 + u_len, self._REAR_EDGE_S)
        pitch = rear * np.radians(65.0 + 15.0 * u_pitch)
        return tau, slow, pitch

    def _path(self, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Path at clock ``tau`` (T,) -> xy_mm (T,2), heading_rad (T,), turn_rad_s (T,),
        speed_mm_s (T,) (per unit of path clock)."""
        r, dr, ddr = _sines(tau, self._r_amp, self._r_omega, self._r_phase)
        r = r + self._radius0
        a, da, dda = _sines(tau, self._a_amp, self._a_omega, self._a_phase)
        a = self._direction * (a + self._omega0 * tau + self._angle0)
        da = self._direction * (da + self._omega0)
        dda = self._direction * dda
        ca, sa = np.cos(a), np.sin(a)
        sx, sy = self._half_x_mm, self._half_y_mm
        x, y = sx * r * ca, sy * r * sa
        # d/dtau of (r cos a, r sin a), then the second derivative.
        vx = sx * (dr * ca - r * da * sa)
        vy = sy * (dr * sa + r * da * ca)
        ax = sx * (ddr * ca - 2 * dr * da * sa - r * dda * sa - r * da * da * ca)
        ay = sy * (ddr * sa + 2 * dr * da * ca + r * dda * ca - r * da * da * sa)
        speed = np.hypot(vx, vy)
        heading = np.arctan2(vy, vx)
        # Turning rate, regularised so that it stays gentle when the animal barely moves.
        turn = (vx * ay - vy * ax) / (speed * speed + 30.0**2)
        return np.stack([x, y], axis=-1), heading, turn, speed

    # -- public --------------------------------------------------------------------

    def pose_at(self, t_s: float) -> np.ndarray:
        """Pose at time ``t_s`` (s). Returns (K, 3) float64 mm, world frame, rows in
        :data:`KEYPOINTS` order. A pure function of (seed, t_s)."""
        return self.poses_at(np.array([float(t_s)]))[0]

    def poses_at(self, t_s: np.ndarray) -> np.ndarray:
        """Poses at times ``t_s``: (T,) float64 s. Returns (T, K, 3) float64 mm, world frame."""
        t = np.asarray(t_s, dtype=np.float64)
        if t.ndim != 1:
            raise ValueError(f"poses_at: expected t_s of shape (T,), got shape {t.shape}")
        n = t.shape[0]
        tau, slow, pitch = self._rear_schedule(t)
        xy, heading, turn, speed = self._path(tau)
        walking = (1.0 - slow)[:, None]  # 0 while stopped for a rear
        # Body frame, one (T, K) array per axis.
        bx = np.repeat(_REST_MM[None, :, 0], n, axis=0)
        by = np.repeat(_REST_MM[None, :, 1], n, axis=0)
        bz = np.repeat(_REST_MM[None, :, 2], n, axis=0)

        # Gait: paws swing forward (lifted) then push back (on the floor).
        stride = _STRIDE_HALF_MM * np.minimum(
            np.maximum(speed * (1.0 - self._SLOW_DEPTH * slow) / 120.0, 0.25), 1.3
        )
        gait = (2 * np.pi * self._step_hz) * tau[:, None] + _PAW_PHASE_RAD
        bx[:, _PAWS] += stride[:, None] * np.sin(gait)
        bz[:, _PAWS] += _STEP_LIFT_MM * walking * np.maximum(np.cos(gait), 0.0)

        # Head: slow yaw sway about the neck and a faster sniffing bob; tail: a lateral wave
        # growing towards the tip.
        osc = np.sin((2 * np.pi) * t[:, None] * self._osc_hz + self._osc_phase)
        yaw = osc[:, 0:1] * 0.22 + osc[:, 1:2] * 0.1
        cy, sy = np.cos(yaw), np.sin(yaw)
        hx = bx[:, _HEAD] - _NECK_PIVOT_MM[0]
        hy = by[:, _HEAD] - _NECK_PIVOT_MM[1]
        bx[:, _HEAD] = _NECK_PIVOT_MM[0] + cy * hx - sy * hy
        by[:, _HEAD] = _NECK_PIVOT_MM[1] + sy * hx + cy * hy
        bz[:, 0] += 5.0 * osc[:, 2]
        by[:, _TAIL] += _TAIL_WAVE_MM * osc[:, 3:5]

        # Rearing: forepaws tuck to the chest, the front body pitches up about the hips.
        blend = np.minimum(pitch * (1.0 / np.radians(65.0)), 1.0)[:, None]
        for axis, b in enumerate((bx, by, bz)):
            b[:, _FOREPAWS] += blend * (_FOREPAW_TUCK_MM[:, axis] - b[:, _FOREPAWS])
        cp, sp = np.cos(pitch)[:, None], np.sin(pitch)[:, None]
        for part in (_FRONT, _FOREPAWS):
            px = bx[:, part] - _HIP_PIVOT_MM[0]
            pz = bz[:, part] - _HIP_PIVOT_MM[1]
            bx[:, part] = _HIP_PIVOT_MM[0] + cp * px - sp * pz
            bz[:, part] = _HIP_PIVOT_MM[1] + sp * px + cp * pz

        # Bend the body along an arc into the turn (the tail trails the path); the curvature
        # saturates smoothly at 1/140 mm.
        kappa = np.tanh(turn * (140.0 / _BEND_SPEED_MM_S)) * (1.0 / 140.0)
        kappa = np.where(np.abs(kappa) < 1e-9, 1e-9, kappa)[:, None]
        bend = kappa * bx
        sb, cb = np.sin(bend), np.cos(bend)
        arc_x = sb / kappa - by * sb
        arc_y = 2.0 * np.sin(0.5 * bend) ** 2 / kappa + by * cb

        # Place in the world and keep everything inside the walls.
        ch, sh = np.cos(heading)[:, None], np.sin(heading)[:, None]
        out = np.empty((n, _N_KP, 3))
        lim_x = 0.5 * self.arena.width_mm - _WALL_CLEARANCE_MM
        lim_y = 0.5 * self.arena.depth_mm - _WALL_CLEARANCE_MM
        out[..., 0] = np.minimum(np.maximum(xy[:, 0:1] + ch * arc_x - sh * arc_y, -lim_x), lim_x)
        out[..., 1] = np.minimum(np.maximum(xy[:, 1:2] + sh * arc_x + ch * arc_y, -lim_y), lim_y)
        out[..., 2] = np.maximum(bz, 0.0)
        return out


# --------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------


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
    arena: Arena = Arena(),
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


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------

# Colours: (mono8 grey level, BGR). The animal is a dark (hooded) rat on light bedding (grey
# 130-210); ears and paws are brighter than any floor pixel, so every keypoint stands out.
_PALETTE: dict[str, tuple[int, tuple[int, int, int]]] = {
    "body": (48, (38, 48, 62)),
    "body_light": (68, (54, 68, 88)),
    "head": (56, (44, 55, 70)),
    "head_light": (76, (62, 76, 96)),
    "ear": (228, (200, 208, 252)),
    "paw": (248, (228, 234, 255)),
    "leg": (70, (58, 68, 86)),
    "tail": (98, (96, 104, 132)),
    "eye": (12, (10, 10, 12)),
    "shadow": (118, (112, 118, 120)),
    "wall_top": (238, (236, 236, 232)),
    "wall_edge": (210, (205, 205, 200)),
}
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT
_NEAR_MM = 30.0  # primitives closer to the camera than this are not drawn

# Spine samples (keypoint a, keypoint b, fraction, radius mm), tail base to snout: the body
# is drawn as overlapping spheres along them, the head as a tapering run of smaller ones.
_SPINE: list[tuple[str, str, float, float]] = []
for _a, _b, _r0, _r1, _count in (
    ("tail_base", "spine_mid", 26.0, 35.0, 3),
    ("spine_mid", "neck", 35.0, 23.0, 3),
    ("neck", "snout", 21.0, 7.0, 4),
):
    for _j in range(_count):
        _f = _j / _count
        _SPINE.append((_a, _b, _f, _r0 + (_r1 - _r0) * _f))
_SPINE.append(("snout", "snout", 0.0, 6.0))
_SPINE_R_MM = np.array([s[3] for s in _SPINE])
_N_SPINE = len(_SPINE)
_N_TRUNK = 6  # spine samples [0, 6) are the trunk, the rest the head
_SHADOW_N = 16
_SHADOW_ANGLE = np.linspace(0.0, 2 * np.pi, _SHADOW_N, endpoint=False)
_SHADOW_COS, _SHADOW_SIN = np.cos(_SHADOW_ANGLE), np.sin(_SHADOW_ANGLE)

# Layout of the per-render 3D point batch (rows of ViewRenderer._points).
_P_KP = 0  # keypoints
_P_SPINE = _P_KP + _N_KP  # sphere centres
_P_KNEE = _P_SPINE + _N_SPINE  # upper ends of the legs, one per paw
_P_EYE = _P_KNEE + 4  # left, right eye
_P_TAIL0 = _P_EYE + 2  # where the tail leaves the body
_P_LIGHT = _P_TAIL0 + 1  # highlight centres, one per sphere
_P_SHADOW = _P_LIGHT + _N_SPINE  # floor polygon
_P_TOTAL = _P_SHADOW + _SHADOW_N


def _blend_matrix() -> np.ndarray:
    """(_P_LIGHT, K) weights: rows [0, _P_LIGHT) of the point batch as linear combinations
    of the keypoints (pose_mm (K, 3) -> W @ pose_mm)."""
    w = np.zeros((_P_LIGHT, _N_KP))
    w[_P_KP:_P_SPINE] = np.eye(_N_KP)
    for i, (a, b, f, _) in enumerate(_SPINE):
        w[_P_SPINE + i, _KP[a]] += 1.0 - f
        w[_P_SPINE + i, _KP[b]] += f
    # Legs reach 45% of the way from each paw to the shoulders / the hips.
    for j, paw in enumerate(_PAW_INDEX):
        w[_P_KNEE + j, paw] += 0.55
        joint = ("neck", "spine_mid") if j < 2 else ("tail_base", "spine_mid")
        for name in joint:
            w[_P_KNEE + j, _KP[name]] += 0.45 * 0.5
    # Eyes: halfway from the snout to the ears' midpoint, 10 mm out to each side (the ears
    # are 28 mm apart in every pose), 3 mm down (added in _fill_points).
    for j, sign in enumerate((1.0, -1.0)):
        row = w[_P_EYE + j]
        row[_KP["snout"]] += 0.5
        row[_KP["left_ear"]] += 0.25 + sign * 10.0 / 28.0
        row[_KP["right_ear"]] += 0.25 - sign * 10.0 / 28.0
    w[_P_TAIL0, _KP["tail_base"]] = 0.7
    w[_P_TAIL0, _KP["tail_mid"]] = 0.3
    return w


_BLEND = _blend_matrix()
# Highlight offset from each sphere centre, in units of its radius: up (light from above).
_LIGHT_UP_MM = np.outer(_SPINE_R_MM, [0.0, 0.0, 0.35])


def _value_noise(rng: np.random.Generator, size: int, blur_px: float) -> np.ndarray:
    """(size, size) float32 smooth noise, zero mean, unit std, tileable-ish."""
    noise = rng.standard_normal((size, size)).astype(np.float32)
    pad = math.ceil(4 * blur_px)
    noise = cv2.GaussianBlur(np.pad(noise, pad, mode="wrap"), (0, 0), blur_px)[pad:-pad, pad:-pad]
    noise -= noise.mean()
    noise /= max(float(noise.std()), 1e-6)
    return noise


def _sample_tiled(
    noise: np.ndarray, x_mm: np.ndarray, y_mm: np.ndarray, cell_mm: float
) -> np.ndarray:
    """Sample a tiled noise image at world points (bilinear). Returns float32, shaped like
    ``x_mm``."""
    size = noise.shape[0]
    map_x = np.mod(x_mm / cell_mm, size).astype(np.float32)
    map_y = np.mod(y_mm / cell_mm, size).astype(np.float32)
    return cv2.remap(noise, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


class ViewRenderer:
    """Renders the arena and the animal as one virtual camera sees them.

    The background (floor, room, wall edges, vignetting) is ray-cast once in the
    constructor; :meth:`render` copies it into the caller's frame and draws the animal on
    top with OpenCV primitives, sorted back to front. Same pose, same bytes.

    ``seed`` picks the floor texture. :meth:`render` reuses a small internal point buffer,
    so use one renderer per thread.
    """

    def __init__(
        self, camera: CalibratedCamera, arena: Arena = Arena(), channels: int = 1, seed: int = 0
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"ViewRenderer: expected channels 1 or 3, got {channels!r}")
        self.camera = camera
        self.arena = arena
        self.channels = channels
        self.shape: tuple[int, ...] = (
            (camera.height, camera.width) if channels == 1 else (camera.height, camera.width, 3)
        )
        self._rot = camera.rotation
        self._center_mm = camera.center_mm
        self._focal_px = float(np.sqrt(camera.matrix[0, 0] * camera.matrix[1, 1]))
        self._colors = {
            name: ((grey,) if channels == 1 else tuple(bgr))
            for name, (grey, bgr) in _PALETTE.items()
        }
        self._points = np.zeros((_P_TOTAL, 3))  # per-render 3D point batch, mm
        started = time.perf_counter()
        self._background = self._build_background(seed)
        self._background.setflags(write=False)
        logger.debug(
            "background for %s (%dx%d) built in %.0f ms",
            camera.name,
            camera.width,
            camera.height,
            1e3 * (time.perf_counter() - started),
        )

    @property
    def background(self) -> np.ndarray:
        """The empty scene: (H, W) or (H, W, 3) uint8, read-only."""
        return self._background

    # -- background ---------------------------------------------------------------

    def _build_background(self, seed: int) -> np.ndarray:
        cam, arena = self.camera, self.arena
        h, w = cam.height, cam.width
        rng = np.random.default_rng([0xB6, int(seed) % (1 << 64)])
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        pix = np.stack([u, v], axis=-1).reshape(-1, 1, 2)
        norm = cv2.undistortPoints(pix, cam.matrix, cam.dist).reshape(h, w, 2)
        del pix, u, v
        # Ray directions in the world, one per pixel: R^T (xn, yn, 1). float32 from here on
        # (Python-float coefficients keep it so): ample for a texture, and twice as fast.
        xn, yn = norm[..., 0].astype(np.float32), norm[..., 1].astype(np.float32)
        del norm
        rt = self._rot.T.tolist()
        dx = rt[0][0] * xn + rt[0][1] * yn + rt[0][2]
        dy = rt[1][0] * xn + rt[1][1] * yn + rt[1][2]
        dz = rt[2][0] * xn + rt[2][1] * yn + rt[2][2]
        del xn, yn
        cx, cy, cz = self._center_mm.tolist()
        hits_floor = dz < -1e-9
        lam = np.where(hits_floor, -cz / np.where(hits_floor, dz, -1.0), np.inf)
        fx = np.where(hits_floor, cx + lam * dx, 0.0)
        fy = np.where(hits_floor, cy + lam * dy, 0.0)
        half_w, half_d = 0.5 * arena.width_mm, 0.5 * arena.depth_mm
        in_arena = hits_floor & (np.abs(fx) <= half_w) & (np.abs(fy) <= half_d)
        room = hits_floor & ~in_arena

        # Bedding texture: fine grain plus larger blotches; a 100 mm grid on the floor.
        fine = _sample_tiled(_value_noise(rng, 256, 1.2), fx, fy, 2.0)
        coarse = _sample_tiled(_value_noise(rng, 128, 2.0), fx, fy, 12.0)
        ray_len = np.sqrt(dx * dx + dy * dy + dz * dz)
        footprint_mm = np.where(
            hits_floor, lam * ray_len / self._focal_px / np.maximum(-dz / ray_len, 0.05), 1.0
        )
        grain = np.clip(3.0 / footprint_mm, 0.25, 1.0)  # fine grain fades when unresolved
        sigma = np.maximum(1.5, 0.6 * footprint_mm)
        gx = np.abs(np.mod(fx + 50.0, 100.0) - 50.0)
        gy = np.abs(np.mod(fy + 50.0, 100.0) - 50.0)
        line = np.exp(-0.5 * (np.minimum(gx, gy) / sigma) ** 2) * np.clip(2.5 / sigma, 0.3, 1.0)
        floor = 162.0 + 8.0 * grain * fine + 6.0 * coarse - 28.0 * line
        room_grey = 120.0 + 6.0 * coarse + 3.0 * grain * fine
        grey = np.where(in_arena, floor, np.where(room, room_grey, 104.0))

        # Clear walls: each wall a ray passes through brightens it slightly (glare).
        for axis, const, other_half in (
            (0, half_w, half_d),
            (0, -half_w, half_d),
            (1, half_d, half_w),
            (1, -half_d, half_w),
        ):
            d_axis = dx if axis == 0 else dy
            d_other = dy if axis == 0 else dx
            c_axis, c_other = (cx, cy) if axis == 0 else (cy, cx)
            with np.errstate(divide="ignore", invalid="ignore"):
                lw = (const - c_axis) / d_axis
            z = cz + lw * dz
            o = c_other + lw * d_other
            through = (lw > 0) & (lw < lam) & (z >= 0) & (z <= arena.wall_mm)
            through &= np.abs(o) <= other_half
            grey = np.where(through, grey * 1.03 + 3.0, grey)

        # Lens vignetting.
        k = cam.matrix
        rx = (np.arange(w) - k[0, 2]) / (0.5 * w)
        ry = (np.arange(h) - k[1, 2]) / (0.5 * w)
        grey *= 1.0 - 0.12 * (rx[None, :] ** 2 + ry[:, None] ** 2)

        if self.channels == 1:
            image = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        else:
            tint = np.where(
                in_arena[..., None],
                np.array([0.93, 0.98, 1.0]),
                np.where(room[..., None], np.array([1.0, 0.97, 0.94]), np.array([0.9, 0.9, 0.9])),
            )
            image = np.clip(np.rint(grey[..., None] * tint), 0, 255).astype(np.uint8)
        self._draw_walls(image)
        return np.ascontiguousarray(image)

    def _draw_walls(self, image: np.ndarray) -> None:
        """Wall edges (top rim, corner posts, floor seam) as distorted polylines."""
        half_w, half_d, top = (
            0.5 * self.arena.width_mm,
            0.5 * self.arena.depth_mm,
            self.arena.wall_mm,
        )
        corners = [(half_w, half_d), (-half_w, half_d), (-half_w, -half_d), (half_w, -half_d)]
        thick = max(1, round(self.camera.width / 500))
        samples = np.linspace(0.0, 1.0, 48)[:, None]
        for i, (x0, y0) in enumerate(corners):
            x1, y1 = corners[(i + 1) % 4]
            edges = [
                ((x0, y0, top), (x1, y1, top), "wall_top", thick + 1),
                ((x0, y0, 0.0), (x1, y1, 0.0), "wall_edge", thick),
                ((x0, y0, 0.0), (x0, y0, top), "wall_edge", thick),
            ]
            for a, b, color, t in edges:
                pts = np.array(a) + samples * (np.array(b) - np.array(a))
                px = self.camera.project(pts)
                ok = np.isfinite(px[:, 0])
                if ok.sum() < 2:
                    continue
                poly = np.rint(np.clip(px[ok], -1e5, 1e5) * _ONE).astype(np.int32)
                cv2.polylines(image, [poly], False, self._colors[color], t, cv2.LINE_AA, _SHIFT)

    # -- per frame ----------------------------------------------------------------

    def render(self, pose_mm: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Draw the scene with the animal at ``pose_mm`` into ``out``.

        ``pose_mm``: (K, 3) float mm, world frame, :data:`KEYPOINTS` order.
        ``out``: preallocated C-contiguous uint8 frame, (H, W) for 1 channel or (H, W, 3).
        Returns (K, 2) float64 px, the ground-truth keypoints (distorted projection; NaN for
        a point at or behind the camera plane).
        """
        if out.shape != self.shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(
                f"ViewRenderer[{self.camera.name}].render: expected out of shape {self.shape}, "
                f"uint8, C-contiguous; got shape {out.shape}, {out.dtype}, "
                f"contiguous={out.flags.c_contiguous}"
            )
        pose = np.asarray(pose_mm, dtype=np.float64)
        if pose.shape != (_N_KP, 3):
            raise ValueError(
                f"ViewRenderer[{self.camera.name}].render: expected pose_mm of shape "
                f"({_N_KP}, 3), got {pose.shape}"
            )
        np.copyto(out, self._background)
        pts = self._fill_points(pose)
        cam = self.camera
        depth = pts @ self._rot[2] + cam.tvec[2]
        px = cv2.projectPoints(pts, cam.rvec, cam.tvec, cam.matrix, cam.dist)[0].reshape(-1, 2)
        keypoints = px[:_N_KP].astype(np.float64)
        keypoints[depth[:_N_KP] <= 0.0] = np.nan
        self._draw_animal(out, px, depth)
        return keypoints

    def _fill_points(self, pose: np.ndarray) -> np.ndarray:
        """All 3D points one frame needs, in one (P, 3) float64 mm batch (rows laid out by
        the ``_P_*`` offsets), so that one projection call serves them all."""
        p = self._points
        np.matmul(_BLEND, pose, out=p[:_P_LIGHT])
        p[_P_EYE:_P_TAIL0, 2] -= 3.0
        # Highlights: up and towards the camera from each sphere centre.
        spine = p[_P_SPINE:_P_KNEE]
        to_cam = self._center_mm - pose[4]
        to_cam *= 0.3 / math.sqrt(float(to_cam @ to_cam))
        np.add(spine, _LIGHT_UP_MM, out=p[_P_LIGHT:_P_SHADOW])
        p[_P_LIGHT:_P_SHADOW] += np.outer(_SPINE_R_MM, to_cam)
        # Shadow: an ellipse on the floor under the body.
        hx, hy = pose[0, 0], pose[0, 1]
        tx, ty = pose[5, 0], pose[5, 1]
        ax, ay = hx - tx, hy - ty
        length = math.hypot(ax, ay)
        if length > 1e-6:
            ax, ay = ax / length, ay / length
        else:
            ax, ay = 1.0, 0.0
        along = (0.5 * length + 28.0) * _SHADOW_COS
        across = 40.0 * _SHADOW_SIN
        p[_P_SHADOW:, 0] = 0.5 * (hx + tx) + along * ax - across * ay
        p[_P_SHADOW:, 1] = 0.5 * (hy + ty) + along * ay + across * ax
        p[_P_SHADOW:, 2] = 0.5
        return p

    def _draw_animal(self, out: np.ndarray, px: np.ndarray, depth: np.ndarray) -> None:
        """Draw the animal from the projected batch: ``px`` (P, 2) px, ``depth`` (P,) mm.

        Painter's order: shadow; legs and tail behind the body; trunk and head (the farther
        first), each as spheres then highlights; ears and visible eyes; legs and tail in
        front of the body.
        """
        colors = self._colors
        aa = cv2.LINE_AA
        zs = depth.tolist()
        if min(zs[_P_KP:_P_SHADOW]) <= _NEAR_MM:
            logger.debug("animal too close to camera %s: not drawn", self.camera.name)
            return
        fixed = np.rint(np.clip(px, -1e5, 1e5) * _ONE).astype(np.int32)
        xy = fixed.tolist()
        f_px = self._focal_px
        scale = f_px * _ONE

        if min(zs[_P_SHADOW:]) > _NEAR_MM:
            cv2.fillPoly(out, [fixed[_P_SHADOW:]], colors["shadow"], aa, _SHIFT)

        # Limbs: (depth, kind, index); kind 0 = leg + paw, 1 = tail segment.
        limbs = [(zs[8 + j], 0, j) for j in range(4)]
        limbs.append((0.5 * (zs[5] + zs[6]), 1, 0))
        limbs.append((0.5 * (zs[6] + zs[7]), 1, 1))
        limbs.sort(reverse=True)
        body_z = zs[4]
        back = [limb for limb in limbs if limb[0] > body_z]
        front = [limb for limb in limbs if limb[0] <= body_z]

        def draw_limbs(items: list[tuple[float, int, int]]) -> None:
            for _, kind, j in items:
                if kind == 0:
                    paw = 8 + j
                    z_paw = zs[paw]
                    thick = max(round(f_px * 8.0 / z_paw), 2)
                    cv2.line(out, xy[_P_KNEE + j], xy[paw], colors["leg"], thick, aa, _SHIFT)
                    radius = max(int(scale * 7.0 / z_paw), 2 * _ONE)
                    cv2.circle(out, xy[paw], radius, colors["paw"], -1, aa, _SHIFT)
                elif j == 0:
                    thick = max(round(f_px * 9.0 / zs[5]), 2)
                    cv2.line(out, xy[_P_TAIL0], xy[6], colors["tail"], thick, aa, _SHIFT)
                else:
                    thick = max(round(f_px * 5.0 / zs[7]), 2)
                    cv2.line(out, xy[6], xy[7], colors["tail"], thick, aa, _SHIFT)

        # Sphere radii (1/16 px) and highlight ridge widths (px), for the whole spine at once.
        spine_z = depth[_P_SPINE:_P_KNEE]
        sphere_r = np.maximum((scale * _SPINE_R_MM / spine_z).astype(np.int64), _ONE).tolist()
        light_z = depth[_P_LIGHT:_P_SHADOW]
        ridge = (0.6 * f_px) * (_SPINE_R_MM[:-1] + _SPINE_R_MM[1:]) / (light_z[:-1] + light_z[1:])
        ridge_w = np.maximum(np.rint(ridge), 1).astype(np.int64).tolist()

        def draw_spheres(first: int, stop: int, base: tuple, light: tuple) -> None:
            # Spheres far to near, then a highlight ridge along their lit tops.
            for i in sorted(range(first, stop), key=lambda i: -zs[_P_SPINE + i]):
                cv2.circle(out, xy[_P_SPINE + i], sphere_r[i], base, -1, aa, _SHIFT)
            for i in range(first, stop - 1):
                j = _P_LIGHT + i
                cv2.line(out, xy[j], xy[j + 1], light, ridge_w[i], cv2.LINE_8, _SHIFT)

        def draw_head() -> None:
            draw_spheres(_N_TRUNK, _N_SPINE, colors["head"], colors["head_light"])
            for ear in (1, 2):
                radius = max(int(scale * 9.0 / zs[ear]), 2 * _ONE)
                cv2.circle(out, xy[ear], radius, colors["ear"], -1, aa, _SHIFT)
            head_z = zs[_P_SPINE + _N_TRUNK + 2]
            for eye in (_P_EYE, _P_EYE + 1):
                if zs[eye] < head_z:
                    radius = max(int(scale * 2.5 / zs[eye]), _ONE)
                    cv2.circle(out, xy[eye], radius, colors["eye"], -1, aa, _SHIFT)

        draw_limbs(back)
        if zs[3] < body_z:  # head nearer than the trunk: trunk first
            draw_spheres(0, _N_TRUNK, colors["body"], colors["body_light"])
            draw_head()
        else:
            draw_head()
            draw_spheres(0, _N_TRUNK, colors["body"], colors["body_light"])
        draw_limbs(front)


def preview(
    camera_count: int = 2, width: int = 640, height: int = 480, t_s: float = 1.0
) -> list[np.ndarray]:
    """Mono8 frames of the default scene at ``t_s`` from a ring of ``camera_count`` cameras.
    Returns a list of (height, width) uint8 images, for eyeballing the simulation."""
    names = [f"cam{i}" for i in range(camera_count)]
    pose = AnimalMotion().pose_at(t_s)
    images = []
    for cam in ring_of_cameras(names, width, height):
        image = np.empty((height, width), dtype=np.uint8)
        ViewRenderer(cam).render(pose, image)
        images.append(image)
    return images
