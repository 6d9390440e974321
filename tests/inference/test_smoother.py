"""Offline RTS smoother (inference/smoother.py): agreement with the live Kalman filter and with a
textbook RTS written here, accuracy against truth, gaps and segments, irregular time, the noise
estimate, and input errors."""

from __future__ import annotations

import numpy as np
import pytest

from rigstream.inference.filters import KalmanFilter
from rigstream.inference.smoother import estimate_meas_noise_mm, rts_smooth

FRAME_NS = 10_000_000  # 100 Hz


def live(filt: KalmanFilter, t_ns: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
    """Feed (T,) ns and (T, K, 3) mm (NaN = unmeasured) through the live filter; (T, K, 3) mm out."""
    out = np.empty_like(z_mm)
    for i in range(len(t_ns)):
        out[i] = filt.update(int(t_ns[i]), z_mm[i], np.isfinite(z_mm[i]).all(axis=1))
    return out


def sinusoids(t_s: np.ndarray, k: int) -> np.ndarray:
    """Smooth (T, K, 3) mm trajectories: 1-3 Hz sinusoids of 20-40 mm, a different phase per coordinate."""
    freq_hz = np.linspace(1.0, 3.0, 3 * k).reshape(k, 3)
    amp_mm = np.linspace(20.0, 40.0, 3 * k).reshape(k, 3)
    phase = np.arange(3 * k, dtype=float).reshape(k, 3)
    return amp_mm * np.sin(2.0 * np.pi * freq_hz * t_s[:, None, None] + phase)


def line(t_s: np.ndarray, v_mm_s: tuple[float, float, float] = (150.0, -80.0, 40.0)) -> np.ndarray:
    """One keypoint moving at constant velocity: (T, 1, 3) mm."""
    return np.array([10.0, -5.0, 200.0]) + np.outer(t_s, v_mm_s)[:, None, :]


def textbook_rts(t_s: np.ndarray, z: np.ndarray, q: float, r: float, v0_var: float) -> np.ndarray:
    """Scalar-coordinate RTS with explicit 2x2 matrices (no shortcuts); ``z`` (T,) with NaN = unmeasured,
    measured at both ends. Returns the smoothed positions (T,)."""
    h = np.array([[1.0, 0.0]])
    x = np.array([z[0], 0.0])
    p = np.diag([r, v0_var])
    xf, pf, xp, pp, fs = [x], [p], [None], [None], [None]
    for i in range(1, len(t_s)):
        dt = t_s[i] - t_s[i - 1]
        f = np.array([[1.0, dt], [0.0, 1.0]])
        qm = q * np.array([[dt**3 / 3.0, dt**2 / 2.0], [dt**2 / 2.0, dt]])
        x_pred, p_pred = f @ x, f @ p @ f.T + qm
        if np.isfinite(z[i]):
            gain = p_pred @ h.T / (h @ p_pred @ h.T + r)
            x = x_pred + (gain * (z[i] - h @ x_pred)).ravel()
            p = (np.eye(2) - gain @ h) @ p_pred
        else:
            x, p = x_pred, p_pred
        xf.append(x)
        pf.append(p)
        xp.append(x_pred)
        pp.append(p_pred)
        fs.append(f)
    xs = [None] * len(t_s)
    xs[-1] = xf[-1]
    for i in range(len(t_s) - 2, -1, -1):
        c = pf[i] @ fs[i + 1].T @ np.linalg.inv(pp[i + 1])
        xs[i] = xf[i] + c @ (xs[i + 1] - xp[i + 1])
    return np.array([s[0] for s in xs])


# ---------------------------------------------------------------------------------------------- the model


@pytest.mark.parametrize("dropped", [False, True], ids=["all measured", "short gaps"])
def test_last_frame_equals_live_filter(dropped: bool) -> None:
    rng = np.random.default_rng(1)
    n, k = 400, 4
    t_ns = np.cumsum(rng.integers(4_000_000, 6_000_000, n)).astype(np.int64)
    t_s = t_ns * 1e-9
    z = 50.0 + np.cumsum(rng.normal(0.0, 2.0, (n, k, 3)), axis=0) + rng.normal(0.0, 1.5, (n, k, 3))
    if dropped:  # a few unmeasured frames (gaps of at most ~25 ms), the last frame measured
        z[rng.choice(np.arange(1, n - 1), 40, replace=False), rng.integers(0, k, 40)] = np.nan
    params = {"accel_noise_mm_s2": 2000.0, "meas_noise_mm": 1.5, "init_speed_std_mm_s": 300.0,
              "max_gap_s": 0.1}
    smoothed = rts_smooth(t_s, z, **params)
    filtered = live(KalmanFilter(**params), t_ns, z)
    np.testing.assert_allclose(smoothed[-1], filtered[-1], rtol=1e-9, atol=0.0)
    # Everywhere else the smoother uses the future too, so it differs.
    assert np.abs(smoothed[:-1] - filtered[:-1]).max() > 0.1


def test_matches_textbook_rts() -> None:
    rng = np.random.default_rng(2)
    n = 120
    t_s = np.cumsum(rng.uniform(0.004, 0.02, n))
    z = sinusoids(t_s, 2) + rng.normal(0.0, 2.0, (n, 2, 3))
    z[[5, 6, 7, 40, 41, 90], 0] = np.nan  # short gaps (<= 80 ms) in keypoint 0, interpolated
    z[60, 1, 2] = np.nan  # one coordinate missing: the whole keypoint is unmeasured in that frame
    out = rts_smooth(t_s, z, accel_noise_mm_s2=3000.0, meas_noise_mm=np.array([2.0, 1.0]),
                     init_speed_std_mm_s=400.0)
    for kp, noise_mm in enumerate([2.0, 1.0]):
        measured = np.isfinite(z[:, kp]).all(axis=1)
        for c in range(3):
            zc = np.where(measured, z[:, kp, c], np.nan)
            ref = textbook_rts(t_s, zc, q=3000.0**2, r=noise_mm**2, v0_var=400.0**2)
            np.testing.assert_allclose(out[:, kp, c], ref, rtol=1e-9, atol=1e-9)


def test_smoothing_beats_live_filtering_and_raw() -> None:
    # Median |error| at this seed: raw 2.04 mm, live filtered 1.57 mm, smoothed 0.83 mm (ratios
    # 0.50-0.55 and 0.38-0.42 over seeds 0-9).
    rng = np.random.default_rng(0)
    n, k = 1000, 3
    t_ns = np.arange(n, dtype=np.int64) * FRAME_NS
    t_s = t_ns * 1e-9
    truth = sinusoids(t_s, k)
    z = truth + rng.normal(0.0, 3.0, truth.shape)
    smoothed = rts_smooth(t_s, z, accel_noise_mm_s2=1000.0, meas_noise_mm=3.0)
    filtered = live(KalmanFilter(accel_noise_mm_s2=1000.0, meas_noise_mm=3.0), t_ns, z)
    skip = slice(50, None)  # past the initial transient of both

    def err(x: np.ndarray) -> float:
        return float(np.median(np.abs(x[skip] - truth[skip])))

    assert err(smoothed) < 0.7 * err(filtered)
    assert err(smoothed) < 0.5 * err(z)


def test_per_keypoint_noise_and_independence() -> None:
    rng = np.random.default_rng(3)
    n = 300
    t_s = np.arange(n) * 0.01
    z = sinusoids(t_s, 3) + rng.normal(0.0, 2.0, (n, 3, 3))
    z[100:110, 1] = np.nan
    noise_mm = np.array([0.5, 2.0, 8.0])
    out = rts_smooth(t_s, z, meas_noise_mm=noise_mm)
    for kp in range(3):
        alone = rts_smooth(t_s, z[:, kp:kp + 1], meas_noise_mm=float(noise_mm[kp]))
        np.testing.assert_array_equal(out[:, kp:kp + 1], alone)
    # The noise level matters: more assumed noise, smoother output (closer to the truth here).
    assert not np.allclose(out[:, 0], out[:, 2])


# ---------------------------------------------------------------------------------------------- gaps


def test_short_gap_is_interpolated() -> None:
    rng = np.random.default_rng(4)
    t_s = np.arange(200) * 0.01
    truth = line(t_s)
    z = truth + rng.normal(0.0, 0.3, truth.shape)
    z[100:108] = np.nan  # 90 ms between the measurements around the gap, under max_gap_s
    # A low acceleration noise suits a straight line (with the default 1000, the error in the gap is ~1.6 mm).
    out = rts_smooth(t_s, z, accel_noise_mm_s2=100.0, meas_noise_mm=0.3, max_gap_s=0.1)
    assert np.isfinite(out).all()
    # Interpolated, not held: holding the last value would be off by up to 170 mm/s * 80 ms = 14 mm.
    assert np.abs(out[100:108] - truth[100:108]).max() < 0.5


def test_long_gap_cuts_the_track() -> None:
    rng = np.random.default_rng(5)
    t_s = np.arange(260) * 0.01
    truth = sinusoids(t_s, 2)
    z = truth + rng.normal(0.0, 1.0, truth.shape)
    z[:10, 1] = np.nan  # keypoint 1 starts late and ends early
    z[250:, 1] = np.nan
    z[100:130] = np.nan  # 310 ms between the measurements at 99 and 130: a cut
    out = rts_smooth(t_s, z, max_gap_s=0.1)
    assert np.isnan(out[100:130]).all()
    assert np.isfinite(out[:100, 0]).all() and np.isfinite(out[130:, 0]).all()
    assert np.isnan(out[:10, 1]).all() and np.isnan(out[250:, 1]).all()
    assert np.isfinite(out[10:100, 1]).all() and np.isfinite(out[130:250, 1]).all()
    # Each side is smoothed on its own: same as smoothing it alone.
    np.testing.assert_array_equal(out[:100], rts_smooth(t_s[:100], z[:100], max_gap_s=0.1))
    np.testing.assert_array_equal(out[130:], rts_smooth(t_s[130:], z[130:], max_gap_s=0.1))
    # With a longer max_gap_s the same gap is bridged and both sides change.
    bridged = rts_smooth(t_s, z, max_gap_s=0.5)
    assert np.isfinite(bridged[100:130, 0]).all()
    assert np.abs(bridged[130:140] - out[130:140]).max() > 0.01
    assert np.abs(bridged[90:100] - out[90:100]).max() > 0.01


def test_zero_max_gap_returns_the_measurements() -> None:
    t_s = np.arange(5) * 0.01
    z = np.arange(15.0).reshape(5, 1, 3)
    z[2] = np.nan
    out = rts_smooth(t_s, z, max_gap_s=0.0)
    np.testing.assert_array_equal(out, z)


def test_empty_and_single_frame() -> None:
    assert rts_smooth(np.zeros(0), np.zeros((0, 2, 3))).shape == (0, 2, 3)
    assert rts_smooth(np.arange(4.0), np.zeros((4, 0, 3))).shape == (4, 0, 3)
    one = rts_smooth(np.array([1.0]), np.array([[[1.0, 2.0, 3.0], [np.nan, 0.0, 0.0]]]))
    np.testing.assert_array_equal(one, [[[1.0, 2.0, 3.0], [np.nan] * 3]])


# ------------------------------------------------------------------------------------------ irregular time


def test_irregular_times_constant_velocity() -> None:
    rng = np.random.default_rng(6)
    t_s = 3.0 + np.cumsum(rng.uniform(0.002, 0.03, 300))  # 2-30 ms steps, as with dropped frames
    truth = line(t_s, (300.0, -120.0, 60.0))
    z = truth + rng.normal(0.0, 0.05, truth.shape)
    # Low acceleration noise: the model trusts constant velocity, so the timing decides the result.
    params = {"accel_noise_mm_s2": 10.0, "meas_noise_mm": 0.05}
    out = rts_smooth(t_s, z, **params)
    assert np.abs(out - truth).max() < 0.1  # 0.06 mm at this seed
    # A smoother that assumed evenly spaced samples would be millimetres off (3.8 mm at this seed).
    even = rts_smooth(np.linspace(t_s[0], t_s[-1], len(t_s)), z, **params)
    assert np.abs(even - truth).max() > 1.0


# ------------------------------------------------------------------------------------------ noise estimate


def test_estimate_meas_noise_recovers_known_noise() -> None:
    rng = np.random.default_rng(7)
    n = 4000
    t_s = np.arange(n) * 0.01
    truth = 20.0 * np.sin(2.0 * np.pi * 0.5 * t_s)[:, None, None] + np.array([0.0, 5.0, 9.0])  # (T, 1, 3)
    sigma_mm = np.array([2.0, 0.5, 5.0])
    z = truth + rng.normal(0.0, 1.0, (n, 3, 3)) * sigma_mm[None, :, None]
    z[rng.random((n, 3)) < 0.1] = np.nan  # dropped samples
    est = estimate_meas_noise_mm(t_s, z)
    assert est.shape == (3,)
    np.testing.assert_allclose(est, sigma_mm, rtol=0.1)


def test_estimate_meas_noise_with_dropped_frames_on_fast_motion() -> None:
    # 500 mm/s at irregular spacing: a plain z0 - 2 z1 + z2 would see v * (h2 - h1), up to 10 mm.
    rng = np.random.default_rng(8)
    t_s = np.cumsum(rng.choice([0.005, 0.01, 0.02], 3000))
    z = line(t_s, (500.0, -300.0, 200.0)) + rng.normal(0.0, 1.0, (3000, 1, 3))
    np.testing.assert_allclose(estimate_meas_noise_mm(t_s, z), [1.0], rtol=0.1)


def test_estimate_meas_noise_too_few_samples_is_nan() -> None:
    rng = np.random.default_rng(9)
    t_s = np.arange(100) * 0.01
    z = rng.normal(0.0, 1.0, (100, 3, 3))
    z[:, 1] = np.nan  # never measured
    z[5:, 2] = np.nan  # 5 samples
    est = estimate_meas_noise_mm(t_s, z)
    assert np.isfinite(est[0]) and np.isnan(est[1]) and np.isnan(est[2])


# ---------------------------------------------------------------------------------------------- errors


GOOD_T = np.arange(4) * 0.01
GOOD_Z = np.zeros((4, 2, 3))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"t_s": np.zeros((4, 1))}, r"t_s: expected shape \(T,\)"),
    ({"t_s": np.array([0.0, 0.01, 0.01, 0.02])}, "t_s: expected strictly increasing"),
    ({"t_s": np.array([0.0, 0.02, 0.01, 0.03])}, "t_s: expected strictly increasing"),
    ({"t_s": np.array([0.0, np.nan, 0.02, 0.03])}, "t_s: expected finite"),
    ({"t_s": np.arange(5) * 0.01}, "z: expected 5 frames"),
    ({"z": np.zeros((4, 2))}, r"z: expected shape \(T, K, 3\)"),
    ({"z": np.zeros((4, 2, 2))}, r"z: expected shape \(T, K, 3\)"),
    ({"accel_noise_mm_s2": 0.0}, "accel_noise_mm_s2: expected a finite number > 0"),
    ({"accel_noise_mm_s2": np.inf}, "accel_noise_mm_s2"),
    ({"meas_noise_mm": -1.0}, "meas_noise_mm: expected a finite number > 0"),
    ({"meas_noise_mm": "abc"}, "meas_noise_mm: expected a number"),
    ({"meas_noise_mm": np.ones(3)}, r"meas_noise_mm: expected a number or shape \(2,\)"),
    ({"meas_noise_mm": np.array([1.0, np.nan])}, r"meas_noise_mm\[1\]: expected a finite number > 0"),
    ({"init_speed_std_mm_s": np.nan}, "init_speed_std_mm_s"),
    ({"max_gap_s": -0.1}, "max_gap_s: expected a finite number >= 0"),
])
def test_rts_smooth_rejects_bad_input(kwargs: dict, match: str) -> None:
    args = {"t_s": GOOD_T, "z": GOOD_Z, **kwargs}
    with pytest.raises(ValueError, match=f"rts_smooth: {match}"):
        rts_smooth(args.pop("t_s"), args.pop("z"), **args)


@pytest.mark.parametrize(("t_s", "z", "match"), [
    (GOOD_T[::-1], GOOD_Z, "t_s: expected strictly increasing"),
    (GOOD_T, np.zeros((4, 3)), "z: expected shape"),
    (GOOD_T[:3], GOOD_Z, "z: expected 3 frames"),
])
def test_estimate_meas_noise_rejects_bad_input(t_s: np.ndarray, z: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=f"estimate_meas_noise_mm: {match}"):
        estimate_meas_noise_mm(t_s, z)
