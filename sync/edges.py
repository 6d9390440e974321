"""The edge times every recorder reader returns (:class:`EdgeTimes`: the rising-edge times of one
sync line, the falling ones when the format has them, the units and the sampling rate when the
file says) and the error they raise (:class:`RecorderFileError`), shared by
:mod:`rigstream.sync.recorders` and :mod:`rigstream.sync.open_ephys`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rigstream.config import InputError

_SECONDS_PER_UNIT = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


class RecorderFileError(InputError):
    """A recorder file or folder that cannot give edge times; the message says what was expected,
    what was found and where."""


@dataclass(frozen=True)
class EdgeTimes:
    """Edge times of one sync line, on the recorder's clock.

    ``times``: (N,) float64, rising-edge times in ``units``, increasing.
    ``units``: ``"s"``, ``"ms"``, ``"us"``, ``"ns"``, ``"samples"``, or ``"?"`` when unknown.
    ``rate_hz``: the recorder's sampling rate when known (converts ``"samples"`` to seconds).
    ``source``: the file and what was read in it, for messages and provenance.
    ``falling``: (M,) float64 falling-edge times in ``units``, or None when the format has none.
    The arrays are made read-only.
    """

    times: np.ndarray
    units: str
    rate_hz: float | None
    source: str
    falling: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("times", "falling"):
            value = getattr(self, name)
            if value is None:
                continue
            arr = np.array(value, dtype=np.float64)
            if arr.ndim != 1:
                raise ValueError(f"EdgeTimes.{name}: expected a 1-D array, got shape {arr.shape}")
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return int(self.times.size)

    def seconds(self) -> np.ndarray:
        """The rising-edge times in seconds, (N,) float64.

        Raises RecorderFileError when the units are unknown, or are samples without a rate."""
        if self.units in _SECONDS_PER_UNIT:
            return self.times * _SECONDS_PER_UNIT[self.units]
        if self.units == "samples" and self.rate_hz:
            return self.times / self.rate_hz
        raise RecorderFileError(f"{self.source}: cannot convert to seconds: units {self.units!r}"
                                f" with sampling rate {self.rate_hz}")
