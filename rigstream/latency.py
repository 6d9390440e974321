"""Latency statistics (p50, p99, max in ms), shared by the live components that report them
(pose engine, rule actions, monitor) and the benchmarks. Needs only numpy; in the core so the
monitor, which may not import ``inference``, uses the same numbers as the pose engine."""

from __future__ import annotations

import numpy as np

RESERVOIR = 1 << 16
"""Samples a :class:`LatencySamples` keeps: percentiles within a fraction of a percent of the
session's, in 512 KiB, however long the session runs."""


class LatencySamples:
    """Latencies of a whole session in fixed memory: a uniform random sample of at most
    ``capacity`` of the finite values (reservoir sampling, algorithm R), with their exact count
    and maximum. A session of hours at hundreds of sets a second grew plain lists by tens of MB
    an hour, and summed them every heartbeat."""

    def __init__(self, capacity: int = RESERVOIR, seed: int = 0) -> None:
        self._a = np.empty(capacity, np.float64)
        self._rng = np.random.default_rng(seed)
        self.n = 0
        """Finite values appended."""
        self.max = float("-inf")

    def append(self, value: float) -> None:
        if not np.isfinite(value):
            return
        cap = self._a.size
        if self.n < cap:
            self._a[self.n] = value
        else:
            j = int(self._rng.integers(0, self.n + 1))
            if j < cap:
                self._a[j] = value
        self.n += 1
        self.max = max(self.max, float(value))

    def __len__(self) -> int:
        return self.n

    def values(self) -> np.ndarray:
        """The kept sample (all values while fewer than the capacity came)."""
        return self._a[:min(self.n, self._a.size)]


def latency_stats(values_ms: list[float] | np.ndarray | LatencySamples,
                  count: bool = False) -> dict[str, float | int | None]:
    """p50, p99, max (ms, 3 decimals) over the finite values; with ``count`` also n. For
    :class:`LatencySamples` the percentiles are the sample's, max and n exact."""
    if isinstance(values_ms, LatencySamples):
        a, n, top = values_ms.values(), values_ms.n, values_ms.max
    else:
        a = np.asarray(values_ms, dtype=np.float64)
        a = a[np.isfinite(a)]
        n, top = int(a.size), float(a.max()) if a.size else float("nan")
    stats: dict[str, float | int | None] = {"p50": None, "p99": None, "max": None}
    if a.size:
        stats = {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
                 "max": round(top, 3)}
    if count:
        stats["n"] = n
    return stats
