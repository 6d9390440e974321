"""Pose filters: smoothing vs truth, lag, prediction, irregular time, gaps, independence, factory."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rigstream.inference.backends import FILTER_KINDS, make_filter
from rigstream.inference.bench3d import bench_filter
from rigstream.inference.filters import KalmanFilter, OneEuroFilter, PoseFilter

FRAME_NS = 5_000_000  # 200 Hz


def run(filt: PoseFilter, t_ns: np.ndarray, xyz_mm: np.ndarray, valid: np.ndarray | None = None,
        noise_scale: np.ndarray | None = None) -> np.ndarray:
    """Feed (N,) ns, (N, K, 3) mm, (N, K) bool through ``filt``; return the outputs (N, K, 3) mm."""
    n, k = xyz_mm.shape[:2]
    valid = np.ones((n, k), bool) if valid is None else valid
    out = np.empty_like(xyz_mm)
    for i in range(n):
        out[i] = filt.update(int(t_ns[i]), xyz_mm[i], valid[i],
                             None if noise_scale is None else noise_scale[i])
    return out


def ramp(t_ns: np.ndarray, k: int, v_mm_s: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Constant-velocity trajectories (N, K, 3) mm and their velocity (K, 3) mm/s."""
    v = np.arange(1, 3 * k + 1, dtype=float).reshape(k, 3) * 20.0 - 150.0 if v_mm_s is None else v_mm_s
    x0 = np.linspace(-50.0, 50.0, 3 * k).reshape(k, 3)
    return x0 + v * (t_ns[:, None, None] * 1e-9), v


def one_euro_reference(t_s: np.ndarray, x: np.ndarray, min_cutoff_hz: float, beta: float,
                       d_cutoff_hz: float) -> np.ndarray:
    """Scalar One-Euro filter written directly from Casiez et al. (2012), for cross-checking."""
    def alpha(fc: float, dt: float) -> float:
        tau = 1.0 / (2.0 * math.pi * fc)
        return 1.0 / (1.0 + tau / dt)

    out = np.empty_like(x)
    x_f, dx_f, x_prev = x[0], 0.0, x[0]
    out[0] = x_f
    for i in range(1, len(x)):
        dt = t_s[i] - t_s[i - 1]
        dx_f = dx_f + alpha(d_cutoff_hz, dt) * ((x[i] - x_prev) / dt - dx_f)
        x_f = x_f + alpha(min_cutoff_hz + beta * abs(dx_f), dt) * (x[i] - x_f)
        x_prev = x[i]
        out[i] = x_f
    return out


# ---------------------------------------------------------------------------------------------- smoothing


def noisy_sinusoids(seed: int = 0, n: int = 800, k: int = 4, noise_mm: float = 2.0):
    rng = np.random.default_rng(seed)
    t_ns = np.arange(n, dtype=np.int64) * FRAME_NS
    freq_hz = rng.uniform(0.2, 0.4, (k, 3))
    phase = rng.uniform(0.0, 2 * np.pi, (k, 3))
    truth = 10.0 * np.sin(2 * np.pi * freq_hz * (t_ns[:, None, None] * 1e-9) + phase)
    return t_ns, truth, truth + rng.normal(0.0, noise_mm, truth.shape)


@pytest.mark.parametrize(("params", "min_gain"), [
    ({"kind": "kalman", "accel_noise_mm_s2": 100.0, "meas_noise_mm": 2.0}, 2.0),
    ({"kind": "one_euro", "min_cutoff_hz": 1.0, "beta": 0.1}, 1.5),
])
def test_filters_reduce_noise_on_a_smooth_trajectory(params, min_gain):
    """10 mm sinusoids at 0.2-0.4 Hz plus 2 mm Gaussian noise, 200 Hz."""
    t_ns, truth, meas = noisy_sinusoids()
    out = run(make_filter(**params), t_ns, meas)
    skip = 100  # 0.5 s to settle

    def rms(a):
        return float(np.sqrt(np.mean((a[skip:] - truth[skip:]) ** 2)))

    assert rms(out) * min_gain <= rms(meas), (rms(meas), rms(out))


