"""Clock models: a running linear fit from one clock to another.

Used per camera to map camera timestamps onto the Pi's clock (the pulse times of the trigger
indices the frames belong to). Times are int64 ns; the fit works on offsets from the first
sample in float64 so nanosecond precision survives hours of recording.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class LinearClockFit:
    """Least-squares fit ``b = offset + slope * a`` updated one sample at a time.

    Until two samples are in, the slope is 1 (clocks tick at the same rate).
    """

    n: int = 0
    _a0: int = 0
    _b0: int = 0
    _sa: float = 0.0
    _sb: float = 0.0
    _saa: float = 0.0
    _sab: float = 0.0
    _sbb: float = 0.0

    def add(self, a_ns: int, b_ns: int) -> None:
        if self.n == 0:
            self._a0, self._b0 = a_ns, b_ns
        x = float(a_ns - self._a0)
        y = float(b_ns - self._b0)
        self.n += 1
        self._sa += x
        self._sb += y
        self._saa += x * x
        self._sab += x * y
        self._sbb += y * y

    @property
    def slope(self) -> float:
        if self.n < 2:
            return 1.0
        var = self._saa - self._sa * self._sa / self.n
        if var <= 0:
            return 1.0
        return (self._sab - self._sa * self._sb / self.n) / var

    def predict(self, a_ns: int) -> int:
        """``a`` mapped onto the other clock (ns)."""
        if self.n == 0:
            raise ValueError("clock fit has no samples yet")
        x = float(a_ns - self._a0)
        slope = self.slope
        mean_x = self._sa / self.n
        mean_y = self._sb / self.n
        return self._b0 + round(mean_y + slope * (x - mean_x))

    @property
    def residual_rms_ns(self) -> float:
        """RMS of the fit's residuals so far."""
        if self.n < 3:
            return 0.0
        slope = self.slope
        sxx = self._saa - self._sa**2 / self.n
        syy = self._sbb - self._sb**2 / self.n
        sxy = self._sab - self._sa * self._sb / self.n
        sse = max(syy - 2 * slope * sxy + slope**2 * sxx, 0.0)
        return math.sqrt(sse / self.n)

    @property
    def drift_ppm(self) -> float:
        return (self.slope - 1.0) * 1e6
