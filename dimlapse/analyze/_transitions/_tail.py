"""Surrogate p-values beyond the resolution of the Monte-Carlo test: a fitted extreme-value tail.

With B surrogates the max-statistic p-value ``(1 + #{M_b >= s}) / (1 + B)`` cannot go below
``1 / (1 + B)`` (0.005 for B = 200, 0.02 for B = 50), while Benjamini-Hochberg across m ~ 54
series needs ``alpha / m ~ 0.001`` for a single discovery. Where a candidate's score ``s`` lies
beyond the bulk of the surrogate maxima (fewer than ``MIN_EXCEED`` = 10 of them reach it), its
p-value is taken from a generalized Pareto (GPD) tail instead, as in Knijnenburg, Wessels,
Reinders and Shmulevich (2009), "Fewer permutations, more accurate P-values", Bioinformatics
25:i161-i168; elsewhere the empirical p-value is kept.

The tail is fitted to the B surrogate maxima themselves (the Monte-Carlo null of the max
statistic): the ``N_u = max(MIN_FIT, B // 4)`` largest, over a threshold ``u`` halfway between
the ``N_u``-th and ``(N_u + 1)``-th largest (Knijnenburg et al. use the largest 250 of many
more permutations; with B = 50-200 a quarter keeps enough points). Maxima of surrogates
without any event (``-inf``: ``meanshift`` reports only runs above its threshold, ``pelt``
often finds no change point) lie below ``u`` and only count in the rate; with fewer than
``N_u + 1`` finite maxima there is no fit and the empirical p-value stays. The excesses
``M - u`` are approximately generalized Pareto (Pickands 1975; Coles 2001, *An Introduction
to Statistical Modeling of Extreme Values*, ch. 4), so

    P(max >= s) = (N_u / B) * (1 + xi (s - u) / sigma) ** (-1 / xi)   (exp(-(s-u)/sigma), xi=0)

``(sigma, xi)`` are fitted by probability-weighted moments (Hosking and Wallis 1987,
Technometrics 29:339), closed-form and stable on small samples. The shape is clipped to
``xi >= 0``: maxima of Gaussian-like statistics lie in the Gumbel domain (``xi = 0``), and a
fitted ``xi < 0`` would give a finite upper end point and p = 0 beyond it, which is never
warranted from a few hundred surrogates. Clipping makes the tail heavier, i.e. conservative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_EXCEED = 10  # fewer surrogate maxima than this at or above a score: use the fitted tail
N_EXCEED = 250  # at most this many exceedances (Knijnenburg et al. start at 250)
MIN_FIT = 12  # fewest exceedances the tail is fitted to
XI_MAX = 1.0  # cap on the fitted shape (a heavier tail than this is not credible here)


@dataclass(frozen=True)
class Tail:
    """GPD tail of the surrogate maxima (NaN fields: no fit)."""

    threshold: float  # u
    scale: float  # sigma
    shape: float  # xi >= 0
    rate: float  # N_u / B: share of surrogate maxima above u
    n_exceed: int  # N_u

    @property
    def fitted(self) -> bool:
        return bool(np.isfinite(self.scale))

    def sf(self, s: np.ndarray) -> np.ndarray:
        """``P(max >= s) = rate * GPD survival of s - u`` for ``s >= u`` (NaN without a fit)."""
        s = np.asarray(s, dtype=np.float64)
        if not self.fitted:
            return np.full(s.shape, np.nan)
        y = np.maximum(s - self.threshold, 0.0) / self.scale
        if self.shape > 1e-9:
            log_exc = -np.log1p(self.shape * y) / self.shape
        else:
            log_exc = -y
        return self.rate * np.exp(log_exc)

    def isf(self, p: float) -> float:
        """Score ``s`` with ``sf(s) = p``: the inverse of :meth:`sf` (NaN without a fit)."""
        if not self.fitted:
            return float("nan")
        t = p / self.rate  # survival of the excess distribution
        if t >= 1.0:
            return self.threshold
        if self.shape > 1e-9:
            y = (t ** (-self.shape) - 1.0) / self.shape
        else:
            y = -np.log(t)
        return float(self.threshold + self.scale * y)

    def attrs(self, prefix: str = "tail_") -> dict[str, float]:
        return {
            f"{prefix}threshold": self.threshold,
            f"{prefix}scale": self.scale,
            f"{prefix}shape": self.shape,
            f"{prefix}rate": self.rate,
            f"{prefix}n_exceed": float(self.n_exceed),
        }


NO_TAIL = Tail(np.nan, np.nan, np.nan, np.nan, 0)


def gpd_pwm(excess: np.ndarray) -> tuple[float, float]:
    """GPD ``(sigma, xi)`` of positive excesses by probability-weighted moments.

    Hosking and Wallis (1987): with ``a0 = mean(y)`` and ``a1 = mean((n - i) / (n - 1) y_(i))``
    (``y_(i)`` ascending, i = 1..n), ``xi = 2 - a0 / (a0 - 2 a1)`` and
    ``sigma = 2 a0 a1 / (a0 - 2 a1)``. An exponential sample gives ``xi ~ 0``.
    """
    y = np.sort(np.asarray(excess, dtype=np.float64))
    n = y.size
    a0 = float(y.mean())
    a1 = float(np.mean((n - 1 - np.arange(n)) / (n - 1) * y))
    den = a0 - 2.0 * a1
    if den <= 0 or a0 <= 0:
        return a0, 0.0
    return 2.0 * a0 * a1 / den, 2.0 - a0 / den


def fit_tail(null_max: np.ndarray) -> Tail:
    """Fit the GPD tail to the surrogate maxima, shape (B,) (``-inf``: no event).

    Returns ``NO_TAIL`` when fewer than ``N_u + 1`` maxima are finite or the top ones are equal.
    """
    b = null_max.size
    n_u = min(N_EXCEED, max(MIN_FIT, b // 4))
    m = np.sort(null_max)[::-1]  # descending, -inf last
    if b <= n_u or not np.isfinite(m[n_u]):
        return NO_TAIL
    u = 0.5 * float(m[n_u - 1] + m[n_u])
    excess = m[:n_u] - u
    if not np.any(excess > 0):
        return NO_TAIL
    sigma, xi = gpd_pwm(excess)
    if xi <= 0:  # lighter than exponential: clip to the Gumbel domain (conservative)
        sigma, xi = float(excess.mean()), 0.0
    xi = min(xi, XI_MAX)
    if not sigma > 0:  # ties among the top maxima (e.g. one positive excess): nothing to fit
        return NO_TAIL
    return Tail(u, float(sigma), float(xi), n_u / b, n_u)


def tail_pvalues(
    score: np.ndarray, null_max: np.ndarray, tail: Tail
) -> tuple[np.ndarray, np.ndarray]:
    """Max-statistic p-values of candidate ``score`` (k,), empirical or from the fitted tail.

    Returns ``(p, from_tail)``: ``p = (1 + #{M_b >= s}) / (1 + B)`` where at least
    ``MIN_EXCEED`` surrogate maxima reach ``s`` (or there is no fit, or ``s`` is below the tail
    threshold), else ``tail.sf(s)``.
    """
    b = null_max.size
    ge = (null_max[None, :] >= score[:, None]).sum(axis=1)  # (k,)
    p = (1.0 + ge) / (1.0 + b)
    use = (ge < MIN_EXCEED) & (score > tail.threshold) if tail.fitted else np.zeros(ge.shape, bool)
    if use.any():
        p = np.where(use, tail.sf(score), p)
    return p, use


def critical_score(null_max: np.ndarray, tail: Tail, alpha: float) -> float:
    """Score a candidate must exceed for ``p <= alpha`` under :func:`tail_pvalues`.

    Empirically, p <= alpha iff #{M_b >= s} <= k = floor(alpha (1 + B)) - 1, i.e. iff s is
    above the (k+1)-th largest surrogate maximum (-inf when that surrogate had no event); where
    that needs fewer than ``MIN_EXCEED`` exceedances the tail's inverse applies (inf without a
    fit and below the resolution).
    """
    k = int(np.floor(alpha * (1 + null_max.size) + 1e-9)) - 1
    if k >= MIN_EXCEED or not tail.fitted:
        if k < 0:
            return float("inf")
        return float(np.sort(null_max)[::-1][k]) if k < null_max.size else float("-inf")
    return max(tail.isf(alpha), tail.threshold)
