"""The simulated rat's body: keypoint names, skeleton, rest pose and gait constants, and the arena.

:data:`KEYPOINTS`, :data:`SKELETON` and :data:`LEFT_RIGHT` name the pose rows and their links;
the private constants here (body-frame rest pose in mm, keypoint groups, pivots, trot phases,
reach and wall clearance) are shared by :mod:`.motion` (which animates the body) and
:mod:`.render` (which draws it). :class:`Arena` is the open field the animal walks in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
