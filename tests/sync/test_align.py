"""Clock alignment from a random-interval sync line: matching, fitting, files, failures.

The trains come from the simulated recorder (:mod:`rigstream.sync.sim_recorder`), whose truth
says which edges are the same pulse and where every Pi time lands on the recorder's clock.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from rigstream.config import InputError
from rigstream.sync.align import AlignmentError, ClockMapping, align, fit_mapping, match_pulses
from rigstream.sync.sim_recorder import SimRecorder, bench_align, drop_and_add, sync_train


def _session(seed: int, duration_s: float = 3600.0, interval_s: tuple[float, float] = (0.1, 1.0),
             rate_hz: float = 30_000.0, **rec_kw: float,
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, SimRecorder]:
    """(true edges (N,) s, Pi list a (Na,) s, its truth (Na,), recorder list b (Nb,) samples,
    its truth (Nb,), the recorder); 5% missing and 1% spurious on each side."""
    t_true = sync_train(duration_s, *interval_s, seed=seed)
    a, a_truth = drop_and_add(t_true, 0.05, 0.01, np.random.default_rng([seed, 1]))
    rec = SimRecorder(rate_hz=rate_hz, offset_s=987.6, drift_ppm=50.0, wander_ppm=10.0, missing=0.05,
                      spurious=0.01, seed=seed, **rec_kw)
    b, b_truth = rec.record(t_true)
    return t_true, a, a_truth, b, b_truth, rec


def _indistinguishable(t: np.ndarray, truth: np.ndarray, ids: np.ndarray, within: float) -> np.ndarray:
    """The pulses in ``ids`` that have another edge within ``within`` on this side."""
    out = []
    for p in ids:
        k = np.flatnonzero(truth == p)[0]
        if np.min(np.abs(np.delete(t, k) - t[k])) <= within:
            out.append(p)
    return np.array(out, dtype=np.int64)


# ------------------------------------------------------------------------------ acceptance


@pytest.mark.parametrize(("interval_s", "rms_us", "max_us"), [((0.1, 1.0), 3.0, 15.0),
                                                              ((0.55, 9.5), 6.0, 25.0)])
def test_acceptance_one_hour(interval_s: tuple[float, float], rms_us: float, max_us: float) -> None:
    """1 h, 30 kHz, 50 ppm drift wandering by 10 ppm, 5% missing and 1% spurious edges on each
    side. Measured (seed 3): frame times 0.72 / 1.7 µs rms / max with 0.1-1 s intervals, 2.72 /
    8.1 µs with 0.55-9.5 s; no pulse lost, no false match."""
    t_true, a, a_truth, b, b_truth, rec = _session(3, interval_s=interval_s)
    match = match_pulses(a, b)
    # no false match
    assert np.array_equal(a_truth[match.ia], b_truth[match.ib])
    assert (a_truth[match.ia] >= 0).all()
    # every pulse seen on both sides is matched, unless a glitch sits within a sample of it
    both = np.intersect1d(a_truth[a_truth >= 0], b_truth[b_truth >= 0])
    lost = np.setdiff1d(both, a_truth[match.ia])
    excused = np.union1d(_indistinguishable(a, a_truth, lost, 1.5 / rec.rate_hz),
                         _indistinguishable(b.astype(float), b_truth, lost, 1.5))
    assert np.setdiff1d(lost, excused).size == 0, f"true pulses not matched: {lost}"
    assert lost.size <= 2
    assert set(match.unmatched_a) | set(match.ia) == set(range(a.size))
    assert set(match.unmatched_b) | set(match.ib) == set(range(b.size))

    mapping = fit_mapping(a[match.ia], b[match.ib], units_a="s", units_b="samples")
    assert mapping.n_matched == match.n_matched
    assert abs(mapping.scale / 30_000.0 - 1 - 50e-6) < 15e-6  # mean rate: 50 ppm +- the wander
    # drift_ppm: the local rate's largest departure from the session's mean rate
    t_grid = np.linspace(t_true[0], t_true[-1], 5001)
    true_rate = 1 + rec.drift(t_grid) * 1e-6
    true_dev_ppm = np.abs(true_rate / (mapping.scale / rec.rate_hz) - 1).max() * 1e6
    assert abs(mapping.drift_ppm - true_dev_ppm) < 0.5
    assert mapping.residual_max < 1.0  # samples: quantization (0.5) plus fit error
    t_frames = np.arange(t_true[0], t_true[-1], 0.01)
    err_us = (mapping.to_b(t_frames) - rec.true_samples(t_frames)) / rec.rate_hz * 1e6
    assert np.sqrt(np.mean(err_us**2)) < rms_us
    assert np.abs(err_us).max() < max_us


def test_bench_align_reports_clean_alignment() -> None:
    r = bench_align(duration_s=900.0, seed=1)
    assert r["all_true_matched"] and r["false_matches"] == 0
    assert r["matched"] == r["true_matched"] == r["true_pulses_on_both"]
    assert r["frame_rms_us"] < 3.0 and r["frame_max_us"] < 15.0
    assert r["align_s"] < 2.0


def test_ten_thousand_pulses_is_fast() -> None:
    r = bench_align(duration_s=6000.0, seed=4)
    assert r["pulses_a"] > 10_000 and r["pulses_b"] > 10_000
    assert r["false_matches"] == 0
    assert r["align_s"] < 2.0, r


# ----------------------------------------------------------------------------------- units


@pytest.mark.parametrize(("unit", "convert"), [
    ("s", lambda t: 4321.0 + t * (1 + 80e-6)),
    ("ms", lambda t: 1.5e6 + t * 1e3 * (1 - 120e-6)),
    ("samples", lambda t: np.floor(25_000.0 * (77.0 + t * (1 + 30e-6)))),
    ("ns", lambda t: np.round((2.5e5 + t * (1 + 20e-6)) * 1e9).astype(np.int64)),
    ("Ms", lambda t: (10.0 + t) * 1e-6),
])
def test_units_scaled_shifted_thinned_copy_matches_completely(unit: str, convert) -> None:
    t = sync_train(600.0, 0.2, 2.0, seed=7)
    rng = np.random.default_rng(7)
    keep_a = rng.random(t.size) > 0.08
    keep_b = rng.random(t.size) > 0.08
    a, b = t[keep_a], convert(t[keep_b])
    match = match_pulses(a, b)
    ids_a, ids_b = np.flatnonzero(keep_a), np.flatnonzero(keep_b)
    assert np.array_equal(ids_a[match.ia], ids_b[match.ib])
    assert match.n_matched == np.count_nonzero(keep_a & keep_b)
    mapping = align(a, b, units_a="s", units_b=unit)
    scale = (convert(np.array([500.0])) - convert(np.array([100.0])))[0] / 400.0
    assert mapping.scale == pytest.approx(scale, rel=1e-5)
    assert mapping.units_b == unit


def test_unsorted_input_indices_refer_to_the_input() -> None:
    t = sync_train(300.0, 0.1, 1.0, seed=2)
    perm = np.random.default_rng(2).permutation(t.size)
    match = match_pulses(t[perm], t * 1000.0)
    assert np.array_equal(perm[match.ia], match.ib)


def test_integer_ns_since_boot_keep_their_precision() -> None:
    """Pi monotonic ns after 100 days of uptime are beyond float64's exact integers."""
    t = sync_train(600.0, 0.1, 1.0, seed=5)
    boot_ns = 100 * 86_400 * 10**9
    a_ns = boot_ns + np.round(t * 1e9).astype(np.int64)
    b = np.floor(30_000.0 * (12.0 + t))
    mapping = align(a_ns, b, units_a="ns", units_b="samples")
    probe_ns = a_ns[::50]
    expected = 30_000.0 * (12.0 + (probe_ns - boot_ns) / 1e9) - 0.5  # floor: half a sample early
    assert np.abs(mapping.to_b(probe_ns) - expected).max() < 0.1


