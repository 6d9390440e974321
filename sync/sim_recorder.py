"""A simulated neural recorder on the sync line, and the benchmark of the clock alignment.

:class:`SimRecorder` plays a recorder (Open Ephys, SpikeGLX...) whose digital input sees the
Pi's sync edges: its clock has an offset, a rate off by ``drift_ppm`` that wanders slowly
(``wander_ppm``, periods around ``wander_period_s``), it samples at ``rate_hz`` and stamps edges
with integer sample numbers, misses some pulses and sees spurious edges (noise glitches, some
right beside real edges). :func:`sync_train` is the Pi's random-interval train.
:func:`bench_align` runs the alignment on them and scores it against the truth.

Sample numbers: the recorder's continuous sample position of an event at Pi time ``t`` is
``true_samples(t)``; :meth:`SimRecorder.record` stamps it ``floor(true_samples(t) + 0.5)``,
i.e. floor on a sample grid placed half a sample before the nominal sample instants (the
recorder latches the edge on the next sample and labels it with that sample's nominal time).
A constant half-sample shift is indistinguishable from the unknown offset; this placement keeps
stamps unbiased (stamp - truth uniform in [-0.5, 0.5)), so mapped times can be compared with
``true_samples`` directly.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from rigstream.sync.align import AlignmentError, align

logger = logging.getLogger(__name__)


def sync_train(duration_s: float, min_interval_s: float = 0.1, max_interval_s: float = 1.0,
               seed: int = 0, *, start_s: float = 0.0) -> np.ndarray:
    """Rising-edge times of the Pi's sync line: intervals uniform in [min_interval_s,
    max_interval_s], from ``start_s`` for ``duration_s``.

    Returns (N,) float64, Pi seconds, rounded to whole ns (the Pi stamps in integer ns).
    pyControl's Rsync uses 0.55-9.5 s (mean ~5 s); 0.1-1 s gives 10x the pulses.
    """
    if not 0 < min_interval_s <= max_interval_s:
        raise ValueError(f"sync_train: expected 0 < min_interval_s <= max_interval_s, got "
                         f"{min_interval_s} and {max_interval_s}")
    rng = np.random.default_rng(seed)
    n = int(np.ceil(duration_s / min_interval_s)) + 1
    t = start_s + np.cumsum(rng.uniform(min_interval_s, max_interval_s, n))
    t = t[t <= start_s + duration_s]
    return np.round(t * 1e9) / 1e9


def drop_and_add(t_s: np.ndarray, missing: float, spurious: float, rng: np.random.Generator,
                 near_fraction: float = 0.25, near_s: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """A faulty view of edges ``t_s`` (N,) float64: each edge missed with probability
    ``missing``, ``spurious * N`` glitch edges added (Poisson), ``near_fraction`` of them within
    ``near_s`` of an edge that was seen (ringing, contact bounce), the rest uniform over the span.

    Returns (times (M,) float64 sorted, truth_index (M,) int64: index into t_s, -1 spurious)."""
    t_s = np.asarray(t_s, dtype=np.float64)
    n = t_s.size
    keep = rng.random(n) >= missing
    n_spur = int(rng.poisson(spurious * n)) if n else 0
    n_near = int(rng.binomial(n_spur, near_fraction)) if n_spur else 0
    lo, hi = (float(t_s.min()), float(t_s.max())) if n else (0.0, 0.0)
    far = rng.uniform(lo, hi, n_spur - n_near)
    seen = t_s[keep]
    near = (seen[rng.integers(0, seen.size, n_near)] + rng.uniform(-near_s, near_s, n_near)
            if n_near and seen.size else np.zeros(0))
    n_spur = far.size + near.size
    times = np.concatenate([t_s[keep], far, near])
    truth = np.concatenate([np.flatnonzero(keep), np.full(n_spur, -1)]).astype(np.int64)
    order = np.argsort(times, kind="stable")
    return times[order], truth[order]


class SimRecorder:
    """A neural recorder's clock and digital input, as functions of Pi time.

    Recorder time ``t_rec = offset_s + t_pi + integral_0^t_pi drift(u) du`` with
    ``drift(u) = drift_ppm + sum_k A_k sin(2 pi u / P_k + phi_k)`` (ppm), three sinusoids with
    periods P_k in [wander_period_s / 2, 2 wander_period_s] and sum |A_k| = wander_ppm, so
    |drift| <= |drift_ppm| + wander_ppm. Sample position = t_rec * rate_hz.
    ``pi_jitter_us``: rms error of the Pi's own edge timestamps (the physical edge the recorder
    sees is the Pi's timestamp minus a Gaussian error of that size).
    """

    def __init__(self, rate_hz: float = 30_000.0, offset_s: float = 1234.5, drift_ppm: float = 50.0,
                 wander_ppm: float = 10.0, wander_period_s: float = 1800.0, missing: float = 0.05,
                 spurious: float = 0.01, seed: int = 0, *, near_fraction: float = 0.25,
                 pi_jitter_us: float = 0.0) -> None:
        if rate_hz <= 0:
            raise ValueError(f"SimRecorder.rate_hz: expected a positive rate, got {rate_hz}")
        if not (0 <= missing < 1 and spurious >= 0):
            raise ValueError(f"SimRecorder: expected 0 <= missing < 1 and spurious >= 0, got "
                             f"missing={missing}, spurious={spurious}")
        self.rate_hz = float(rate_hz)
        self.offset_s = float(offset_s)
        self.drift_ppm = float(drift_ppm)
        self.wander_ppm = float(wander_ppm)
        self.wander_period_s = float(wander_period_s)
        self.missing = float(missing)
        self.spurious = float(spurious)
        self.near_fraction = float(near_fraction)
        self.pi_jitter_us = float(pi_jitter_us)
        self.seed = seed
        rng = np.random.default_rng([seed, 0x5EC])
        weights = rng.random(3)
        self._amp = self.wander_ppm * 1e-6 * weights / weights.sum()  # (3,) fractional rate
        self._period_s = self.wander_period_s * 2.0 ** rng.uniform(-1, 1, 3)
        self._phase = rng.uniform(0, 2 * np.pi, 3)
        self._rng = np.random.default_rng([seed, 0xEC0])

    def drift(self, t_pi_s: Any) -> np.ndarray:
        """The recorder's instantaneous rate error at Pi times (any shape), ppm."""
        t = np.asarray(t_pi_s, dtype=np.float64)[..., None]
        wander = (self._amp * np.sin(2 * np.pi * t / self._period_s + self._phase)).sum(-1)
        return self.drift_ppm + wander * 1e6

    def recorder_time_s(self, t_pi_s: Any) -> np.ndarray:
        """Recorder seconds at Pi times ``t_pi_s`` (any shape, float64 s)."""
        t = np.asarray(t_pi_s, dtype=np.float64)
        w = 2 * np.pi / self._period_s
        tt = t[..., None]
        wander = (self._amp / w * (np.cos(self._phase) - np.cos(w * tt + self._phase))).sum(-1)
        return self.offset_s + t * (1 + self.drift_ppm * 1e-6) + wander

    def true_samples(self, t_pi_s: Any) -> np.ndarray:
        """Continuous sample position of events at Pi times ``t_pi_s`` (float64, same shape)."""
        return self.recorder_time_s(t_pi_s) * self.rate_hz

    def record(self, t_pi_s: Any) -> tuple[np.ndarray, np.ndarray]:
        """The recorder's view of edges the Pi stamped at ``t_pi_s`` (N,) float64 s.

        Returns (sample_numbers (M,) int64 sorted, truth_index (M,) int64: index into t_pi_s,
        -1 for a spurious edge). Each call draws new faults."""
        t = np.asarray(t_pi_s, dtype=np.float64)
        if self.pi_jitter_us:
            t = t - self._rng.normal(0.0, self.pi_jitter_us * 1e-6, t.shape)
        times, truth = drop_and_add(t, self.missing, self.spurious, self._rng, self.near_fraction)
        samples = np.floor(self.true_samples(times) + 0.5).astype(np.int64)
        order = np.argsort(samples, kind="stable")
        return samples[order], truth[order]


