"""The simulated recorder and sync train: intervals, clock model, faults, quantization."""

from __future__ import annotations

import numpy as np
import pytest

from rigstream.sync.sim_recorder import SimRecorder, drop_and_add, sync_train


def test_sync_train_intervals_and_ns_resolution() -> None:
    t = sync_train(600.0, 0.55, 9.5, seed=3)
    d = np.diff(t)
    assert d.min() >= 0.55 - 1e-9 and d.max() <= 9.5 + 1e-9
    assert t[-1] <= 600.0
    assert np.array_equal(t, np.round(t * 1e9) / 1e9)
    assert np.array_equal(t, sync_train(600.0, 0.55, 9.5, seed=3))
    assert not np.array_equal(t, sync_train(600.0, 0.55, 9.5, seed=4))
    with pytest.raises(ValueError, match="min_interval_s <= max_interval_s"):
        sync_train(10.0, 2.0, 1.0)


def test_clock_drift_is_bounded_and_integrates_to_recorder_time() -> None:
    rec = SimRecorder(drift_ppm=-40.0, wander_ppm=15.0, wander_period_s=600.0, seed=8)
    t = np.linspace(0.0, 7200.0, 20001)
    drift = rec.drift(t)
    assert np.abs(drift).max() <= 55.0 + 1e-9
    assert drift.max() - drift.min() > 1.0  # it does wander
    # d(t_rec)/d(t_pi) - 1 == drift
    rate = np.gradient(rec.recorder_time_s(t), t)
    assert np.abs((rate - 1) * 1e6 - drift).max() < 0.01
    assert rec.recorder_time_s(0.0) == pytest.approx(rec.offset_s)


def test_record_quantizes_drops_and_adds() -> None:
    t = sync_train(3600.0, 0.1, 1.0, seed=1)
    rec = SimRecorder(rate_hz=25_000.0, missing=0.1, spurious=0.02, seed=1)
    samples, truth = rec.record(t)
    assert samples.dtype == np.int64 and truth.dtype == np.int64
    assert np.all(np.diff(samples) >= 0)
    real = truth >= 0
    assert abs(1 - real.sum() / t.size - 0.1) < 0.02
    assert abs((~real).sum() / t.size - 0.02) < 0.008
    err = samples[real] - rec.true_samples(t[truth[real]])
    assert err.min() >= -0.5 - 1e-6 and err.max() < 0.5 + 1e-6
    assert abs(err.mean()) < 0.02  # unbiased: comparable with true_samples directly
    # a second recording of the same line draws new faults
    samples2, _ = rec.record(t)
    assert not np.array_equal(samples, samples2)


def test_pi_jitter_moves_the_recorded_edges() -> None:
    t = sync_train(600.0, 0.1, 1.0, seed=2)
    rec = SimRecorder(rate_hz=1e9, missing=0.0, spurious=0.0, pi_jitter_us=5.0, seed=2)
    samples, truth = rec.record(t)
    err_us = (samples - rec.true_samples(t[truth])) / 1e3
    assert 4.0 < np.std(err_us) < 6.0


def test_drop_and_add_truth() -> None:
    t = np.arange(1000.0)
    times, truth = drop_and_add(t, 0.0, 0.05, np.random.default_rng(0), near_fraction=1.0, near_s=0.001)
    assert np.array_equal(times[truth >= 0], t)
    spurious = times[truth < 0]
    assert 20 < spurious.size < 80
    assert np.abs(spurious - np.round(spurious)).max() <= 0.001
