"""Latency statistics (p50, p99, max in ms), shared by the live components that report them
(pose engine, rule actions, monitor) and the benchmarks. Needs only numpy; in the core so the
monitor, which may not import ``inference``, uses the same numbers as the pose engine."""

from __future__ import annotations

import numpy as np


def latency_stats(values_ms: list[float] | np.ndarray, count: bool = False) -> dict[str, float | int | None]:
    """p50, p99, max (ms, 3 decimals) over the finite values; with ``count`` also n."""
    a = np.asarray(values_ms, dtype=np.float64)
    a = a[np.isfinite(a)]
    stats: dict[str, float | int | None] = {"p50": None, "p99": None, "max": None}
    if a.size:
        stats = {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
                 "max": round(float(a.max()), 3)}
    if count:
        stats["n"] = int(a.size)
    return stats
