"""Quantiles in fixed memory, for runs that last days (a camera at 30 FPS is 2.6 million frames a day).

LogHistogram counts values in log-spaced buckets (DDSketch's mapping): bucket i holds values in
(LOW * G**(i-1), LOW * G**i] with G = (1 + ALPHA) / (1 - ALPHA), and reports 2 * LOW * G**i / (G + 1),
which is within a relative ALPHA of every value in the bucket. So a quantile is within ALPHA (0.5 %)
of the true order statistic it stands for, for values in [LOW, HIGH]; the exact min and max are kept
and clamp the estimate. Memory: one int64 array of ~3,000 buckets (24 KiB), whatever the count.
"""

from __future__ import annotations

import math

import numpy as np

ALPHA = 0.005  # relative error of every quantile estimate
LOW, HIGH = 1e-6, 1e7  # the range covered at that error (ms: 1 ns .. 2.8 hours)
_G = (1 + ALPHA) / (1 - ALPHA)
_LN_G = math.log(_G)
_N = int(math.ceil(math.log(HIGH / LOW) / _LN_G)) + 1


class LogHistogram:
    """add() values, read quantile(q) (q in 0..100, numpy's percentile convention) in fixed memory."""

    __slots__ = ("counts", "n", "total", "min", "max")

    def __init__(self) -> None:
        self.counts = np.zeros(_N, np.int64)
        self.n = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def __len__(self) -> int:
        return self.n

    def add(self, value: float) -> None:
        v = float(value)
        i = 0 if v <= LOW else min(_N - 1, int(math.ceil(math.log(v / LOW) / _LN_G)))
        self.counts[i] += 1
        self.n += 1
        self.total += v
        self.min = min(self.min, v)
        self.max = max(self.max, v)

    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    def quantile(self, q: float) -> float | None:
        """The value at rank round((n - 1) * q / 100), within ALPHA relative (exact at 0 and 100); None when empty."""
        if not self.n:
            return None
        rank = int(round((self.n - 1) * min(max(q, 0.0), 100.0) / 100.0))
        if rank in (0, self.n - 1):
            return self.min if rank == 0 else self.max
        i = int(np.searchsorted(np.cumsum(self.counts), rank, side="right"))
        est = 2.0 * LOW * _G ** i / (_G + 1.0)
        return min(max(est, self.min), self.max)
