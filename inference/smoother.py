"""Offline Rauch-Tung-Striebel smoothing of recorded 3D keypoints: the offline twin of the live
:class:`~rigstream.inference.filters.KalmanFilter`.

Why: the live filter may only use past samples, so it trades jitter for lag. Offline analysis has the
whole recording; a smoother also uses the samples after each frame, which removes the lag and cuts the
frame-to-frame noise well below the filter's (about half, on the test's noisy tracks). Error that persists
from frame to frame (a pose model's bias) passes through any temporal filter. With the same parameters,
the smoother's output at the last sample of a track equals the live filter's output there (the RTS
recursion starts from the filtered state).

Model (identical to the live filter). Per keypoint coordinate, the state is ``x = [p, v]`` (position mm,
velocity mm/s); over a step of ``dt`` seconds (the actual time between frames, so dropped frames are
fine)::

    x_pred = F x,   P_pred = F P F^T + Q,   F = [[1, dt], [0, 1]],
    Q = q * [[dt^3/3, dt^2/2], [dt^2/2, dt]],   q = accel_noise_mm_s2**2   (white acceleration)

and a measurement ``z`` of the position with variance ``R = meas_noise_mm**2`` updates it::

    S = P_pred00 + R,   gain = [P_pred00, P_pred01] / S,   x = x_pred + gain * (z - p_pred),
    P = (I - gain H) P_pred,   H = [1, 0]

A (re)initialized track starts at its first measurement with velocity 0 and
``P = diag(R, init_speed_std_mm_s**2)``. The covariances depend only on the timing, ``R`` and which
frames are measured, never on the values, so they are computed once per keypoint and shared by its three
coordinates.

Forward pass (a Kalman filter): every frame of a segment is predicted from the previous frame; frames
where the keypoint was measured are then updated, frames where it was not keep the prediction.

Backward pass (RTS), from the segment's last frame ``N`` (where ``x_s = x_f``) down to its first::

    C_i   = P_f,i F_{i+1}^T P_pred,i+1^-1                   (2x2)
    x_s,i = x_f,i + C_i (x_s,i+1 - x_pred,i+1),   x_pred,i+1 = F_{i+1} x_f,i

Smoothed covariances (``P_s,i = P_f,i + C_i (P_s,i+1 - P_pred,i+1) C_i^T``) are not needed for the
positions and are not computed. Unmeasured frames inside a segment thus come out interpolated (the
smoothed constant-velocity model between the measurements around them), not held.

Segments and NaN: a keypoint counts as measured in a frame when its three coordinates are finite. Its
track is cut wherever two consecutive measurements of it are more than ``max_gap_s`` apart (the rule by
which the live filter re-initializes). Each segment is filtered and smoothed on its own: it starts fresh
at its first measurement and the backward pass never crosses a cut. The output is NaN before a
keypoint's first measurement, after its last one, and at the frames strictly inside a cut gap.

:func:`estimate_meas_noise_mm` estimates ``meas_noise_mm`` per keypoint from the recording itself.

The recursion is one numba kernel looping over keypoints, then time (a 30-minute session at 226 Hz,
~400k frames x 12 keypoints, takes a fraction of a second); it is compiled on first use and cached on
disk.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from numba import njit

logger = logging.getLogger(__name__)

__all__ = ["estimate_meas_noise_mm", "rts_smooth"]

_MAD_TO_STD = 1.482602218505602
"""Std of a normal distribution over its median absolute deviation, 1 / Phi^-1(3/4)."""
_MIN_SECOND_DIFFS = 10
"""Fewest second differences (triples of measured samples) per keypoint for a noise estimate."""


def _positive(where: str, name: str, value: float, allow_zero: bool = False) -> float:
    """``value`` as a float, or a ValueError naming the function, the argument, the range and the value."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name}: expected a number, got {value!r}") from None
    ok = v >= 0.0 if allow_zero else v > 0.0
    if not (ok and math.isfinite(v)):
        raise ValueError(f"{where}: {name}: expected a finite number {'>= 0' if allow_zero else '> 0'}, "
                         f"got {value!r}")
    return v