def bench_align(duration_s: float = 3600.0, rate_hz: float = 30000.0, drift_ppm: float = 50.0,
                missing: float = 0.05, spurious: float = 0.01, seed: int = 0, *,
                min_interval_s: float = 0.1, max_interval_s: float = 1.0, wander_ppm: float = 10.0,
                pi_jitter_us: float = 0.0, frame_rate_hz: float = 100.0, **align_kw: Any) -> dict[str, Any]:
    """Align a simulated session and score it; returns a flat dict ready to print.

    The Pi's list is thinned and corrupted independently (``missing``, ``spurious``), as is the
    recorder's. Frame times at ``frame_rate_hz`` over the session (Pi clock) are mapped with
    the fitted mapping and compared with the recorder's truth.
    """
    rng = np.random.default_rng([seed, 0xA])
    t_true = sync_train(duration_s, min_interval_s, max_interval_s, seed=seed)
    a, a_truth = drop_and_add(t_true, missing, spurious, rng)
    rec = SimRecorder(rate_hz=rate_hz, offset_s=1234.5, drift_ppm=drift_ppm, wander_ppm=wander_ppm,
                      missing=missing, spurious=spurious, seed=seed, pi_jitter_us=pi_jitter_us)
    b, b_truth = rec.record(t_true)
    started = time.perf_counter()
    try:
        mapping = align(a, b, units_a="s", units_b="samples", **align_kw)
    except AlignmentError as e:
        return {"error": str(e), "pulses_a": int(a.size), "pulses_b": int(b.size)}
    elapsed = time.perf_counter() - started
    # the matched pairs, recovered from the mapping's unmatched lists
    ia = np.setdiff1d(np.arange(a.size), mapping.unmatched_a)
    ib = np.setdiff1d(np.arange(b.size), mapping.unmatched_b)
    ta, tb = a_truth[ia], b_truth[ib]
    correct = (ta == tb) & (ta >= 0)
    present_both = np.intersect1d(a_truth[a_truth >= 0], b_truth[b_truth >= 0])
    t_frames = np.arange(t_true[0], t_true[-1], 1.0 / frame_rate_hz)
    err_us = (mapping.to_b(t_frames) - rec.true_samples(t_frames)) / rate_hz * 1e6
    abs_err = np.abs(err_us)
    us_per_sample = 1e6 / rate_hz
    return {
        "duration_s": duration_s, "intervals_s": [min_interval_s, max_interval_s], "rate_hz": rate_hz,
        "drift_ppm_true": drift_ppm, "wander_ppm_true": wander_ppm,
        "pulses_a": int(a.size), "pulses_b": int(b.size), "true_pulses_on_both": int(present_both.size),
        "matched": mapping.n_matched, "true_matched": int(correct.sum()),
        "all_true_matched": bool(np.array_equal(np.sort(ta[correct]), present_both)),
        "false_matches": int((~correct).sum()), "outliers": int(mapping.outliers.size),
        "unmatched_a": int(mapping.unmatched_a.size), "unmatched_b": int(mapping.unmatched_b.size),
        "scale": mapping.scale, "drift_ppm": round(mapping.drift_ppm, 3),
        "residual_rms_samples": round(mapping.residual_rms, 4),
        "residual_max_samples": round(mapping.residual_max, 4),
        "residual_rms_us": round(mapping.residual_rms * us_per_sample, 3),
        "residual_max_us": round(mapping.residual_max * us_per_sample, 3),
        "frames": int(t_frames.size),
        "frame_rms_us": round(float(np.sqrt(np.mean(err_us**2))), 3),
        "frame_p99_us": round(float(np.percentile(abs_err, 99)), 3),
        "frame_max_us": round(float(abs_err.max()), 3),
        "align_s": round(elapsed, 3),
    }
