"""Timing statistics for benchmarks: percentiles, summaries, ratios and interleaved timing.

Pure Python + numpy. Percentiles use linear interpolation between closest ranks (numpy's default
``method="linear"``) so figures match what a reader recomputes from the raw samples in bench.json.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (numpy 'linear')."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    data = sorted(float(v) for v in values)
    if not data:
        raise ValueError("percentile of an empty sample")
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    frac = pos - lo
    return data[lo] + (data[hi] - data[lo]) * frac


@dataclass
class LatencyStats:
    """Latency of one configuration in milliseconds; throughput in images per second."""

    count: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    throughput_ips: float  # batch / mean latency

    def to_dict(self) -> dict[str, float]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarize(seconds: Sequence[float], batch: int = 1) -> LatencyStats:
    """Summary of per-call wall times given in seconds (each call processes ``batch`` images)."""
    if len(seconds) == 0:
        raise ValueError("no timings to summarize")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    ms = [float(s) * 1e3 for s in seconds]
    mean = sum(ms) / len(ms)
    var = sum((v - mean) ** 2 for v in ms) / (len(ms) - 1) if len(ms) > 1 else 0.0
    return LatencyStats(
        count=len(ms),
        mean_ms=mean,
        std_ms=math.sqrt(var),
        min_ms=min(ms),
        p50_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        p99_ms=percentile(ms, 99),
        max_ms=max(ms),
        throughput_ips=throughput(mean / 1e3, batch),
    )


def throughput(mean_seconds: float, batch: int = 1) -> float:
    """Images per second for calls of ``batch`` images taking ``mean_seconds`` each (inf-safe)."""
    return float(batch) / mean_seconds if mean_seconds > 0 else float("inf")


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None:
        return None
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator <= 0:
        return None
    return numerator / denominator


def overhead(ours: Sequence[float], bare: Sequence[float], seed: int = 0, resamples: int = 1000) -> dict:
    """edgeproof's cost relative to the bare loop, from interleaved samples (same length, paired).

    ``ratio``: median(ours) / median(bare) — robust to the occasional preempted call.
    ``added_us_p50``: the same difference in microseconds per call (assumes samples in seconds).
    ``paired_ratio``: median over i of ours[i] / bare[i] — each pair ran back to back, so slow
    phases of a shared machine hit both sides. ``ci95``: bootstrap interval of ``ratio``.
    """
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(bare, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("overhead needs samples on both sides")
    med = ratio(float(np.median(a)), float(np.median(b)))
    out: dict = {"ratio": med, "mean_ratio": ratio(float(a.mean()), float(b.mean())),
                 "added_us_p50": (float(np.median(a)) - float(np.median(b))) * 1e6}
    if a.size == b.size and np.all(b > 0):
        out["paired_ratio"] = float(np.median(a / b))
    else:
        out["paired_ratio"] = None
    rng = np.random.default_rng(seed)
    if resamples > 0 and a.size > 1 and b.size > 1:
        ia = rng.integers(0, a.size, size=(resamples, a.size))
        ib = rng.integers(0, b.size, size=(resamples, b.size))
        boot = np.median(a[ia], axis=1) / np.maximum(np.median(b[ib], axis=1), 1e-12)
        out["ci95"] = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
    else:
        out["ci95"] = None
    return out


def interleave_order(names: Sequence[str], rounds: int) -> list[list[str]]:
    """Per round, the order in which the contenders run: ABBA-style (reversed every other round).

    Alternating the order cancels both slow drift (thermal, other tenants) and any advantage of
    running first or second within a round (warm caches, allocator state).
    """
    return [round_order(names, r) for r in range(rounds)]


def round_order(names: Sequence[str], rnd: int) -> list[str]:
    """Order of round ``rnd``: forward on even rounds, reversed on odd ones."""
    return list(names) if rnd % 2 == 0 else list(names)[::-1]


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    runs: int,
    min_seconds: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
    on_round: Callable[[int], None] | None = None,
    max_runs: int | None = None,
    block: int = 1,
) -> dict[str, list[float]]:
    """Time each callable once per round, alternating order; returns seconds per call per name.

    Runs at least ``runs`` rounds and keeps going until ``min_seconds`` of wall time have passed
    (capped by ``max_runs``), so a time budget can guarantee enough samples for p99.

    ``block`` > 1: each contender runs ``block`` timed calls in a row per turn, after one untimed call.
    Two runtimes with their own thread pools (2+ threads) otherwise time each other: the pool that just
    ran still spins on the cores while the other one starts, which swung two identical bare loops by
    1.4-1.9x here. ``runs`` still counts samples per contender (rounds = runs / block).
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    start = clock()
    rnd = 0
    cap = max_runs if max_runs is not None else max(runs, 1_000_000)
    while rnd * block < cap and (rnd * block < runs or clock() - start < min_seconds):
        for n in round_order(names, rnd):
            fn = fns[n]
            if block > 1:
                fn()  # wakes this runtime's pool; the turn's timed calls follow
            for _ in range(block):
                t0 = clock()
                fn()
                times[n].append(clock() - t0)
        rnd += 1
        if on_round is not None:
            on_round(rnd)
    if block > 1 and min_seconds <= 0:
        times = {n: v[:runs] for n, v in times.items()}
    return times


def time_calls(fn: Callable[[], object], runs: int, min_seconds: float = 0.0,
               clock: Callable[[], float] = time.perf_counter, max_runs: int | None = None) -> list[float]:
    """Seconds per call of a single callable (the one-contender case of ``time_interleaved``)."""
    return time_interleaved({"fn": fn}, runs, min_seconds, clock, max_runs=max_runs)["fn"]
