"""Align two clocks from the edges of a shared random-interval sync line.

A Raspberry Pi drives a sync line with pulses at random intervals (the idea of pyControl's
Rsync) and timestamps every rising edge on its clock (unit A, e.g. seconds). A neural recorder
timestamps the same edges on its own clock (unit B: seconds, ms, or sample numbers at some
rate), with an unknown offset, a scale off by up to a few hundred ppm that wanders slowly, its
sample quantization, and missed or spurious edges on either side. This module finds which edges
correspond and fits a smooth mapping A -> B (and back).

Matching (:func:`match_pulses`)
    1. Fingerprints. Every run of 5 consecutive edges gives 3 log-ratios of consecutive
       intervals; they do not depend on offset or scale, and random intervals make them nearly
       unique. Runs in A and B whose fingerprints agree within ``feature_tol`` (a KD-tree,
       Chebyshev distance) are candidate seeds.
    2. Verification. Each seed's 5 edge pairs give a local line; the ``verify_window`` edges of A
       on either side are predicted onto B and counted when an edge of B lies within
       ``0.1 x`` the shortest interval. The seed with most hits wins; it must explain at least
       half of its neighbours.
    3. Growth. From the seed, forwards then backwards, each next edge of A is predicted with
       the slope of the last ``GROW_SPAN`` matches; the nearest edge of B is taken when it is
       within a tolerance that tightens to ~10x the running prediction error, is clearly
       nearer than the second nearest, and is not nearer to the next edge of A (a spurious
       edge of A beside a real one).
    4. Refinement. A robust smooth fit (below) of the grown matches predicts every edge of A;
       pairs are kept when they are mutual nearest neighbours within ``tight_sigma`` robust
       residual deviations and unambiguous. Twice (fit, rematch, fit, rematch).
    5. Checks. Enough matches, a majority of the edges in the matched span matched on both
       sides, and no seed inconsistent with the final mapping nearly as good as the winner
       (periodic or self-similar trains are refused, not guessed).

Fitting (:func:`fit_mapping`)
    ``b = b0 + c + s * (a - a0) + S(a - a0)`` where ``s`` (the global scale, B per A) and ``c``
    come from a robust straight line and ``S`` is a cubic B-spline with knots every
    ``KNOT_SPACING_S`` = 90 s of A time (``PULSES_PER_KNOT`` median intervals when A is not in
    a time unit; never under ``MIN_PULSES_PER_KNOT`` intervals), fitted as a P-spline with a
    tiny second-difference penalty so that an empty knot interval cannot make the system
    singular. Iteratively reweighted least squares with Huber weights (k = 1.345 robust
    sigmas); residuals beyond ``reject_sigma`` robust sigmas get weight 0 and are reported as
    outliers. Outside the matched span the mapping is a straight line with the end slopes.

    With quantized B (integer samples) each edge is off by up to half a sample; the spline
    averages every edge in a knot interval, which is what brings mapped times to about a µs.
    The knot spacing was chosen on the simulation (1 h, 30 kHz, 50 ppm drift wandering by
    10 ppm with periods of 15-60 min; frame-time RMS over 10 seeds): with 0.1-1 s intervals
    30 s -> 1.4 µs, 60 s -> 1.0, 90 s -> 0.8, 120 s -> 0.7, 180 s -> 0.5-1.8 (the wander
    starts to show); with 0.55-9.5 s intervals 30 s -> 3.4, 90 s -> 2.7, 180 s -> 2.1. 90 s
    leaves room for wander faster than simulated.

``drift_ppm`` of a mapping is ``max |S'(x) / s|`` over the matched span, in ppm: how far the
local clock rate strays from the session's mean rate (not the rate's offset from nominal,
which is in ``scale``).

Length: one job in stages (match, fit, the mapping and its file); over 600 lines because
the stages read in order here and share the fit's data.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from scipy.interpolate import BSpline
from scipy.sparse import linalg as splinalg
from scipy.spatial import cKDTree

from rigstream.config import InputError

logger = logging.getLogger(__name__)

FORMAT = "rigstream.clock_mapping"
FORMAT_VERSION = 1

_NUMBER_LIST = re.compile(r"\[\s*((?:-?[\d.eE+-]+,?\s*)+)\]")
FEATURE_EDGES = 5
"""Edges per fingerprint (FEATURE_EDGES - 2 interval ratios)."""
GROW_SPAN = 10
"""Matches back used for the local slope while growing."""
MAX_SEEDS = 200_000
"""Candidate seeds verified at most (the closest fingerprints first)."""
KNOT_SPACING_S = 90.0
"""Default knot spacing of the smooth fit, seconds of A time (measured, see module doc)."""
PULSES_PER_KNOT = 40
"""Knot spacing, in median sync intervals, where A's units are not a time unit."""
MIN_PULSES_PER_KNOT = 10.0
"""Knots never closer than this many median intervals (the fit would follow quantization noise)."""
SECONDS: dict[str, float] = {"s": 1.0, "ms": 1e3, "us": 1e6, "µs": 1e6, "ns": 1e9}
"""A units per second, for the time units the default knot spacing understands."""


