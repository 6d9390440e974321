"""The simulated rat's motion: a pure function from (seed, time) to a 3D pose.

:class:`AnimalMotion` walks the body of :mod:`.body` along a smooth rosette path around the
arena with a trotting gait, head sway, tail wave and occasional rearing; the pose depends only
on ``(seed, t_s)`` (counter-based hashing, closed-form path clock), so processes that render
the same trigger time agree exactly.
"""

from __future__ import annotations

import numpy as np

from rigstream.acquisition.sim_world.body import (
    _BEND_SPEED_MM_S,
    _BODY_REACH_MM,
    _FOREPAW_TUCK_MM,
    _FOREPAWS,
    _FRONT,
    _HEAD,
    _HIP_PIVOT_MM,
    _N_KP,
    _NECK_PIVOT_MM,
    _PAW_PHASE_RAD,
    _PAWS,
    _REST_MM,
    _STEP_LIFT_MM,
    _STRIDE_HALF_MM,
    _TAIL,
    _TAIL_WAVE_MM,
    _WALL_CLEARANCE_MM,
    Arena,
)

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

    def __init__(self, arena: Arena = Arena(), seed: int = 0) -> None:  # noqa: B008 (Arena is frozen)
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
