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

The package is split by job: :mod:`.body` (keypoints, skeleton, rest pose, arena),
:mod:`.motion`, :mod:`.cameras` and :mod:`.render`; the public names are re-exported here.
"""

from rigstream.acquisition.sim_world.body import KEYPOINTS, LEFT_RIGHT, SKELETON, Arena
from rigstream.acquisition.sim_world.cameras import ring_of_cameras
from rigstream.acquisition.sim_world.motion import AnimalMotion
from rigstream.acquisition.sim_world.render import ViewRenderer, preview

__all__ = [
    "KEYPOINTS",
    "LEFT_RIGHT",
    "SKELETON",
    "AnimalMotion",
    "Arena",
    "ViewRenderer",
    "preview",
    "ring_of_cameras",
]