def test_one_euro_matches_a_scalar_reference_with_irregular_time():
    rng = np.random.default_rng(3)
    t_ns = np.cumsum(rng.integers(2_000_000, 15_000_000, 300))
    x = np.cumsum(rng.normal(0.0, 3.0, (300, 2, 3)), axis=0)
    params = {"min_cutoff_hz": 1.5, "beta": 0.05, "d_cutoff_hz": 2.0}
    out = run(OneEuroFilter(**params), t_ns, x)
    for k in range(2):
        for c in range(3):
            ref = one_euro_reference(t_ns * 1e-9, x[:, k, c], **params)
            np.testing.assert_allclose(out[:, k, c], ref, rtol=1e-9, atol=1e-9)


def test_kalman_matches_a_matrix_reference_with_irregular_time_and_noise_scale():
    rng = np.random.default_rng(4)
    n, q, meas_mm, v0_std = 60, 300.0**2, 2.0, 500.0
    t_ns = np.cumsum(rng.integers(3_000_000, 12_000_000, n))
    z = np.cumsum(rng.normal(0.0, 3.0, n))
    scale = rng.uniform(0.5, 3.0, n)
    filt = KalmanFilter(accel_noise_mm_s2=300.0, meas_noise_mm=meas_mm, init_speed_std_mm_s=v0_std)
    h = np.array([[1.0, 0.0]])
    for i in range(n):
        out = filt.update(int(t_ns[i]), np.full((1, 3), z[i]), np.ones(1, bool), noise_scale=scale[i:i + 1])
        r = (meas_mm * scale[i]) ** 2
        if i == 0:
            x, p = np.array([z[i], 0.0]), np.diag([r, v0_std**2])
        else:
            dt = (t_ns[i] - t_ns[i - 1]) * 1e-9
            f = np.array([[1.0, dt], [0.0, 1.0]])
            x, p = f @ x, f @ p @ f.T + q * np.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]])
            gain = p @ h.T / (h @ p @ h.T + r)
            x, p = x + gain[:, 0] * (z[i] - x[0]), (np.eye(2) - gain @ h) @ p
        np.testing.assert_allclose(out[0], x[0], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(filt.predict(0.01)[0], x[0] + 0.01 * x[1], rtol=1e-10, atol=1e-9)


# ------------------------------------------------------------------------------------- lag, prediction


def test_one_euro_beta_cuts_lag_on_a_fast_ramp_and_lag_is_bounded():
    t_ns = np.arange(400, dtype=np.int64) * FRAME_NS
    v = np.full((1, 3), 300.0)
    x, _ = ramp(t_ns, 1, v)
    lag = {}
    for beta in (0.0, 0.1):
        out = run(OneEuroFilter(min_cutoff_hz=1.0, beta=beta, d_cutoff_hz=5.0), t_ns, x)
        lag[beta] = float(np.mean(x[-1] - out[-1]))
        # Steady-state lag of an exponential smoother on a ramp: v / (2 pi fc), fc = min_cutoff + beta v.
        bound = 300.0 / (2 * np.pi * (1.0 + beta * 300.0))
        assert 0.0 < lag[beta] <= bound * 1.001
    assert lag[0.1] < lag[0.0] / 10


@pytest.mark.parametrize("irregular", [False, True])
def test_kalman_predict_reaches_the_future_position_on_a_ramp(irregular):
    rng = np.random.default_rng(5)
    steps = rng.integers(2_000_000, 15_000_000, 300) if irregular else np.full(300, FRAME_NS)
    t_ns = np.cumsum(steps)
    x, v = ramp(t_ns, 3)
    filt = KalmanFilter()
    out = run(filt, t_ns, x)
    np.testing.assert_allclose(out[-1], x[-1], atol=1e-6)
    horizon_s = 0.03
    np.testing.assert_allclose(filt.predict(horizon_s), x[-1] + v * horizon_s, atol=1e-6)


def test_kalman_predict_on_a_noisy_ramp():
    rng = np.random.default_rng(6)
    t_ns = np.arange(600, dtype=np.int64) * FRAME_NS
    x, v = ramp(t_ns, 4)
    meas = x + rng.normal(0.0, 1.0, x.shape)
    filt = KalmanFilter(accel_noise_mm_s2=200.0, meas_noise_mm=1.0)
    horizon_s = 0.05
    err = np.empty((500, 4, 3))
    for i in range(600):
        filt.update(int(t_ns[i]), meas[i], np.ones(4, bool))
        if i >= 100:
            err[i - 100] = filt.predict(horizon_s) - (x[i] + v * horizon_s)
    # Extrapolating the last two raw measurements instead: ~15 mm RMS at 1 mm noise.
    naive = meas[100:] + (meas[100:] - meas[99:-1]) * (horizon_s / 0.005) - (x[100:] + v * horizon_s)
    rms, rms_naive = np.sqrt(np.mean(err**2)), np.sqrt(np.mean(naive**2))
    assert rms < 2.0 and rms < rms_naive / 5, (rms, rms_naive)
    assert abs(err.mean()) < 0.2  # no bias on a ramp


@pytest.mark.parametrize("irregular", [False, True])
def test_one_euro_predict_uses_the_filtered_derivative_and_real_dt(irregular):
    rng = np.random.default_rng(7)
    steps = rng.integers(2_000_000, 15_000_000, 400) if irregular else np.full(400, FRAME_NS)
    t_ns = np.cumsum(steps)
    x, v = ramp(t_ns, 2)
    filt = OneEuroFilter(min_cutoff_hz=1.0, beta=0.05, d_cutoff_hz=5.0)
    out = run(filt, t_ns, x)
    horizon_s = 0.04
    # The raw derivative with the actual dt is exact on a ramp, so the extrapolation step is v dt.
    np.testing.assert_allclose(filt.predict(horizon_s) - out[-1], v * horizon_s, rtol=1e-6, atol=1e-9)
    # The steady lag v / (2 pi fc) does not depend on dt, even when dt varies.
    lag = x[-1] - out[-1]
    np.testing.assert_allclose(lag, v / (2 * np.pi * (1.0 + 0.05 * np.abs(v))), rtol=1e-4)
    np.testing.assert_allclose(filt.predict(horizon_s), x[-1] + v * horizon_s - lag, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------- gaps


@pytest.mark.parametrize("kind", ["kalman", "one_euro"])
def test_missing_keypoint_is_held_as_prediction_then_nan(kind):
    filt = make_filter(kind, max_gap_s=0.1)
    t_ns = np.arange(300, dtype=np.int64) * FRAME_NS
    x, _ = ramp(t_ns, 3)
    valid = np.ones((300, 3), bool)
    valid[200:, 0] = False
    out = run(filt, t_ns, x, valid)
    last = out[199, 0]  # the state at the last measurement
    step = out[200, 0] - last  # the filter's velocity times one frame
    assert np.all(step != 0.0)
    for i in range(200, 300):
        if i - 199 <= 20:  # gap <= 100 ms (max_gap_s included): extrapolated along a straight line
            np.testing.assert_allclose(out[i, 0], last + step * (i - 199), rtol=1e-9, atol=1e-9)
        else:
            assert np.all(np.isnan(out[i, 0])), i
    assert np.all(np.isnan(filt.predict(0.01)[0]))
    assert np.all(np.isfinite(out[:, 1:]))


def test_kalman_hold_follows_the_ramp():
    t_ns = np.arange(300, dtype=np.int64) * FRAME_NS
    x, _ = ramp(t_ns, 2)
    valid = np.ones((300, 2), bool)
    valid[250:, 1] = False
    out = run(KalmanFilter(), t_ns, x, valid)
    np.testing.assert_allclose(out[250:270, 1], x[250:270, 1], atol=1e-6)  # the prediction is exact here
    assert np.isnan(out[270:, 1]).all()


@pytest.mark.parametrize("make", [KalmanFilter, OneEuroFilter])
def test_nan_or_inf_coordinates_count_as_invalid(make):
    t_ns = np.arange(20, dtype=np.int64) * FRAME_NS
    x, _ = ramp(t_ns, 2)
    ref = run(make(), t_ns, x)
    bad = x.copy()
    bad[10, 0, 1] = np.nan
    bad[11, 0, 2] = np.inf
    flagged = np.ones((20, 2), bool)
    flagged[10:12, 0] = False
    np.testing.assert_array_equal(run(make(), t_ns, bad), run(make(), t_ns, x, flagged))
    assert np.isfinite(run(make(), t_ns, bad)).all()
    assert not np.array_equal(run(make(), t_ns, bad), ref)


@pytest.mark.parametrize("make", [KalmanFilter, OneEuroFilter])
def test_reinitializes_after_a_long_gap(make):
    filt = make(max_gap_s=0.1)
    rng = np.random.default_rng(8)
    valid = np.ones(2, bool)
    for i in range(50):
        filt.update(i * FRAME_NS, rng.normal(0.0, 2.0, (2, 3)), valid)
    # Keypoint 0 vanishes for 150 ms, and reappears 200 mm away; keypoint 1 never stops.
    only1 = np.array([False, True])
    for i in range(50, 80):
        filt.update(i * FRAME_NS, rng.normal(0.0, 2.0, (2, 3)), only1)
    back = np.array([[200.0, -100.0, 50.0], rng.normal(0.0, 2.0, 3)])
    out = filt.update(80 * FRAME_NS, back, valid)
    np.testing.assert_array_equal(out[0], back[0])
    assert np.isfinite(filt.predict(0.0)).all()
    np.testing.assert_array_equal(filt.predict(0.05)[0], back[0])  # velocity restarts at 0
    assert not np.array_equal(out[1], back[1])  # still smoothed


@pytest.mark.parametrize("make", [KalmanFilter, OneEuroFilter])
def test_short_gap_does_not_reinitialize(make):
    filt = make(max_gap_s=0.1)
    valid = np.ones(1, bool)
    for i in range(50):
        filt.update(i * FRAME_NS, np.zeros((1, 3)), valid)
    for i in range(50, 60):  # 55 ms gap
        filt.update(i * FRAME_NS, np.zeros((1, 3)), ~valid)
    out = filt.update(60 * FRAME_NS, np.full((1, 3), 50.0), valid)
    assert np.all(out[0] < 50.0)


@pytest.mark.parametrize("make", [KalmanFilter, OneEuroFilter])
def test_keypoints_are_independent(make):
    rng = np.random.default_rng(9)
    t_ns = np.cumsum(rng.integers(3_000_000, 8_000_000, 200))
    x = np.cumsum(rng.normal(0.0, 2.0, (200, 4, 3)), axis=0)
    valid = np.ones((200, 4), bool)
    ref = run(make(), t_ns, x, valid)
    x2, valid2 = x.copy(), valid.copy()
    x2[50:120, 0] = np.nan  # long gap with NaN coordinates
    valid2[130:135, 0] = False  # short gap
    x2[140:, 0] += 500.0  # a jump
    scale = np.ones((200, 4))
    scale[:, 0] = 7.0
    out = run(make(), t_ns, x2, valid2, noise_scale=scale)
    np.testing.assert_array_equal(out[:, 1:], ref[:, 1:])


def test_kalman_noise_scale_weights_measurements():
    filt = KalmanFilter(meas_noise_mm=1.0)
    valid = np.ones(2, bool)
    for i in range(100):
        filt.update(i * FRAME_NS, np.zeros((2, 3)), valid)
    out = filt.update(100 * FRAME_NS, np.full((2, 3), 10.0), valid, noise_scale=np.array([10.0, 1.0]))
    assert np.all(out[0] < out[1] / 5)
    # A non-finite or non-positive scale marks the keypoint unmeasured for that frame (held).
    out = filt.update(101 * FRAME_NS, np.full((2, 3), 1e3), valid, noise_scale=np.array([np.nan, 0.0]))
    assert np.all(np.abs(out) < 10.0)


# ---------------------------------------------------------------------------------------------- contract


@pytest.mark.parametrize("make", [KalmanFilter, OneEuroFilter])
def test_time_must_increase(make):
    filt = make()
    filt.update(1_000, np.zeros((2, 3)), np.ones(2, bool))
    for bad in (1_000, 999):
        with pytest.raises(ValueError, match=rf"got {bad} ns after 1000 ns"):
            filt.update(bad, np.zeros((2, 3)), np.ones(2, bool))
    filt.update(1_001, np.zeros((2, 3)), np.ones(2, bool))  # the filter is still usable


@pytest.mark.parametrize("make", [KalmanFilter, OneEuroFilter])
def test_shapes_outputs_and_reset(make):
    filt = make()
    with pytest.raises(RuntimeError, match="update"):
        filt.predict(0.01)
    out = filt.update(0, np.ones((3, 3)), np.ones(3, bool))
    assert out.shape == (3, 3) and out.dtype == np.float64 and not out.flags.writeable
    assert filt.keypoints == 3 and filt.last_t_ns == 0
    with pytest.raises(ValueError, match=r"expected \(3, 3\)"):
        filt.update(1, np.ones((4, 3)), np.ones(4, bool))
    with pytest.raises(ValueError, match=r"valid: expected shape \(3,\)"):
        filt.update(1, np.ones((3, 3)), np.ones(2, bool))
    with pytest.raises(ValueError, match=r"noise_scale: expected shape \(3,\)"):
        filt.update(1, np.ones((3, 3)), np.ones(3, bool), noise_scale=np.ones(4))
    with pytest.raises(ValueError, match=r"xyz: expected shape \(K, 3\)"):
        filt.update(1, np.ones((3, 2)), np.ones(3, bool))
    with pytest.raises(ValueError, match="dt_s"):
        filt.predict(-0.01)
    filt.update(1_000_000, np.full((3, 3), 5.0), np.ones(3, bool))
    filt.reset()
    assert filt.last_t_ns is None
    # After reset: earlier times, another K, and no memory of the old state.
    out = filt.update(-5, np.full((5, 3), 7.0), np.ones(5, bool))
    np.testing.assert_array_equal(out, np.full((5, 3), 7.0))
    # The first pose can have invalid keypoints; they are NaN until seen.
    filt.reset()
    out = filt.update(0, np.ones((2, 3)), np.array([True, False]))
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()


def test_make_filter():
    assert make_filter("none") is None
    f = make_filter("one_euro", min_cutoff_hz=2.0, beta=0.02)
    assert isinstance(f, OneEuroFilter) and f.min_cutoff_hz == 2.0 and f.beta == 0.02
    k = make_filter("kalman", accel_noise_mm_s2=50, meas_noise_mm=3, max_gap_s=0.2)
    assert isinstance(k, KalmanFilter) and k.meas_noise_mm == 3.0 and k.max_gap_s == 0.2
    assert set(FILTER_KINDS) == {"none", "one_euro", "kalman"}
    with pytest.raises(ValueError, match=r"expected one of \['none', 'one_euro', 'kalman'\], got 'ema'"):
        make_filter("ema")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['min_cutoff'\].*min_cutoff_hz"):
        make_filter("one_euro", min_cutoff=1.0)
    with pytest.raises(ValueError, match="meas_noise_mm"):
        make_filter("kalman", beta=0.1)
    with pytest.raises(ValueError, match="takes no parameters"):
        make_filter("none", beta=0.1)
    with pytest.raises(ValueError, match=r"beta: expected a finite number >= 0, got -1"):
        make_filter("one_euro", beta=-1)
    with pytest.raises(ValueError, match="meas_noise_mm: expected a finite number > 0"):
        make_filter("kalman", meas_noise_mm=0)
    with pytest.raises(ValueError, match="max_gap_s: expected a number"):
        make_filter("kalman", max_gap_s="long")


def test_bench_filter():
    for kind in ("one_euro", "kalman"):
        result = bench_filter(kind, keypoints=5, n=100)
        assert result["kind"] == kind and result["median_us"] > 0 and result["predict_median_us"] > 0
    assert bench_filter("none", n=10)["median_us"] == 0.0