def _check_track(where: str, t_s: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``t_s`` (T,) and ``z`` (T, K, 3) as float64 arrays, or a ValueError saying which is wrong and how."""
    try:
        t = np.asarray(t_s, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: t_s: expected a (T,) array of seconds, "
                         f"got {type(t_s).__name__}") from None
    try:
        zz = np.asarray(z, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: z: expected a (T, K, 3) float array of mm, "
                         f"got {type(z).__name__}") from None
    if t.ndim != 1:
        raise ValueError(f"{where}: t_s: expected shape (T,), got {t.shape}")
    if zz.ndim != 3 or zz.shape[2] != 3:
        raise ValueError(f"{where}: z: expected shape (T, K, 3), got {zz.shape}")
    if zz.shape[0] != t.shape[0]:
        raise ValueError(f"{where}: z: expected {t.shape[0]} frames like t_s, got shape {zz.shape}")
    if not np.isfinite(t).all():
        bad = int(np.flatnonzero(~np.isfinite(t))[0])
        raise ValueError(f"{where}: t_s: expected finite times, got {t[bad]} at index {bad}")
    if t.shape[0] > 1:
        steps = np.diff(t)
        if not (steps > 0.0).all():
            bad = int(np.flatnonzero(~(steps > 0.0))[0])
            raise ValueError(f"{where}: t_s: expected strictly increasing times, got {t[bad + 1]!r} s "
                             f"after {t[bad]!r} s at index {bad + 1}")
    return t, zz


def rts_smooth(t_s: np.ndarray, z: np.ndarray, *, accel_noise_mm_s2: float = 1000.0,
               meas_noise_mm: float | np.ndarray = 1.0, init_speed_std_mm_s: float = 500.0,
               max_gap_s: float = 0.1) -> np.ndarray:
    """Smooth recorded 3D keypoints with the live Kalman filter's model, forward and backward.

    Args:
        t_s: (T,) float seconds (any epoch), strictly increasing; frames may be irregular.
        z: (T, K, 3) float mm, the measured keypoints; NaN (or any non-finite coordinate) where a keypoint
            was not measured in a frame.
        accel_noise_mm_s2: white-acceleration noise, mm/s^2/sqrt(Hz), as in
            :class:`~rigstream.inference.filters.KalmanFilter`.
        meas_noise_mm: measurement noise std, mm: one number, or (K,) one per keypoint (e.g. from
            :func:`estimate_meas_noise_mm`).
        init_speed_std_mm_s: prior std of the velocity at the start of each segment, mm/s.
        max_gap_s: a keypoint's track is cut where consecutive measurements of it are more than this far
            apart (s); shorter gaps are interpolated.

    Returns:
        (T, K, 3) float64 mm, the smoothed positions; NaN before a keypoint's first measurement, after its
        last one and strictly inside gaps longer than ``max_gap_s``.

    Raises:
        ValueError: wrong shapes, ``t_s`` not finite and strictly increasing, or a parameter that is not a
            finite positive number (``max_gap_s`` may be 0).
    """
    where = "rts_smooth"
    t, zz = _check_track(where, t_s, z)
    accel = _positive(where, "accel_noise_mm_s2", accel_noise_mm_s2)
    speed0 = _positive(where, "init_speed_std_mm_s", init_speed_std_mm_s)
    gap = _positive(where, "max_gap_s", max_gap_s, allow_zero=True)
    k = zz.shape[1]
    if np.ndim(meas_noise_mm) == 0:
        noise = np.full(k, _positive(where, "meas_noise_mm", meas_noise_mm))
    else:
        try:
            noise = np.asarray(meas_noise_mm, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: meas_noise_mm: expected a number or a ({k},) float array, "
                             f"got {type(meas_noise_mm).__name__}") from None
        if noise.shape != (k,):
            raise ValueError(f"{where}: meas_noise_mm: expected a number or shape ({k},) (one per "
                             f"keypoint), got shape {noise.shape}")
        bad = ~(np.isfinite(noise) & (noise > 0.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{where}: meas_noise_mm[{i}]: expected a finite number > 0, got {noise[i]}")
    measured = np.isfinite(zz).all(axis=2)
    out = np.full(zz.shape, np.nan)
    if zz.size:
        _smooth_kernel(t, zz, measured, noise * noise, accel * accel, speed0 * speed0, gap, out)
    return out


def estimate_meas_noise_mm(t_s: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Per-keypoint measurement noise std (mm), estimated from the recording.

    For each keypoint, every three consecutive measured samples ``z0, z1, z2`` (at times ``t0 < t1 < t2``,
    ``h1 = t1 - t0``, ``h2 = t2 - t1``) give a second difference per coordinate::

        d = (w0 z0 - 2 z1 + w2 z2) / sqrt((w0^2 + 4 + w2^2) / 6),
        w0 = 2 h2 / (h1 + h2),   w2 = 2 h1 / (h1 + h2)

    which is the usual ``z0 - 2 z1 + z2`` at even spacing, vanishes on a constant-velocity movement at any
    spacing (dropped frames do not bias it) and has variance ``6 sigma^2`` for white noise of std
    ``sigma``. For a smooth trajectory sampled fast the true second difference is negligible, so
    ``sigma = std(d) / sqrt(6)``, with the std taken robustly as 1.4826 * the median absolute deviation of
    ``d`` (the three coordinates pooled), which ignores the few large ``d`` at fast turns or across gaps.

    Args:
        t_s: (T,) float seconds, strictly increasing.
        z: (T, K, 3) float mm; a keypoint counts as measured in a frame when its three coordinates are
            finite.

    Returns:
        (K,) float64 mm; NaN for keypoints with fewer than 12 measured samples (10 second differences),
        for which the caller picks a value. A noise-free track gives 0, which :func:`rts_smooth` rejects.

    Raises:
        ValueError: wrong shapes, or ``t_s`` not finite and strictly increasing.
    """
    t, zz = _check_track("estimate_meas_noise_mm", t_s, z)
    k = zz.shape[1]
    measured = np.isfinite(zz).all(axis=2)
    sigma = np.full(k, np.nan)
    for j in range(k):
        idx = np.flatnonzero(measured[:, j])
        if idx.size < _MIN_SECOND_DIFFS + 2:
            continue
        tj, zj = t[idx], zz[idx, j]  # (n,), (n, 3)
        h1 = (tj[1:-1] - tj[:-2])[:, None]
        h2 = (tj[2:] - tj[1:-1])[:, None]
        w0 = 2.0 * h2 / (h1 + h2)
        w2 = 2.0 * h1 / (h1 + h2)
        d = (w0 * zj[:-2] - 2.0 * zj[1:-1] + w2 * zj[2:]) / np.sqrt((w0 * w0 + 4.0 + w2 * w2) / 6.0)
        d = d.ravel()
        mad = np.median(np.abs(d - np.median(d)))
        sigma[j] = _MAD_TO_STD * mad / math.sqrt(6.0)
    return sigma


# ---------------------------------------------------------------------------------------------- kernel


@njit(cache=True, nogil=True)
def _smooth_kernel(t_s: np.ndarray, z: np.ndarray, measured: np.ndarray, r_var: np.ndarray, q: float,
                   v0_var: float, max_gap_s: float, out: np.ndarray) -> None:
    """Find each keypoint's segments and smooth them into ``out`` (T, K, 3), which starts all NaN.

    ``r_var`` (K,) measurement variances mm^2, ``q`` acceleration spectral density mm^2/s^3, ``v0_var``
    initial velocity variance mm^2/s^2.
    """
    n_t, n_k = measured.shape
    gain = np.empty((n_t, 4))  # RTS gain C_i (row-major 2x2) from frame i to i + 1
    state = np.empty((n_t, 3, 2))  # per coordinate (position, velocity): filtered, then smoothed
    for k in range(n_k):
        i = 0
        while i < n_t:
            if not measured[i, k]:
                i += 1
                continue
            first = i
            last = i  # last measurement of the segment so far
            j = i + 1
            while j < n_t:
                if measured[j, k]:
                    if t_s[j] - t_s[last] > max_gap_s:
                        break
                    last = j
                j += 1
            _smooth_segment(t_s, z, measured, k, first, last, r_var[k], q, v0_var, gain, state, out)
            i = j  # the next segment's first measurement, or the end


@njit(cache=True, nogil=True)
def _smooth_segment(t_s: np.ndarray, z: np.ndarray, measured: np.ndarray, k: int, first: int, last: int,
                    r: float, q: float, v0_var: float, gain: np.ndarray, state: np.ndarray,
                    out: np.ndarray) -> None:
    """Forward Kalman pass, then backward RTS pass, over frames ``first..last`` of keypoint ``k``."""
    p00 = r
    p01 = 0.0
    p11 = v0_var
    for c in range(3):
        state[first, c, 0] = z[first, k, c]
        state[first, c, 1] = 0.0
    for i in range(first + 1, last + 1):
        dt = t_s[i] - t_s[i - 1]
        qdt = q * dt
        tmp = p01 + p11 * dt
        a00 = p00 + dt * (tmp + p01) + qdt * dt * dt / 3.0  # P_pred = F P F^T + Q
        a01 = tmp + 0.5 * qdt * dt
        a11 = p11 + qdt
        # C_{i-1} = P_f F^T P_pred^-1, with P_f F^T = [[p00 + dt p01, p01], [p01 + dt p11, p11]].
        m00 = p00 + dt * p01
        m10 = tmp
        det = a00 * a11 - a01 * a01
        i00 = a11 / det
        i01 = -a01 / det
        i11 = a00 / det
        gain[i - 1, 0] = m00 * i00 + p01 * i01
        gain[i - 1, 1] = m00 * i01 + p01 * i11
        gain[i - 1, 2] = m10 * i00 + p11 * i01
        gain[i - 1, 3] = m10 * i01 + p11 * i11
        if measured[i, k]:
            s = a00 + r
            k0 = a00 / s
            k1 = a01 / s
            for c in range(3):
                v = state[i - 1, c, 1]
                p = state[i - 1, c, 0] + dt * v
                y = z[i, k, c] - p
                state[i, c, 0] = p + k0 * y
                state[i, c, 1] = v + k1 * y
            p00 = (1.0 - k0) * a00
            p01 = (1.0 - k0) * a01
            p11 = a11 - k1 * a01
        else:
            for c in range(3):
                v = state[i - 1, c, 1]
                state[i, c, 0] = state[i - 1, c, 0] + dt * v
                state[i, c, 1] = v
            p00 = a00
            p01 = a01
            p11 = a11
    for c in range(3):
        out[last, k, c] = state[last, c, 0]
    for i in range(last - 1, first - 1, -1):
        dt = t_s[i + 1] - t_s[i]
        for c in range(3):
            p = state[i, c, 0]
            v = state[i, c, 1]
            dp = state[i + 1, c, 0] - (p + dt * v)
            dv = state[i + 1, c, 1] - v
            p += gain[i, 0] * dp + gain[i, 1] * dv
            state[i, c, 0] = p
            state[i, c, 1] = v + gain[i, 2] * dp + gain[i, 3] * dv
            out[i, k, c] = p
