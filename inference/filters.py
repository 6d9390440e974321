"""Low-latency temporal filters for live 3D keypoints.

One 3D pose arrives per frame set (~100-226 Hz): ``xyz_mm`` (K, 3) float64 mm with a per-keypoint
validity flag (K,) bool. A :class:`PoseFilter` smooths each keypoint coordinate independently, vectorized
over (K, 3) with numpy, and extrapolates the pose a little into the future (:meth:`PoseFilter.predict`),
so a closed-loop rule can act on where the animal will be when the output takes effect.

Two filters, written from the published math:

- :class:`OneEuroFilter`: Casiez, Roussel & Vogel (2012), "1 Euro Filter: A Simple Speed-based Low-pass
  Filter for Noisy Input in Interactive Systems", CHI '12. An exponential smoother whose cutoff rises with
  speed: little jitter at rest, little lag when moving. No model, two knobs.
- :class:`KalmanFilter`: a constant-velocity Kalman filter per coordinate, state (position mm,
  velocity mm/s), process noise from a continuous white-acceleration model. Optimal for that model and
  aware of per-keypoint measurement quality (``noise_scale``, e.g. from reprojection error).

Shared behaviour (owned by :class:`PoseFilter`):

- Timestamps may be irregular (dropped frame sets): every step uses the actual dt from ``t_ns``.
  ``t_ns`` must increase strictly; otherwise :meth:`~PoseFilter.update` raises ``ValueError``.
- A keypoint is measured in a frame when ``valid[k]`` is true and its three coordinates are finite.
  An unmeasured keypoint keeps its state; its output is the prediction at ``t_ns`` while the time since
  its last measurement is at most ``max_gap_s``, NaN after that. When it comes back after more than
  ``max_gap_s`` its state is re-initialized from the new measurement (no smearing from stale state).
- Keypoints never affect each other.
- :meth:`~PoseFilter.update` and :meth:`~PoseFilter.predict` return read-only views of internal buffers
  (no allocation per frame): the next call of the same method overwrites them. Copy what you keep.

:func:`rigstream.inference.backends.make_filter` builds one from a kind name and parameters
(for config files); :func:`rigstream.inference.bench3d.bench_filter` times one.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["KalmanFilter", "OneEuroFilter", "PoseFilter"]

_TWO_PI = 2.0 * math.pi


def _check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    """``value`` as a float, or a ValueError naming the parameter, the expected range and the value."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    ok = v >= 0.0 if allow_zero else v > 0.0
    if not (ok and math.isfinite(v)):
        raise ValueError(f"{name}: expected a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return v


class PoseFilter(ABC):
    """Per-keypoint, per-coordinate temporal filter for a stream of 3D poses.

    The base class owns the bookkeeping (time checks, validity, gaps, output buffers); a subclass
    implements :meth:`_allocate_state`, :meth:`_step` and :meth:`_extrapolate` on (K, 3) arrays.
    K is fixed by the first :meth:`update` (and again by the first one after :meth:`reset`).

    Args:
        max_gap_s: how long (s) an unmeasured keypoint is still reported, as the prediction from its
            last state; after that it is NaN and its next measurement re-initializes it.
    """

    def __init__(self, max_gap_s: float = 0.1) -> None:
        self.max_gap_s = _check_positive("max_gap_s", max_gap_s, allow_zero=True)
        self._max_gap_ns = round(self.max_gap_s * 1e9)
        self._k = -1  # keypoints in the current buffers; -1 before the first update
        self._t_prev_ns: int | None = None

    # ------------------------------------------------------------------ public API

    @property
    def keypoints(self) -> int | None:
        """K once the first update has fixed it, else None."""
        return self._k if self._k >= 0 else None

    @property
    def last_t_ns(self) -> int | None:
        """Timestamp (ns) of the last update, or None before the first one / after reset."""
        return self._t_prev_ns

    def update(self, t_ns: int, xyz: np.ndarray, valid: np.ndarray,
               noise_scale: np.ndarray | None = None) -> np.ndarray:
        """Feed one pose; return the filtered pose at ``t_ns``.

        Args:
            t_ns: timestamp of the frame set (ns, any epoch), strictly greater than the previous one.
            xyz: (K, 3) float mm, the measured pose. Rows with a non-finite value count as unmeasured.
            valid: (K,) bool, False where the keypoint was not measured (low confidence, occluded).
            noise_scale: optional (K,) float, multiplies the measurement noise std per keypoint
                (e.g. reprojection error / typical error). Used by :class:`KalmanFilter`; the One-Euro
                filter has no noise model and ignores the values. Either way a non-finite or
                non-positive scale marks the keypoint unmeasured for this frame.

        Returns:
            (K, 3) float64 mm, read-only view of an internal buffer that the next ``update`` overwrites
            (copy it to keep it). NaN for keypoints unmeasured for more than ``max_gap_s`` (or never).

        Raises:
            ValueError: ``t_ns`` not after the previous update, or shapes that do not match K.
        """
        t_ns = int(t_ns)
        if self._t_prev_ns is not None and t_ns <= self._t_prev_ns:
            raise ValueError(f"{type(self).__name__}.update: t_ns must increase, got {t_ns} ns after "
                             f"{self._t_prev_ns} ns (difference {t_ns - self._t_prev_ns} ns)")
        shape = np.shape(xyz)
        if len(shape) != 2 or shape[1] != 3:
            raise ValueError(f"{type(self).__name__}.update: xyz: expected shape (K, 3), got {shape}")
        k = shape[0]
        if k != self._k:
            if self._t_prev_ns is not None:
                raise ValueError(f"{type(self).__name__}.update: xyz: expected ({self._k}, 3) like the "
                                 f"previous poses, got {shape}; call reset() to change K")
            self._allocate(k)
        if self._t_prev_ns is None:  # first pose (after reset): every keypoint "last seen" long ago
            self._last_ns.fill(t_ns - 2 * self._max_gap_ns - 1)
            self._dead.fill(True)
        if np.shape(valid) != (k,):
            raise ValueError(f"{type(self).__name__}.update: valid: expected shape ({k},), "
                             f"got {np.shape(valid)}")

        ok, nok, fin = self._ok, self._nok, self._fin3
        np.isfinite(xyz, out=fin)
        np.logical_and.reduce(fin, axis=1, out=ok)
        np.logical_and(ok, valid, out=ok)
        scale = self._scale
        if noise_scale is None:
            scale.fill(1.0)
        else:
            if np.shape(noise_scale) != (k,):
                raise ValueError(f"{type(self).__name__}.update: noise_scale: expected shape ({k},), "
                                 f"got {np.shape(noise_scale)}")
            np.copyto(self._scale_flat, noise_scale)
            np.greater(self._scale_flat, 0.0, out=self._tmp_b)  # False for NaN
            np.logical_and(ok, self._tmp_b, out=ok)
            np.isfinite(self._scale_flat, out=self._tmp_b)
            np.logical_and(ok, self._tmp_b, out=ok)
        np.logical_not(ok, out=nok)

        # Time since each keypoint's last measurement (> 0); its state lives at that time.
        np.subtract(t_ns, self._last_ns, out=self._gap_ns)
        np.multiply(self._gap_ns, 1e-9, out=self._dt_flat)
        # fresh: measured now, and never seen or gone longer than max_gap_s -> (re)initialize.
        stale = self._tmp_b
        np.greater(self._gap_ns, self._max_gap_ns, out=stale)
        np.logical_or(stale, self._dead, out=stale)
        np.logical_and(ok, stale, out=self._fresh_flat)
        np.logical_not(stale, out=self._cont_flat)
        np.logical_and(ok, self._cont_flat, out=self._cont_flat)

        # Unmeasured keypoints get a finite stand-in so nothing in _step sees NaN or inf; their results
        # are discarded by the cont/fresh masks.
        z = self._z
        np.copyto(z, xyz)
        np.copyto(z, 0.0, where=self._nok_col)
        np.copyto(scale, 1.0, where=self._nok_col)

        self._step(z, self._dt_s, self._cont, self._fresh if self._fresh_flat.any() else None, scale)

        # Bookkeeping: measured keypoints are now live at t_ns; unmeasured ones die after max_gap_s.
        np.copyto(self._last_ns, t_ns, where=ok)
        np.logical_and(nok, stale, out=self._dead)
        self._t_prev_ns = t_ns

        # Output: the state at t_ns (dt 0 where just measured), NaN where dead.
        np.copyto(self._dt_flat, 0.0, where=ok)
        self._extrapolate(self._dt_s, self._out)
        np.copyto(self._out, np.nan, where=self._dead_col)
        return self._out_ro

    def predict(self, dt_s: float) -> np.ndarray:
        """The pose ``dt_s`` seconds after the last update (latency compensation).

        Each live keypoint is extrapolated from its state by its filter's velocity estimate (keypoints
        currently held through a short gap are extrapolated from their last measurement time). Keypoints
        that were NaN in the last update are NaN here.

        Returns:
            (K, 3) float64 mm, read-only view of an internal buffer (separate from update's) that the next
            ``predict`` overwrites.

        Raises:
            RuntimeError: before the first update (or after reset).
            ValueError: ``dt_s`` negative or not finite.
        """
        if self._t_prev_ns is None:
            raise RuntimeError(f"{type(self).__name__}.predict: no pose yet; call update() first")
        dt_s = float(dt_s)
        if not (dt_s >= 0.0 and math.isfinite(dt_s)):
            raise ValueError(f"{type(self).__name__}.predict: dt_s: expected a finite number >= 0, "
                             f"got {dt_s}")
        np.subtract(self._t_prev_ns, self._last_ns, out=self._gap_ns)
        np.multiply(self._gap_ns, 1e-9, out=self._h_flat)
        self._h_flat += dt_s
        self._extrapolate(self._h_s, self._pred)
        np.copyto(self._pred, np.nan, where=self._dead_col)
        return self._pred_ro

    def reset(self) -> None:
        """Forget all state and the last timestamp; the next update may start a new K."""
        self._t_prev_ns = None  # the next update marks every keypoint dead, so states are re-initialized

    # ------------------------------------------------------------------ subclass hooks

    @abstractmethod
    def _allocate_state(self, k: int) -> None:
        """Allocate the filter state for ``k`` keypoints (values are irrelevant until initialized)."""

    @abstractmethod
    def _step(self, z: np.ndarray, dt_s: np.ndarray, cont: np.ndarray, fresh: np.ndarray | None,
              scale: np.ndarray) -> None:
        """One filter step, in place.

        Args:
            z: (K, 3) float64 mm, measurements (finite everywhere; meaningless where neither mask is set).
            dt_s: (K, 1) float64 s, time since each keypoint's state (> 0).
            cont: (K, 1) bool, keypoints to update from their state with ``z``.
            fresh: (K, 1) bool, keypoints to (re)initialize from ``z``; None when there are none.
            scale: (K, 1) float64, measurement-noise std multipliers (1 where unused).
        """

    @abstractmethod
    def _extrapolate(self, h_s: np.ndarray, out: np.ndarray) -> None:
        """Write each keypoint's state position advanced by ``h_s`` (K, 1) seconds into ``out`` (K, 3) mm."""

    # ------------------------------------------------------------------ internals

    def _allocate(self, k: int) -> None:
        self._k = k
        self._last_ns = np.zeros(k, np.int64)  # time of each keypoint's last measurement (its state time)
        self._dead = np.ones(k, bool)  # no usable state: never seen, or unmeasured longer than max_gap_s
        self._gap_ns = np.zeros(k, np.int64)
        self._dt_s = np.zeros((k, 1))
        self._h_s = np.zeros((k, 1))
        self._ok = np.zeros(k, bool)
        self._nok = np.zeros(k, bool)
        self._tmp_b = np.zeros(k, bool)
        self._fin3 = np.zeros((k, 3), bool)
        self._cont = np.zeros((k, 1), bool)
        self._fresh = np.zeros((k, 1), bool)
        self._scale = np.ones((k, 1))
        self._z = np.zeros((k, 3))
        self._out = np.full((k, 3), np.nan)
        self._pred = np.full((k, 3), np.nan)
        self._out_ro = self._out.view()
        self._out_ro.flags.writeable = False
        self._pred_ro = self._pred.view()
        self._pred_ro.flags.writeable = False
        # Views made once, so the per-frame code allocates nothing.
        self._dt_flat, self._h_flat, self._scale_flat = self._dt_s[:, 0], self._h_s[:, 0], self._scale[:, 0]
        self._cont_flat, self._fresh_flat = self._cont[:, 0], self._fresh[:, 0]
        self._nok_col, self._dead_col = self._nok[:, None], self._dead[:, None]
        self._allocate_state(k)


class OneEuroFilter(PoseFilter):
    """One-Euro filter (Casiez et al. 2012) on every keypoint coordinate.

    Per coordinate, with dt the actual time step and ``alpha(fc) = r / (1 + r)``, ``r = 2*pi*fc*dt``
    (an exponential smoother with cutoff ``fc``)::

        dx    = (x - x_prev) / dt                       raw derivative, mm/s
        dx_f  = dx_f + alpha(d_cutoff_hz) * (dx - dx_f)  smoothed derivative
        fc    = min_cutoff_hz + beta * |dx_f|            cutoff rises with speed, Hz
        x_f   = x_f + alpha(fc) * (x - x_f)              output, mm

    ``x_prev`` is the previous raw measurement: a derivative taken from the previous *filtered* value would
    overestimate the speed of a ramp by a factor 1/alpha.

    Tuning (the paper's procedure): with the animal still, set ``beta = 0`` and lower ``min_cutoff_hz``
    until the jitter is acceptable (lower = smoother, more lag). Then with the animal moving fast, raise
    ``beta`` until the lag is acceptable (higher = less lag when fast, more jitter when fast).
    ``d_cutoff_hz`` rarely needs changing.

    Args:
        min_cutoff_hz: cutoff at rest (Hz); lowers jitter at rest when lowered.
        beta: cutoff increase per unit speed, Hz per (mm/s); lowers lag at speed when raised. E.g.
            0.01 gives +5 Hz at 500 mm/s.
        d_cutoff_hz: cutoff of the derivative smoother (Hz).
        max_gap_s: see :class:`PoseFilter`.

    :meth:`predict` extrapolates the filtered position with the smoothed derivative. Like the filtered
    position itself it lags a moving keypoint by about ``(1 - alpha) / alpha * v * dt``; use a higher
    ``beta`` (or :class:`KalmanFilter`) when the prediction must be accurate on fast moves.
    """

    def __init__(self, min_cutoff_hz: float = 1.0, beta: float = 0.01, d_cutoff_hz: float = 1.0,
                 max_gap_s: float = 0.1) -> None:
        super().__init__(max_gap_s=max_gap_s)
        self.min_cutoff_hz = _check_positive("min_cutoff_hz", min_cutoff_hz)
        self.beta = _check_positive("beta", beta, allow_zero=True)
        self.d_cutoff_hz = _check_positive("d_cutoff_hz", d_cutoff_hz)

    def __repr__(self) -> str:
        return (f"OneEuroFilter(min_cutoff_hz={self.min_cutoff_hz}, beta={self.beta}, "
                f"d_cutoff_hz={self.d_cutoff_hz}, max_gap_s={self.max_gap_s})")

    def _allocate_state(self, k: int) -> None:
        self._x_f = np.zeros((k, 3))  # filtered position, mm
        self._dx_f = np.zeros((k, 3))  # filtered derivative, mm/s
        self._x_prev = np.zeros((k, 3))  # last raw measurement, mm
        self._a_col = np.zeros((k, 1))
        self._r_col = np.zeros((k, 1))
        self._t1 = np.zeros((k, 3))
        self._t2 = np.zeros((k, 3))
        self._t3 = np.zeros((k, 3))

    def _step(self, z: np.ndarray, dt_s: np.ndarray, cont: np.ndarray, fresh: np.ndarray | None,
              scale: np.ndarray) -> None:
        t1, t2, t3, a, r = self._t1, self._t2, self._t3, self._a_col, self._r_col
        # Smoothed derivative -> t1.
        np.subtract(z, self._x_prev, out=t1)
        t1 /= dt_s
        np.multiply(dt_s, _TWO_PI * self.d_cutoff_hz, out=r)
        np.add(r, 1.0, out=a)
        np.divide(r, a, out=a)
        t1 -= self._dx_f
        t1 *= a
        t1 += self._dx_f
        # Speed-dependent alpha -> t2.
        np.abs(t1, out=t2)
        t2 *= self.beta
        t2 += self.min_cutoff_hz
        t2 *= dt_s
        t2 *= _TWO_PI
        np.add(t2, 1.0, out=t3)
        t2 /= t3
        # Filtered position -> t3.
        np.subtract(z, self._x_f, out=t3)
        t3 *= t2
        t3 += self._x_f
        np.copyto(self._dx_f, t1, where=cont)
        np.copyto(self._x_f, t3, where=cont)
        # (Re)initialization: the output equals the measurement, derivative unknown -> 0.
        np.copyto(self._x_prev, z, where=cont)
        if fresh is not None:
            np.copyto(self._x_f, z, where=fresh)
            np.copyto(self._dx_f, 0.0, where=fresh)
            np.copyto(self._x_prev, z, where=fresh)

    def _extrapolate(self, h_s: np.ndarray, out: np.ndarray) -> None:
        np.multiply(self._dx_f, h_s, out=out)
        out += self._x_f


class KalmanFilter(PoseFilter):
    """Constant-velocity Kalman filter, one 2-state filter (position mm, velocity mm/s) per coordinate.

    All K*3 filters run at once with closed-form 2x2 algebra. Over a step of ``dt`` seconds::

        predict:  p <- p + v*dt,   P <- F P F^T + Q,   F = [[1, dt], [0, 1]],
                  Q = q * [[dt^3/3, dt^2/2], [dt^2/2, dt]],   q = accel_noise_mm_s2**2
        update:   S = P00 + R,  gain = [P00, P01] / S,  [p, v] += gain * (z - p),  P <- (I - gain H) P,
                  R = (meas_noise_mm * noise_scale[k])**2

    Q is the exact discretization of continuous white acceleration, so steps of any length (dropped
    frames, gaps) are consistent. A (re)initialized keypoint starts at the measurement with velocity 0,
    ``P = diag(R, init_speed_std_mm_s**2)``.

    Tuning: ``meas_noise_mm`` is the typical 3D error of one triangulated keypoint (std, mm).
    ``accel_noise_mm_s2`` is the square root of the spectral density of the acceleration, in
    mm/s^2/sqrt(Hz): higher follows fast changes of speed with less lag and more jitter. The filter's
    natural frequency is about ``(q / (R * dt)) ** 0.25 / (2*pi)`` Hz: ~19 Hz with the defaults at 200 Hz,
    ~8 Hz with ``meas_noise_mm = 5``. Only the ratio ``accel_noise_mm_s2 / meas_noise_mm`` changes the output;
    ``noise_scale`` (per keypoint, per frame) lets a poorly triangulated keypoint move the state less.

    Args:
        accel_noise_mm_s2: white-acceleration noise, mm/s^2/sqrt(Hz) (see above).
        meas_noise_mm: measurement noise std, mm.
        init_speed_std_mm_s: prior std of the velocity of a (re)initialized keypoint, mm/s.
        max_gap_s: see :class:`PoseFilter`.

    :meth:`predict` is ``p + v*dt``; on a constant-velocity movement it converges to the true future
    position (no lag in steady state).
    """

    def __init__(self, accel_noise_mm_s2: float = 1000.0, meas_noise_mm: float = 1.0,
                 init_speed_std_mm_s: float = 500.0, max_gap_s: float = 0.1) -> None:
        super().__init__(max_gap_s=max_gap_s)
        self.accel_noise_mm_s2 = _check_positive("accel_noise_mm_s2", accel_noise_mm_s2)
        self.meas_noise_mm = _check_positive("meas_noise_mm", meas_noise_mm)
        self.init_speed_std_mm_s = _check_positive("init_speed_std_mm_s", init_speed_std_mm_s)
        self._q = self.accel_noise_mm_s2**2

    def __repr__(self) -> str:
        return (f"KalmanFilter(accel_noise_mm_s2={self.accel_noise_mm_s2}, "
                f"meas_noise_mm={self.meas_noise_mm}, init_speed_std_mm_s={self.init_speed_std_mm_s}, "
                f"max_gap_s={self.max_gap_s})")

    def _allocate_state(self, k: int) -> None:
        self._p = np.zeros((k, 3))  # position, mm
        self._v = np.zeros((k, 3))  # velocity, mm/s
        self._p00 = np.zeros((k, 3))  # var(p), mm^2
        self._p01 = np.zeros((k, 3))  # cov(p, v), mm^2/s
        self._p11 = np.zeros((k, 3))  # var(v), mm^2/s^2
        self._r = np.zeros((k, 1))  # measurement variance, mm^2
        self._c1 = np.zeros((k, 1))
        self._c2 = np.zeros((k, 1))
        self._a00 = np.zeros((k, 3))
        self._a01 = np.zeros((k, 3))
        self._a11 = np.zeros((k, 3))
        self._k0 = np.zeros((k, 3))
        self._k1 = np.zeros((k, 3))
        self._t = np.zeros((k, 3))
        self._y = np.zeros((k, 3))
        self._c3 = np.zeros((k, 3))

    def _step(self, z: np.ndarray, dt_s: np.ndarray, cont: np.ndarray, fresh: np.ndarray | None,
              scale: np.ndarray) -> None:
        q, r, c1, c2 = self._q, self._r, self._c1, self._c2
        a00, a01, a11, k0, k1, t, y = self._a00, self._a01, self._a11, self._k0, self._k1, self._t, self._y
        p, v, p00, p01, p11, c3 = self._p, self._v, self._p00, self._p01, self._p11, self._c3
        np.multiply(scale, self.meas_noise_mm, out=r)
        r *= r  # R, mm^2
        # Predicted covariance a = F P F^T + Q over dt.
        np.multiply(dt_s, q, out=c1)  # q dt
        np.add(p11, c1, out=a11)  # P11 + q dt
        np.multiply(c1, dt_s, out=c2)  # q dt^2
        np.multiply(p11, dt_s, out=t)
        t += p01  # P01 + P11 dt
        np.multiply(c2, 0.5, out=c1)
        np.add(t, c1, out=a01)  # P01 + P11 dt + q dt^2 / 2
        np.add(t, p01, out=a00)
        a00 *= dt_s
        a00 += p00  # P00 + dt (2 P01 + P11 dt)
        np.multiply(c2, dt_s, out=c1)
        c1 *= 1.0 / 3.0
        a00 += c1  # + q dt^3 / 3
        # Predicted position -> t; innovation -> y.
        np.multiply(v, dt_s, out=t)
        t += p
        np.subtract(z, t, out=y)
        # Gains k0 = a00 / S, k1 = a01 / S with S = a00 + R.
        np.add(a00, r, out=k1)
        np.divide(a00, k1, out=k0)
        np.divide(a01, k1, out=k1)
        # State: p = p_pred + k0 y, v = v + k1 y.
        np.multiply(k0, y, out=c3)
        t += c3
        np.copyto(p, t, where=cont)
        np.multiply(k1, y, out=c3)
        c3 += v
        np.copyto(v, c3, where=cont)
        # Covariance (I - gain H) a: P00 = (1 - k0) a00, P01 = (1 - k0) a01, P11 = a11 - k1 a01.
        np.multiply(k1, a01, out=c3)
        a11 -= c3
        np.copyto(p11, a11, where=cont)
        np.subtract(1.0, k0, out=k0)
        a00 *= k0
        a01 *= k0
        np.copyto(p00, a00, where=cont)
        np.copyto(p01, a01, where=cont)
        if fresh is None:
            return
        # (Re)initialization at the measurement, velocity 0.
        np.copyto(p, z, where=fresh)
        np.copyto(v, 0.0, where=fresh)
        np.copyto(p00, r, where=fresh)
        np.copyto(p01, 0.0, where=fresh)
        np.copyto(p11, self.init_speed_std_mm_s**2, where=fresh)

    def _extrapolate(self, h_s: np.ndarray, out: np.ndarray) -> None:
        np.multiply(self._v, h_s, out=out)
        out += self._p