class AlignmentError(InputError):
    """Two pulse trains that cannot be aligned; the message says why and what was tried."""


# ----------------------------------------------------------------------------------- match


@dataclass(frozen=True)
class Match:
    """Corresponding edges of two pulse trains.

    ``ia`` (K,) int64: indices into ``a`` (as passed) of the matched edges, increasing in time;
    ``ib`` (K,) int64: the matching indices into ``b``. ``unmatched_a`` (N - K,) and
    ``unmatched_b`` (M - K,) int64: the other indices, increasing. ``scale``: B units per A
    unit, from a robust straight line through the matches. ``tolerance_b``: the acceptance
    window used in the final matching, B units (half-width).
    """

    ia: np.ndarray
    ib: np.ndarray
    unmatched_a: np.ndarray
    unmatched_b: np.ndarray
    scale: float
    tolerance_b: float = 0.0

    @property
    def n_matched(self) -> int:
        return int(self.ia.size)


def _as_times(values: Any, name: str) -> tuple[np.ndarray, float | int]:
    """(times relative to their smallest value as float64, that origin). Integer input (e.g. ns
    since boot, beyond float64's exact integers after ~104 days) is made relative in integers
    and keeps an integer origin."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise AlignmentError(f"{name}: expected a 1-D array of edge times, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0), 0.0
    if np.issubdtype(arr.dtype, np.integer):
        origin = int(arr.min())
        return (arr.astype(np.int64) - origin).astype(np.float64), origin
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise AlignmentError(f"{name}: expected real edge times, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise AlignmentError(f"{name}: expected finite edge times, got {int(bad.sum())} NaN/inf "
                             f"(first at index {int(np.flatnonzero(bad)[0])})")
    origin = float(arr.min())
    return arr - origin, origin


def _is_periodic(t: np.ndarray) -> bool:
    """Most intervals an integer multiple of the median one (within 1%): a clock, not a sync
    train; any offset by a whole period fits as well as the right one."""
    d = np.diff(t)
    d = d[d > 0]
    if d.size < 3:
        return False
    q = d / np.median(d)
    near = (np.abs(q - np.round(q)) < 0.01) & (np.round(q) >= 1)
    return bool(near.mean() >= 0.8)


def _short_interval(t: np.ndarray) -> float:
    """A robust shortest inter-pulse interval: half the 10th percentile (spurious edges make a
    few intervals arbitrarily short)."""
    d = np.diff(t)
    return 0.5 * float(np.percentile(d[d > 0], 10))


def _fingerprints(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-ratios of consecutive intervals for each run of FEATURE_EDGES edges.

    Returns (features (F, FEATURE_EDGES - 2) float64, start (F,) int64: first edge of each
    run). Runs with a zero interval (duplicate timestamps) are left out."""
    n_ratio = FEATURE_EDGES - 2
    d = np.diff(t)
    if d.size < FEATURE_EDGES - 1:
        return np.zeros((0, n_ratio)), np.zeros(0, np.int64)
    with np.errstate(divide="ignore"):
        log_d = np.log(d)
    r = np.diff(log_d)
    n = r.size - n_ratio + 1
    feats = np.stack([r[k:k + n] for k in range(n_ratio)], axis=1)
    ok = np.isfinite(feats).all(axis=1)
    return feats[ok], np.flatnonzero(ok).astype(np.int64)