# -------------------------------------------------------------------------------- outliers


def test_outliers_are_flagged_and_do_not_bend_the_mapping() -> None:
    t_true, _, _, _, _, rec = _session(11, duration_s=1200.0)
    b = np.floor(rec.true_samples(t_true) + 0.5)
    clean = fit_mapping(t_true, b, units_a="s", units_b="samples")
    glitched = b.copy()
    bad = np.array([100, 101, 900, 1500])
    glitched[bad] += 0.005 * rec.rate_hz  # a recorder glitch moved them by 5 ms
    glitched[bad[1]] -= 0.010 * rec.rate_hz  # this one 5 ms early (intervals are >= 0.1 s: order kept)
    mapping = fit_mapping(t_true, glitched, units_a="s", units_b="samples")
    assert set(mapping.outliers) >= set(bad)
    assert mapping.outliers.size <= 6
    probe = np.linspace(t_true[0], t_true[-1], 5000)
    assert np.abs(mapping.to_b(probe) - clean.to_b(probe)).max() < 0.05  # samples
    assert mapping.residual_max < 1.0
    assert np.abs(mapping.residuals[mapping.outliers]).max() > 100


def test_a_glitched_recorder_edge_is_not_trusted_by_align() -> None:
    t_true, a, _, b, b_truth, rec = _session(12, duration_s=900.0)
    moved = int(np.flatnonzero(b_truth >= 0)[200])
    b = b.copy()
    b[moved] += 150  # 5 ms late
    mapping = align(a, np.sort(b), units_a="s", units_b="samples")
    t_frames = np.arange(t_true[0], t_true[-1], 0.01)
    err_us = (mapping.to_b(t_frames) - rec.true_samples(t_frames)) / rec.rate_hz * 1e6
    assert np.abs(err_us).max() < 15.0
    assert mapping.residual_max < 1.0


