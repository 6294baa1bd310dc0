"""The trend of the null: a linear local-polynomial Gaussian smoother ``W`` (``trend = W x``).

Linear, so a step cannot hide in it (a robust, edge-preserving smoother would copy the step into
the trend and the surrogates). Local polynomial fit (degree 2 by default) with Gaussian weights,
as in LOWESS without robustness iterations; one-sided at the edges, so a loss-like curve that
moves fastest at the start is followed there. It smears a step into a ramp about
``trend_window`` samples wide.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import sparse


def _kernel_sd(trend_window: int, degree: int) -> float:
    # a local-quadratic fit's equivalent kernel is about half as wide as its weights (it has
    # negative side lobes), so its Gaussian is twice as wide to smear a step just as far
    return trend_window / (2.0 if degree == 2 else 4.0)


@lru_cache(maxsize=16)
def _smoother_cached(n: int, trend_window: int, degree: int) -> np.ndarray:
    sd = _kernel_sd(trend_window, degree)
    t = np.arange(n, dtype=np.float64)
    d = (t[None, :] - t[:, None]) / sd  # (target, source) offsets in kernel sds
    k = np.exp(-0.5 * d * d) * (np.abs(d) <= 3.0)
    # local polynomial: w(t) = e0^T (X^T K X)^-1 X^T K with X = [1, d, d^2, ...]
    moments = [k.sum(axis=1)]
    dp = np.ones_like(d)
    for _ in range(2 * degree):
        dp = dp * d
        moments.append((k * dp).sum(axis=1))  # (target,) sum_s K d^p
    idx = np.add.outer(np.arange(degree + 1), np.arange(degree + 1))
    gram = np.stack(moments, axis=1)[:, idx]  # (target, power, power)
    ok = np.linalg.cond(gram) < 1e10
    coef = np.zeros((n, degree + 1))
    if ok.any():
        rhs = np.zeros((int(ok.sum()), degree + 1, 1))
        rhs[:, 0] = 1.0
        coef[ok] = np.linalg.solve(gram[ok], rhs)[..., 0]
    poly = coef[:, :1] + np.zeros_like(d)
    dp = np.ones_like(d)
    for p in range(1, degree + 1):
        dp = dp * d
        poly += coef[:, p : p + 1] * dp
    w = poly * k
    # too few samples in the kernel for this degree: fall back to a kernel-weighted mean
    w[~ok] = k[~ok] / k[~ok].sum(axis=1, keepdims=True)
    w.setflags(write=False)
    return w


def smoother_matrix(n: int, trend_window: int, degree: int = 1) -> np.ndarray:
    """Weights ``W`` (n, n) of the local-polynomial Gaussian smoother; ``trend = W @ x``.

    Gaussian weights with standard deviation ``trend_window / 4`` (truncated at 3 sd), so a step
    is smeared over about ``trend_window`` samples (2 sd either side). Each row reproduces
    polynomials up to ``degree`` exactly, also at the edges (one-sided local fit).
    """
    return _smoother_cached(int(n), int(trend_window), int(degree))


@lru_cache(maxsize=16)
def smoother_sparse(n: int, trend_window: int, degree: int = 2) -> sparse.csr_matrix:
    """``smoother_matrix`` as a sparse (banded) matrix: applying it to a batch of series costs
    ``O(n * 3 trend_window)`` per series instead of ``O(n^2)``."""
    return sparse.csr_matrix(smoother_matrix(n, trend_window, degree))


def smooth(w: sparse.csr_matrix, z: np.ndarray) -> np.ndarray:
    """``W`` applied to every row of ``z`` (rows, n) or to ``z`` (n,); same shape as ``z``."""
    return np.asarray(w @ z.T).T if z.ndim == 2 else np.asarray(w @ z)