def _nearest(sorted_t: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each q: index of the nearest element of ``sorted_t``, |distance|, and |distance| to the
    second nearest (inf when there is none)."""
    n = sorted_t.size
    j = np.searchsorted(sorted_t, q)
    cand = np.stack([j - 2, j - 1, j, j + 1], axis=-1)
    valid = (cand >= 0) & (cand < n)
    dist = np.where(valid, np.abs(sorted_t[np.clip(cand, 0, n - 1)] - q[..., None]), np.inf)
    order = np.argsort(dist, axis=-1)
    first = np.take_along_axis(cand, order[..., :1], -1)[..., 0]
    d1 = np.take_along_axis(dist, order[..., :1], -1)[..., 0]
    d2 = np.take_along_axis(dist, order[..., 1:2], -1)[..., 0]
    return np.clip(first, 0, n - 1), d1, d2


def _verify_seeds(a: np.ndarray, b: np.ndarray, sa: np.ndarray, sb: np.ndarray, window: int,
                  tol_a: float, tol_b_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Score candidate seeds (runs starting at a[sa] <-> b[sb]).

    A neighbour is a hit when an edge of b lies within ``tol_a`` (A units, through the seed's
    slope) and ``tol_b_max`` (B units) of its prediction: a false seed with an absurd slope
    would otherwise get a window wider than b's intervals and hit everything.

    Returns (hits (P,) int64, available (P,) int64 neighbours that could be predicted,
    slope (P,) float64 B per A, intercept (P,) float64: b = intercept + slope * a)."""
    last = FEATURE_EDGES - 1
    slope = (b[sb + last] - b[sb]) / (a[sa + last] - a[sa])
    intercept = b[sb] - slope * a[sa]
    offs = np.concatenate([np.arange(-window, 0), np.arange(last + 1, last + 1 + window)])
    idx = sa[:, None] + offs[None, :]
    valid = (idx >= 0) & (idx < a.size)
    pred = intercept[:, None] + slope[:, None] * a[np.clip(idx, 0, a.size - 1)]
    # only predictions inside b's span can be checked
    tol_b = np.minimum(tol_a * slope[:, None], tol_b_max)
    valid &= (pred >= b[0] - tol_b) & (pred <= b[-1] + tol_b)
    _, d1, _ = _nearest(b, pred)
    hits = (valid & (d1 <= tol_b)).sum(axis=1)
    return hits.astype(np.int64), valid.sum(axis=1).astype(np.int64), slope, intercept


def _grow(a: list[float], b: list[float], ia: list[int], ib: list[int], tol_a: float, tol_b_max: float,
          floor_b: float) -> tuple[list[int], list[int]]:
    """Extend matches (increasing index lists, seeded) forward through ``a`` and ``b``.

    The loosest acceptance window is ``tol_a`` (A units) and ``tol_b_max`` (B units);
    ``floor_b`` (B units) the tightest."""
    ia, ib = list(ia), list(ib)
    n_a, n_b = len(a), len(b)
    # running mean |prediction error| / (1 + 2 * reach), B units; starts at the loose window and
    # decays to the real error within a few tens of matches. Its floor (1/100 of the loose
    # window) keeps one lucky exact hit from shrinking the window to nothing.
    err_scale = math.nan
    misses = 0
    i = ia[-1] + 1
    while i < n_a and ib[-1] + 1 < n_b:
        k_ref = max(0, len(ia) - 1 - GROW_SPAN)
        a_last, b_last = a[ia[-1]], b[ib[-1]]
        span_a = a_last - a[ia[k_ref]]
        slope = (b_last - b[ib[k_ref]]) / span_a
        reach = (a[i] - a_last) / span_a
        loose = min(tol_a * slope, tol_b_max)
        if math.isnan(err_scale):
            err_scale = loose / 10
        tol = min(loose, max(floor_b, loose / 100, 10.0 * err_scale * (1 + 2 * reach)))
        pred = b_last + slope * (a[i] - a_last)
        j = bisect_left(b, pred, ib[-1] + 1)
        best, e1, e2 = -1, math.inf, math.inf
        for c in (j - 1, j, j + 1):
            if ib[-1] < c < n_b:
                e = abs(b[c] - pred)
                if e < e1:
                    best, e1, e2 = c, e, e1
                elif e < e2:
                    e2 = e
        accept = best >= 0 and e1 <= tol and not (e2 <= tol and e2 < 3 * e1)
        if accept and i + 1 < n_a:
            # a spurious edge of a just before the real one: the next edge explains b[best] better
            accept = abs(b_last + slope * (a[i + 1] - a_last) - b[best]) > e1
        if accept:
            ia.append(i)
            ib.append(best)
            err_scale = 0.9 * err_scale + 0.1 * e1 / (1 + 2 * reach)
            misses = 0
        else:
            misses += 1
            if misses > 200:
                logger.debug("growth stopped at a[%d]: 200 edges in a row without a match", i)
                break
        i += 1
    return ia, ib


def _grow_both(a: np.ndarray, b: np.ndarray, sa: int, sb: int, tol_a: float, tol_b_max: float,
               floor_b: float) -> tuple[np.ndarray, np.ndarray]:
    seed_a = list(range(sa, sa + FEATURE_EDGES))
    seed_b = list(range(sb, sb + FEATURE_EDGES))
    fa, fb = _grow(a.tolist(), b.tolist(), seed_a, seed_b, tol_a, tol_b_max, floor_b)
    na, nb = a.size, b.size
    ra, rb = _grow((-a[::-1]).tolist(), (-b[::-1]).tolist(), [na - 1 - i for i in reversed(seed_a)],
                   [nb - 1 - j for j in reversed(seed_b)], tol_a, tol_b_max, floor_b)
    back_a = [na - 1 - i for i in reversed(ra[FEATURE_EDGES:])]
    back_b = [nb - 1 - j for j in reversed(rb[FEATURE_EDGES:])]
    return np.array(back_a + fa, dtype=np.int64), np.array(back_b + fb, dtype=np.int64)


def _rematch(a: np.ndarray, b: np.ndarray, model: _SmoothFit, sigma_b: float, tight_sigma: float,
             floor_b: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Mutual nearest neighbours between model(a) and b within tight_sigma robust sigmas."""
    pred = model(a)
    tol = max(tight_sigma * sigma_b, floor_b)
    jb, d1, d2 = _nearest(b, pred)
    ja, e1, e2 = _nearest(pred, b)
    # the nearest, clearly nearer than any other candidate within the window
    clear_a = (d1 <= tol) & ((d2 > tol) | (d2 - d1 >= 2 * sigma_b))
    clear_b = (e1 <= tol) & ((e2 > tol) | (e2 - e1 >= 2 * sigma_b))
    ia = np.flatnonzero(clear_a & (ja[jb] == np.arange(a.size)) & clear_b[jb])
    return ia.astype(np.int64), jb[ia].astype(np.int64), tol


def match_pulses(a: Any, b: Any, *, min_matches: int = 10, feature_tol: float = 0.02,
                 verify_window: int = 10, tight_sigma: float = 8.0,
                 pulses_per_knot: float = PULSES_PER_KNOT) -> Match:
    """Find which edges of ``a`` and ``b`` are the same sync pulses.

    ``a`` (N,) edge times in unit A (e.g. Pi seconds); ``b`` (M,) edge times in unit B (any
    positive scale from A: s, ms, samples, ns; any offset). Integers are fine (ns since boot).
    Either side may miss pulses and hold spurious edges. Needs random inter-pulse intervals.

    ``min_matches``: fewest matched pulses accepted (and fewest edges each side must have).
    ``feature_tol``: fingerprint tolerance, in log interval ratio (0.02 = 2%: covers 1 ms
    quantization on 0.1 s intervals). ``verify_window``: edges each side of a seed checked.
    ``tight_sigma``: final acceptance window, in robust residual sigmas.

    Raises :class:`AlignmentError` when the trains cannot be aligned unambiguously.
    """
    started = time.perf_counter()
    a_rel, _ = _as_times(a, "a")
    b_rel, _ = _as_times(b, "b")
    n_a, n_b = a_rel.size, b_rel.size
    need = max(int(min_matches), FEATURE_EDGES + 1)
    if n_a < need or n_b < need:
        raise AlignmentError(f"too few pulses to align: a has {n_a}, b has {n_b}; need at least {need} "
                             f"on each side (min_matches={min_matches})")
    order_a = np.argsort(a_rel, kind="stable")
    order_b = np.argsort(b_rel, kind="stable")
    a_s, b_s = a_rel[order_a], b_rel[order_b]
    for name, t in (("a", a_s), ("b", b_s)):
        if _is_periodic(t):
            raise AlignmentError(
                f"{name}: the pulse train is periodic (most intervals are multiples of "
                f"{float(np.median(np.diff(t))):.6g}), so the offset is ambiguous by whole periods; "
                "a sync line needs random inter-pulse intervals")

    fa, sa = _fingerprints(a_s)
    fb, sb = _fingerprints(b_s)
    tried = (f"{fa.shape[0]} x {fb.shape[0]} fingerprints of {FEATURE_EDGES} consecutive edges "
             f"compared within feature_tol={feature_tol}")
    if fa.shape[0] == 0 or fb.shape[0] == 0:
        raise AlignmentError(f"no consistent match: {tried}")
    dist = cKDTree(fa).sparse_distance_matrix(cKDTree(fb), feature_tol, p=np.inf, output_type="ndarray")
    if dist.size > MAX_SEEDS:
        dist = dist[np.argsort(dist["v"], kind="stable")[:MAX_SEEDS]]
    if dist.size == 0:
        raise AlignmentError(f"no consistent match: {tried}; none agreed (unrelated trains?)")
    seed_a, seed_b = sa[dist["i"]], sb[dist["j"]]

    tol_a = 0.1 * _short_interval(a_s)
    tol_b_max = 0.1 * _short_interval(b_s)
    hits, avail, slope, _ = _verify_seeds(a_s, b_s, seed_a, seed_b, verify_window, tol_a, tol_b_max)
    score = hits - 0.5 * (avail - hits)  # hits count, misses count half
    best = int(np.argmax(score))
    need_hits = max(4, int(np.ceil(0.5 * avail[best])))
    tried += f"; {dist.size} candidate seeds verified on {verify_window} edges each side"
    if hits[best] < need_hits:
        raise AlignmentError(f"no consistent match: {tried}; the best seed explained {hits[best]} of "
                             f"{avail[best]} neighbouring edges, need {need_hits} (unrelated trains?)")

    scale0 = float(slope[best])
    d_b = np.diff(b_s)
    floor_b = 1e-9 * float(np.median(d_b[d_b > 0]))
    ia, ib = _grow_both(a_s, b_s, int(seed_a[best]), int(seed_b[best]), tol_a, tol_b_max,
                        floor_b)
    logger.debug("seed a[%d]<->b[%d] (%d/%d hits), grown to %d matches", seed_a[best], seed_b[best],
                 hits[best], avail[best], ia.size)
    tol_b = tol_a * scale0
    model: _SmoothFit | None = None
    for _ in range(2):
        if ia.size < need:
            break
        model = _SmoothFit.fit(a_s[ia], b_s[ib], pulses_per_knot=pulses_per_knot)
        ia, ib, tol_b = _rematch(a_s, b_s, model, model.sigma, tight_sigma, floor_b)
    if ia.size < need or model is None:
        raise AlignmentError(f"no consistent match: {tried}; only {ia.size} edges matched, need {need}")

    # a majority of edges within the matched span must be explained, on both sides
    in_a = np.count_nonzero((a_s >= a_s[ia[0]]) & (a_s <= a_s[ia[-1]]))
    in_b = np.count_nonzero((b_s >= b_s[ib[0]]) & (b_s <= b_s[ib[-1]]))
    frac = ia.size / max(in_a, in_b)
    if frac < 0.5:
        raise AlignmentError(f"no consistent match: {tried}; {ia.size} matches explain only {frac:.0%} of "
                             f"the {in_a} edges of a and {in_b} of b in the matched span (need 50%)")
    # any other hypothesis nearly as well supported -> ambiguous (self-similar trains)
    off = np.abs(model(a_s[seed_a]) - b_s[seed_b]) > tol_a * scale0
    if off.any():
        rival = int(np.argmax(np.where(off, score, -np.inf)))
        if score[rival] >= max(need_hits, 0.6 * score[best]):
            raise AlignmentError(
                f"ambiguous match: {tried}; a seed inconsistent with the best alignment "
                f"(a[{seed_a[rival]}]<->b[{seed_b[rival]}], {hits[rival]}/{avail[rival]} hits) scores "
                f"nearly as well as the best ({hits[best]}/{avail[best]}); is the train periodic?")

    ia_orig, ib_orig = order_a[ia], order_b[ib]
    un_a = np.setdiff1d(np.arange(n_a), ia_orig).astype(np.int64)
    un_b = np.setdiff1d(np.arange(n_b), ib_orig).astype(np.int64)
    logger.info("matched %d of %d (a) and %d (b) sync edges, scale %.9g B/A, window ±%.3g B, %.2f s",
                ia.size, n_a, n_b, model.scale, tol_b, time.perf_counter() - started)
    return Match(ia=ia_orig.astype(np.int64), ib=ib_orig.astype(np.int64), unmatched_a=un_a,
                 unmatched_b=un_b, scale=model.scale, tolerance_b=float(tol_b))


# ------------------------------------------------------------------------------------- fit


@dataclass
class _SmoothFit:
    """``y = c + s * x + S(x)`` on [x_lo, x_hi], straight lines with the end slopes outside.

    x, y relative to the caller's origins; ``knots`` (L,) and ``coef`` (L - degree - 1,) the
    B-spline S; ``weights`` (K,) final IRLS weights (0 = outlier); ``sigma`` robust residual
    sigma (y units)."""

    c: float
    s: float
    knots: np.ndarray
    coef: np.ndarray
    degree: int
    x_lo: float
    x_hi: float
    sigma: float = 0.0
    residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        self._spline = BSpline(self.knots, self.coef, self.degree, extrapolate=False)
        self._dspline = self._spline.derivative()
        self._ends = np.array([self.x_lo, self.x_hi])
        self._y_end = self.c + self.s * self._ends + self._spline(self._ends)
        self._dy_end = self.s + self._dspline(self._ends)

    @property
    def scale(self) -> float:
        return self.s

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        inside = np.clip(x, self.x_lo, self.x_hi)
        y = self.c + self.s * x + self._spline(inside)
        lo, hi = x < self.x_lo, x > self.x_hi
        y = np.where(lo, self._y_end[0] + self._dy_end[0] * (x - self.x_lo), y)
        return np.where(hi, self._y_end[1] + self._dy_end[1] * (x - self.x_hi), y)

    def slope(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return self.s + self._dspline(np.clip(x, self.x_lo, self.x_hi))

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """x with model(x) == y (Newton; the model is monotonic: its slope is s * (1 ± drift))."""
        y = np.asarray(y, dtype=np.float64)
        x = (y - self.c) / self.s
        span = max(self.x_hi - self.x_lo, abs(self.x_hi), 1e-300)
        for _ in range(30):
            step = (self(x) - y) / self.slope(x)
            x = x - step
            if not np.any(np.abs(step) > 1e-15 * (np.abs(x) + span)):
                break
        return x

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, *, pulses_per_knot: float = PULSES_PER_KNOT,
            knot_spacing: float | None = None, reject_sigma: float = 6.0, iterations: int = 12,
            ) -> _SmoothFit:
        """Robust fit of y (K,) against increasing x (K,), both float64 relative to origins."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        n = x.size
        x_lo, x_hi = float(x.min()), float(x.max())
        span = x_hi - x_lo
        dx = np.diff(np.sort(x))
        median_dx = float(np.median(dx[dx > 0])) if (dx > 0).any() else span
        if knot_spacing is None:
            knot_spacing = pulses_per_knot * median_dx
        knot_spacing = max(knot_spacing, MIN_PULSES_PER_KNOT * median_dx)
        degree = 3 if n >= 8 else 1
        segments = max(1, min(round(span / knot_spacing) if knot_spacing > 0 else 1,
                              max(1, (n - degree - 1) // 4)))
        inner = np.linspace(x_lo, x_hi, segments + 1)
        knots = np.concatenate([[x_lo] * degree, inner, [x_hi] * degree])
        basis = BSpline.design_matrix(np.clip(x, x_lo, x_hi), knots, degree).tocsr()  # (K, L) sparse
        n_coef = basis.shape[1]
        if n_coef > 2:
            diff2 = sparse.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(n_coef - 2, n_coef))
            penalty = (diff2.T @ diff2).tocsc()
        else:
            penalty = sparse.csc_matrix((n_coef, n_coef))

        # robust straight line first (its slope is the reported global scale)
        w = np.ones(n)
        xm = x - x_lo
        s = c = 0.0
        for _ in range(iterations):
            sw = w.sum()
            mx, my = (w * xm).sum() / sw, (w * y).sum() / sw
            sxx = (w * (xm - mx) ** 2).sum()
            s = (w * (xm - mx) * (y - my)).sum() / sxx if sxx > 0 else 0.0
            c = my - s * mx - s * x_lo
            w_new = _robust_weights(y - c - s * x, w, reject_sigma)
            if np.array_equal(w_new, w):
                break
            w = w_new
        r_line = y - c - s * x
        for _ in range(iterations):
            lhs = (basis.T @ basis.multiply(w[:, None])).tocsc()
            lam = 1e-9 * float(lhs.diagonal().sum()) / n_coef
            coef = np.asarray(splinalg.spsolve(lhs + lam * penalty, basis.T @ (w * r_line)))
            w_new = _robust_weights(r_line - basis @ coef, w, reject_sigma)
            if np.allclose(w_new, w, atol=1e-6):
                w = w_new
                break
            w = w_new
        resid = r_line - basis @ coef
        sigma = _robust_sigma(resid[w > 0])
        return cls(c=float(c), s=float(s), knots=knots, coef=coef, degree=degree, x_lo=x_lo, x_hi=x_hi,
                   sigma=sigma, residuals=resid, weights=w)


def _robust_sigma(r: np.ndarray) -> float:
    if r.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(r - np.median(r))))


def _robust_weights(r: np.ndarray, w_prev: np.ndarray, reject_sigma: float) -> np.ndarray:
    """Huber weights (k = 1.345 sigma); 0 beyond reject_sigma sigmas (sigma from the inliers)."""
    sigma = _robust_sigma(r[w_prev > 0]) if (w_prev > 0).any() else _robust_sigma(r)
    scale = np.abs(r).max() if r.size else 0.0
    if sigma <= 1e-12 * max(scale, 1e-300) or sigma == 0.0:
        sigma = max(float(np.std(r[w_prev > 0])) if (w_prev > 0).any() else 0.0, 1e-300)
    u = np.abs(r) / sigma
    w = np.where(u <= 1.345, 1.0, 1.345 / np.maximum(u, 1e-300))
    return np.where(u > reject_sigma, 0.0, w)


# ---------------------------------------------------------------------------- the mapping


def _origin(value: Any) -> float | int:
    """An origin from JSON: integers (ns since boot) stay exact."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"origin: expected a number, got {value!r}")
    return value


def _int_list(x: np.ndarray) -> list[int]:
    return [int(v) for v in x]


@dataclass
class ClockMapping:
    """A smooth, invertible mapping from clock A to clock B.

    ``to_b(t_a)``: A units -> B units; ``to_a(t_b)``: back. ``scale``: B units per A unit (the
    session's mean rate); ``drift_ppm``: max |local rate / scale - 1| over the matched span, ppm.
    ``residuals`` (K,) float64, B units: matched b minus the mapping of matched a (outliers
    included); ``outliers`` (J,) int64: indices into the matched pairs rejected by the fit;
    ``residual_rms`` / ``residual_max``: over the inliers, B units. ``unmatched_a`` /
    ``unmatched_b``: indices into the original trains (empty when unknown).
    """

    origin_a: float | int
    origin_b: float | int
    model: _SmoothFit
    units_a: str = "s"
    units_b: str = "?"
    residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))
    outliers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unmatched_a: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unmatched_b: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    drift_ppm: float = 0.0

    # ---- conversions

    @staticmethod
    def _relative(t: Any, origin: float | int) -> tuple[np.ndarray, bool]:
        """t - origin in float64; exact for integers (ns since boot) against an integer origin."""
        arr = np.asarray(t)
        scalar = arr.ndim == 0
        if np.issubdtype(arr.dtype, np.integer) and isinstance(origin, int):
            rel = (arr.astype(np.int64) - np.int64(origin)).astype(np.float64)
        else:
            rel = arr.astype(np.float64) - float(origin)
        return rel, scalar

    def to_b(self, t_a: Any) -> Any:
        """Times in A units (float, or an array of any shape) -> B units (float64, same shape)."""
        x, scalar = self._relative(t_a, self.origin_a)
        y = self.model(x) + float(self.origin_b)
        return float(y) if scalar else y

    def to_a(self, t_b: Any) -> Any:
        """Times in B units -> A units (the exact inverse of :meth:`to_b`, by Newton)."""
        y, scalar = self._relative(t_b, self.origin_b)
        x = self.model.inverse(y) + float(self.origin_a)
        return float(x) if scalar else x

    # ---- stats

    @property
    def scale(self) -> float:
        return self.model.s

    @property
    def n_matched(self) -> int:
        return int(self.residuals.size)

    @property
    def inliers(self) -> np.ndarray:
        mask = np.ones(self.residuals.size, bool)
        mask[self.outliers] = False
        return mask

    @property
    def residual_rms(self) -> float:
        r = self.residuals[self.inliers]
        return float(np.sqrt(np.mean(r**2))) if r.size else 0.0

    @property
    def residual_max(self) -> float:
        r = self.residuals[self.inliers]
        return float(np.abs(r).max()) if r.size else 0.0

    @property
    def span_a(self) -> tuple[float, float]:
        """First and last matched pulse, A units."""
        return self.model.x_lo + float(self.origin_a), self.model.x_hi + float(self.origin_a)

    def summary(self) -> dict[str, Any]:
        lo, hi = self.span_a
        return {"units_a": self.units_a, "units_b": self.units_b, "scale": self.scale,
                "drift_ppm": round(self.drift_ppm, 4), "n_matched": self.n_matched,
                "n_outliers": int(self.outliers.size), "unmatched_a": int(self.unmatched_a.size),
                "unmatched_b": int(self.unmatched_b.size), "residual_rms": self.residual_rms,
                "residual_max": self.residual_max, "span_a": [lo, hi],
                "knot_spacing_a": float(self.model.knots[self.model.degree + 1] - self.model.knots[0])
                if self.model.knots.size > 2 * self.model.degree + 1 else hi - lo}

    # ---- files

    def to_json(self) -> str:
        m = self.model
        doc = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "description": ("t_b = origin_b + c + scale * x + S(x), x = t_a - origin_a, S a B-spline "
                            "(knots, coef, degree) on [x_lo, x_hi]; straight lines with the end slopes "
                            "outside; t_a from t_b by inverting (monotonic)"),
            "units_a": self.units_a,
            "units_b": self.units_b,
            "summary": self.summary(),
            "model": {"origin_a": self.origin_a, "origin_b": self.origin_b, "c": m.c, "scale": m.s,
                      "x_lo": m.x_lo, "x_hi": m.x_hi, "degree": m.degree, "sigma": m.sigma,
                      "knots": [float(v) for v in m.knots], "coef": [float(v) for v in m.coef]},
            "outliers": _int_list(self.outliers),
            "unmatched_a": _int_list(self.unmatched_a),
            "unmatched_b": _int_list(self.unmatched_b),
            "residuals": [float(v) for v in self.residuals],
        }
        # one line per array of numbers: the header stays readable above long residual lists
        return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]",
                                json.dumps(doc, indent=1))

    @classmethod
    def from_json(cls, text: str, where: str = "mapping") -> ClockMapping:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: expected JSON, got a parse error: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise InputError(f"{where}: expected a {FORMAT} document, got format "
                             f"{doc.get('format') if isinstance(doc, dict) else type(doc).__name__!r}")
        if doc.get("version") != FORMAT_VERSION:
            raise InputError(f"{where}: expected version {FORMAT_VERSION}, got {doc.get('version')!r}")
        try:
            m = doc["model"]
            model = _SmoothFit(c=float(m["c"]), s=float(m["scale"]),
                               knots=np.array(m["knots"], np.float64), coef=np.array(m["coef"], np.float64),
                               degree=int(m["degree"]), x_lo=float(m["x_lo"]), x_hi=float(m["x_hi"]),
                               sigma=float(m.get("sigma", 0.0)))
            return cls(origin_a=_origin(m["origin_a"]), origin_b=_origin(m["origin_b"]), model=model,
                       units_a=str(doc["units_a"]), units_b=str(doc["units_b"]),
                       residuals=np.array(doc.get("residuals", []), np.float64),
                       outliers=np.array(doc.get("outliers", []), np.int64),
                       unmatched_a=np.array(doc.get("unmatched_a", []), np.int64),
                       unmatched_b=np.array(doc.get("unmatched_b", []), np.int64),
                       drift_ppm=float(doc.get("summary", {}).get("drift_ppm", 0.0)))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{where}: malformed {FORMAT} document ({type(e).__name__}: {e})") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ClockMapping:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise InputError(f"{p}: cannot read clock mapping ({e.strerror})") from None
        return cls.from_json(text, where=str(p))


def fit_mapping(a_matched: Any, b_matched: Any, *, units_a: str = "s", units_b: str = "?",
                pulses_per_knot: float = PULSES_PER_KNOT, knot_spacing: float | None = None,
                reject_sigma: float = 6.0, unmatched_a: Any = None, unmatched_b: Any = None,
                ) -> ClockMapping:
    """Fit the mapping A -> B through matched edge times.

    ``a_matched`` (K,) and ``b_matched`` (K,): corresponding edge times (A and B units; integers
    fine), increasing. ``knot_spacing`` (A units) of the smoothing spline: by default
    KNOT_SPACING_S seconds when ``units_a`` is a time unit (s, ms, us, ns), else
    ``pulses_per_knot`` median intervals; never under MIN_PULSES_PER_KNOT median intervals.
    ``reject_sigma``: residuals beyond it (robust sigmas) are outliers.
    """
    x, origin_a = _as_times(a_matched, "a_matched")
    y, origin_b = _as_times(b_matched, "b_matched")
    if x.size != y.size:
        raise AlignmentError(f"fit_mapping: expected equal numbers of matched edges, got {x.size} in a "
                             f"and {y.size} in b")
    if x.size < 2:
        raise AlignmentError(f"fit_mapping: expected at least 2 matched edges, got {x.size}")
    if np.any(np.diff(x) <= 0) or np.any(np.diff(y) <= 0):
        raise AlignmentError("fit_mapping: expected strictly increasing matched times on both sides "
                             "(pairs in time order, each edge once)")
    if knot_spacing is None and units_a in SECONDS:
        knot_spacing = KNOT_SPACING_S * SECONDS[units_a]
    model = _SmoothFit.fit(x, y, pulses_per_knot=pulses_per_knot, knot_spacing=knot_spacing,
                           reject_sigma=reject_sigma)
    grid = np.linspace(model.x_lo, model.x_hi, 2001)
    drift = float(np.abs(model.slope(grid) / model.s - 1.0).max() * 1e6)
    residuals = y - model(x)
    outliers = np.flatnonzero(model.weights == 0).astype(np.int64)
    mapping = ClockMapping(
        origin_a=origin_a, origin_b=origin_b, model=model, units_a=units_a, units_b=units_b,
        residuals=residuals, outliers=outliers,
        unmatched_a=np.zeros(0, np.int64) if unmatched_a is None else np.asarray(unmatched_a, np.int64),
        unmatched_b=np.zeros(0, np.int64) if unmatched_b is None else np.asarray(unmatched_b, np.int64),
        drift_ppm=drift)
    if outliers.size:
        logger.info("clock fit: %d of %d matched edges rejected as outliers (beyond %.1f sigma)",
                    outliers.size, x.size, reject_sigma)
    return mapping


def align(a: Any, b: Any, units_a: str = "s", units_b: str = "?", *, min_matches: int = 10,
          knot_spacing: float | None = None, pulses_per_knot: float = PULSES_PER_KNOT) -> ClockMapping:
    """Match the edges of ``a`` (N,) and ``b`` (M,) and fit the mapping A -> B (see
    :func:`match_pulses` and :func:`fit_mapping` for the arguments)."""
    match = match_pulses(a, b, min_matches=min_matches)
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    mapping = fit_mapping(a_arr[match.ia], b_arr[match.ib], units_a=units_a, units_b=units_b,
                          knot_spacing=knot_spacing, pulses_per_knot=pulses_per_knot,
                          unmatched_a=match.unmatched_a,
                          unmatched_b=match.unmatched_b)
    logger.info("clock mapping %s -> %s: scale %.9g, drift %.2f ppm, residual rms %.3g %s, %d matched",
                units_a, units_b, mapping.scale, mapping.drift_ppm, mapping.residual_rms, units_b,
                mapping.n_matched)
    return mapping


def bench_align(duration_s: float = 3600.0, rate_hz: float = 30000.0, drift_ppm: float = 50.0,
                missing: float = 0.05, spurious: float = 0.01, seed: int = 0, **kw: Any) -> dict[str, Any]:
    """Align a simulated session and score it against the truth; see
    :func:`rigstream.sync.sim_recorder.bench_align` (imported on use: the simulator is not
    needed to align real recordings)."""
    from rigstream.sync.sim_recorder import bench_align as run

    return run(duration_s=duration_s, rate_hz=rate_hz, drift_ppm=drift_ppm, missing=missing,
               spurious=spurious, seed=seed, **kw)
