"""Summaries over seeds: mean, sample standard deviation, and paired differences with a 95% t-interval.

Studies run a handful of seeds (2-5), so the t distribution matters (t_0.975 with 2 degrees of freedom is 4.30,
not 1.96). The quantiles are hard-coded rather than pulled from scipy: cnnlab does not depend on scipy, and
these values are exact to four decimals.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# Two-sided 95% quantiles t_{0.975, df} of Student's t distribution.
T975: dict[int, float] = {
    1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 6: 2.4469, 7: 2.3646, 8: 2.3060, 9: 2.2622,
    10: 2.2281, 11: 2.2010, 12: 2.1788, 13: 2.1604, 14: 2.1448, 15: 2.1314, 16: 2.1199, 17: 2.1098, 18: 2.1009,
    19: 2.0930, 20: 2.0860, 21: 2.0796, 22: 2.0739, 23: 2.0687, 24: 2.0639, 25: 2.0595, 26: 2.0555, 27: 2.0518,
    28: 2.0484, 29: 2.0452, 30: 2.0423, 40: 2.0211, 60: 2.0003, 120: 1.9799,
}

def t_quantile_975(df: int) -> float:
    """t_{0.975, df}; between (and beyond) tabulated values the next smaller df is used, so intervals are never
    narrower than exact ones (up to 4-decimal rounding) and at most about 1% wider (far beyond df 120)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return T975[max(k for k in T975 if k <= df)]


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; nan for no values."""
    return math.fsum(values) / len(values) if values else math.nan


def sample_std(values: Sequence[float]) -> float:
    """Standard deviation with n - 1 in the denominator (seeds are a sample); nan for fewer than two values."""
    n = len(values)
    if n < 2:
        return math.nan
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1))


@dataclass(frozen=True)
class PairedDifference:
    """Mean of a - b over paired samples, with its 95% confidence interval (nan bounds when n < 2)."""

    mean: float
    std: float
    n: int
    low: float
    high: float

    def as_dict(self) -> dict:
        """Plain floats for JSON (nan becomes None)."""
        clean = lambda v: None if isinstance(v, float) and math.isnan(v) else v  # noqa: E731
        return {"mean": clean(self.mean), "std": clean(self.std), "n": self.n, "low": clean(self.low),
                "high": clean(self.high)}


def excludes_zero(low: float | None, high: float | None) -> bool:
    """True when the interval [low, high] lies entirely on one side of zero (the table's *); False without an
    interval (None or nan bounds: fewer than two pairs)."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return False
    return low > 0 or high < 0


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """Differences a_i - b_i of pairs (e.g. the same seed under two variants): mean ± t * sd / sqrt(n)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples must have equal length, got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    m, sd = mean(d), sample_std(d)
    if n < 2:
        return PairedDifference(m, sd, n, math.nan, math.nan)
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return PairedDifference(m, sd, n, m - half, m + half)
