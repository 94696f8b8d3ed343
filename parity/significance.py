"""Is an artifact's accuracy loss real, or what chance does on this many images? An exact paired test.

The reference and the artifact answer the *same* images, so the pairs carry the evidence: an image both get
right (or both wrong) says nothing about which is more accurate; only the *discordant* images do — `lost`
(Keras right, the artifact wrong) and `gained` (Keras wrong, the artifact right). If the artifact were as
accurate as Keras, each of the m = lost + gained discordant images would be a loss or a gain with probability
1/2, so lost ~ Binomial(m, 1/2). The test is McNemar's, computed exactly (the chi-square form is wrong for the
handful of discordant images a healthy int8 artifact has):

    p = P(X >= lost | X ~ Binomial(m, 1/2))        (one-sided: a gain is never evidence of a loss)

The gate fails the accuracy limit only when the observed loss is over the format's `max_delta_acc_pp` AND this
p-value is below ALPHA: a loss that big, and unlikely to be chance. The interval shown next to Δacc is the exact
(Clopper-Pearson) 95 % interval of the loss share among the discordant images, conditional on m, mapped to
percentage points of accuracy: Δacc = m (1 - 2 θ) / n. Its upper end is below 0 exactly when p < ALPHA, so the
interval and the verdict never disagree. Everything is closed-form arithmetic on counts: the same counts give
the same verdict on every run and every machine (no resampling, no seed).

Why not a bootstrap interval: it resamples (a seed, and a verdict that moves with it near the edge) and, with
the 0–14 discordant images a parity run has, its coverage is poor exactly where the gate decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 0.025  # one-sided, the convention of non-inferiority tests (the one-sided half of a two-sided 95 %)
CONFIDENCE = 1 - 2 * ALPHA  # the two-sided interval whose upper end matches the one-sided test at ALPHA


def binomial_tail(k: int, m: int) -> float:
    """P(X >= k) for X ~ Binomial(m, 1/2), exact (integer arithmetic, one division; the binomial coefficients
    are built one from the last, so tens of thousands of discordant images take well under a second)."""
    if k <= 0:
        return 1.0
    if k > m:
        return 0.0
    c = total = math.comb(m, k)
    for i in range(k, m):
        c = c * (m - i) // (i + 1)  # comb(m, i + 1), exact
        total += c
    return total / 2 ** m  # int / int: correctly rounded however large both are


def _binom_cdf(k: int, m: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(m, p), in log space: comb(m, i) alone overflows a float past m ~ 1030."""
    if k < 0:
        return 0.0
    if k >= m:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq, lm = math.log(p), math.log1p(-p), math.lgamma(m + 1)
    return min(1.0, math.fsum(math.exp(lm - math.lgamma(i + 1) - math.lgamma(m - i + 1) + i * lp + (m - i) * lq)
                              for i in range(k + 1)))


def _solve(f, target: float) -> float:
    """The p in [0, 1] with f(p) = target for a decreasing f, by bisection (60 halvings: 1e-18)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, m: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion from k of m; each end misses with chance alpha."""
    if m == 0:
        return 0.0, 1.0
    lower = 0.0 if k == 0 else _solve(lambda p: _binom_cdf(k - 1, m, p), 1 - alpha)  # P(X >= k | lower) = alpha
    upper = 1.0 if k == m else _solve(lambda p: _binom_cdf(k, m, p), alpha)  # P(X <= k | upper) = alpha
    return lower, upper


@dataclass(frozen=True)
class AccuracyTest:
    """The paired test of one artifact's accuracy against the reference's on n images."""

    n: int
    lost: int  # Keras right, the artifact wrong
    gained: int  # Keras wrong, the artifact right

    @property
    def discordant(self) -> int:
        return self.lost + self.gained

    @property
    def delta_pp(self) -> float:
        return (self.gained - self.lost) * 100.0 / self.n if self.n else 0.0

    @property
    def p_value(self) -> float:
        """One-sided: the chance of losing at least this many of the discordant images if nothing changed."""
        return binomial_tail(self.lost, self.discordant)

    def interval_pp(self) -> tuple[float, float]:
        """The CONFIDENCE interval of Δacc in percentage points (exact, conditional on the discordant count)."""
        m = self.discordant
        if m == 0 or not self.n:
            return 0.0, 0.0
        lo_share, hi_share = clopper_pearson(self.lost, m)
        return m * (1 - 2 * hi_share) * 100.0 / self.n, m * (1 - 2 * lo_share) * 100.0 / self.n

    def significant_loss(self, alpha: float = ALPHA) -> bool:
        return self.p_value < alpha

    def to_dict(self) -> dict:
        lo, hi = self.interval_pp()
        return {"test": "exact one-sided McNemar (binomial on the discordant images)", "n": self.n,
                "lost": self.lost, "gained": self.gained, "discordant": self.discordant,
                "p_value": float(f"{self.p_value:.4g}"), "alpha": ALPHA,
                f"ci{CONFIDENCE * 100:g}_delta_acc_pp": [round(lo, 2), round(hi, 2)],
                "significant_loss": self.significant_loss()}

    def text(self) -> str:
        """'2 lost, 0 gained, p = 0.25, 95 % CI −2.9…+0.0 pp'."""
        lo, hi = self.interval_pp()
        return (f"{self.lost} lost, {self.gained} gained, one-sided p = {self.p_value:.2g}, "
                f"{CONFIDENCE:.0%} CI {lo:+.1f}…{hi:+.1f} pp")