# ------------------------------------------------------------------------ inverse and files


def _mapping() -> tuple[ClockMapping, np.ndarray]:
    t_true, a, _, b, _, _ = _session(21, duration_s=1800.0)
    return align(a, b, units_a="s", units_b="samples"), t_true


def test_round_trip_inside_and_outside_the_matched_span() -> None:
    mapping, t_true = _mapping()
    t = np.concatenate([np.linspace(t_true[0] - 500, t_true[-1] + 500, 20001), [t_true[5]]])
    back = mapping.to_a(mapping.to_b(t))
    assert np.abs(back - t).max() <= 1e-9 * np.abs(t).max()
    assert isinstance(mapping.to_b(123.0), float)
    assert mapping.to_a(mapping.to_b(123.0)) == pytest.approx(123.0, rel=1e-12)
    # beyond the last pulse: a straight line with the end slope
    lo, hi = mapping.span_a
    d1 = mapping.to_b(hi + 100.0) - mapping.to_b(hi + 50.0)
    d2 = mapping.to_b(hi + 1000.0) - mapping.to_b(hi + 950.0)
    assert d1 == pytest.approx(d2, rel=1e-12)
    assert np.all(np.diff(mapping.to_b(np.linspace(lo - 100, hi + 100, 10001))) > 0)


def test_mapping_json_round_trip_gives_identical_conversions(tmp_path) -> None:
    mapping, t_true = _mapping()
    path = tmp_path / "mapping.json"
    mapping.save(path)
    doc = json.loads(path.read_text())
    assert doc["units_a"] == "s" and doc["units_b"] == "samples"
    assert doc["summary"]["n_matched"] == mapping.n_matched
    doc["session"] = {"note": "keys added by other tools are ignored"}
    path.write_text(json.dumps(doc))
    loaded = ClockMapping.load(path)
    t = np.linspace(t_true[0] - 100, t_true[-1] + 100, 10001)
    assert np.array_equal(loaded.to_b(t), mapping.to_b(t))
    y = mapping.to_b(t)
    assert np.array_equal(loaded.to_a(y), mapping.to_a(y))
    assert loaded.summary() == mapping.summary()
    assert np.array_equal(loaded.residuals, mapping.residuals)
    assert np.array_equal(loaded.unmatched_b, mapping.unmatched_b)


def test_mapping_load_errors_say_what_and_where(tmp_path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"format": "something else"}')
    with pytest.raises(InputError, match=r"bad.json: expected a rigstream.clock_mapping document"):
        ClockMapping.load(path)
    with pytest.raises(InputError, match="cannot read"):
        ClockMapping.load(tmp_path / "missing.json")


# ---------------------------------------------------------------------------------- errors


def test_too_few_pulses() -> None:
    t = sync_train(100.0, 0.1, 1.0, seed=1)
    with pytest.raises(AlignmentError,
                       match=r"too few pulses to align: a has 4, b has \d+; need at least 10"):
        match_pulses(t[:4], t)


def test_periodic_train_is_refused() -> None:
    t = np.arange(200) * 0.5
    with pytest.raises(AlignmentError, match="periodic"):
        match_pulses(t, t * 30_000 + 17.0)
    # missing pulses do not make a clock random
    with pytest.raises(AlignmentError, match="periodic"):
        match_pulses(t, np.delete(t, [3, 50, 51, 120]) * 1000.0)


@pytest.mark.parametrize("seed", range(5))
def test_unrelated_trains_are_refused(seed: int) -> None:
    a = sync_train(1800.0, 0.1, 1.0, seed=seed)
    b = sync_train(1800.0, 0.1, 1.0, seed=seed + 100) * 30_000.0
    with pytest.raises(AlignmentError, match="no consistent match"):
        match_pulses(a, b)


def test_unrelated_rsync_trains_are_refused() -> None:
    a = sync_train(3600.0, 0.55, 9.5, seed=1)
    b = np.floor(sync_train(3600.0, 0.55, 9.5, seed=2) * 25_000.0)
    with pytest.raises(AlignmentError, match="no consistent match"):
        align(a, b)


def test_bad_input_is_refused_with_its_shape_or_position() -> None:
    with pytest.raises(AlignmentError, match=r"b: expected a 1-D array of edge times, got shape \(3, 2\)"):
        match_pulses(np.arange(20.0), np.zeros((3, 2)))
    bad = sync_train(100.0, 0.1, 1.0, seed=1)
    bad[7] = np.nan
    with pytest.raises(AlignmentError,
                       match=r"a: expected finite edge times, got 1 NaN/inf \(first at index 7\)"):
        match_pulses(bad, bad)
    with pytest.raises(AlignmentError, match="expected equal numbers of matched edges, got 3 in a and 2"):
        fit_mapping([1.0, 2.0, 3.0], [1.0, 2.0])
