"""TwoNN intrinsic dimension (Facco et al. 2017), as Ansuini et al. 2019 apply it to activations."""

from __future__ import annotations

import math
import warnings

import numpy as np

from ._metrics import DegenerateSpectrumWarning

__all__ = ["two_nearest_distances", "twonn"]

_BLOCK_ROWS = 1024  # rows per distance block: 1024 x n float64 stays small
_CANDIDATES = 4  # neighbours re-measured exactly after the BLAS distance pass


def two_nearest_distances(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each row of ``x`` (n, d) to its first and second nearest other row.

    Candidates come from ``|a|^2 + |b|^2 - 2 a.b`` (one matrix product per block of rows); the
    ``_CANDIDATES`` nearest are then re-measured exactly as ``|a - b|``, so cancellation in the
    fast pass cannot corrupt near neighbours. Needs ``n >= 3``; returns two arrays of shape (n,).
    """
    n = x.shape[0]
    k = min(_CANDIDATES, n - 1)
    sq = np.einsum("ij,ij->i", x, x)  # (n,)
    r1 = np.empty(n)
    r2 = np.empty(n)
    for start in range(0, n, _BLOCK_ROWS):
        rows = slice(start, min(start + _BLOCK_ROWS, n))
        d2 = sq[rows, None] + sq[None, :] - 2.0 * (x[rows] @ x.T)  # (block, n)
        idx = np.arange(rows.start, rows.stop)
        d2[idx - start, idx] = np.inf  # never one's own neighbour
        cand = np.argpartition(d2, k - 1, axis=1)[:, :k]  # (block, k)
        exact = np.linalg.norm(x[rows, None, :] - x[cand], axis=-1)  # (block, k)
        exact.sort(axis=1)
        r1[rows] = exact[:, 0]
        r2[rows] = exact[:, 1]
    return r1, r2


def twonn(x: np.ndarray, *, discard_fraction: float = 0.1) -> float:
    """TwoNN intrinsic dimension of a point cloud.

    Facco, d'Errico, Rodriguez and Laio 2017, "Estimating the intrinsic dimension of datasets
    by a minimal neighborhood information": for each point the ratio ``mu = r2 / r1`` of its
    second to first nearest-neighbour distance is Pareto distributed, ``F(mu) = 1 - mu**-d``,
    so ``-log(1 - F(mu)) = d log(mu)``. Following Ansuini, Laio, Macke and Zoccolan 2019
    ("Intrinsic dimension of data representations in deep neural networks"): duplicate points
    are dropped (``r1 = 0``), as are ties ``r1 = r2``; the ratios are sorted, the empirical
    ``F_i = i / N`` is formed, the largest ``discard_fraction`` of ratios (and the last one,
    where ``1 - F = 0``) are discarded, and ``d`` is the least-squares slope of
    ``-log(1 - F)`` on ``log(mu)`` through the origin.

    Parameters
    ----------
    x : array_like, shape (n, d)
        One point per row (for activations: one probe example or position per row).
    discard_fraction : float, default 0.1
        Share of the largest ratios left out of the fit (they are the noisiest).

    Returns
    -------
    float
        The estimated dimension; NaN with a :class:`DegenerateSpectrumWarning` when ``x``
        holds NaN/Inf or fewer than three distinct points remain.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> plane = rng.uniform(size=(2000, 2)) @ rng.standard_normal((2, 50))
    >>> round(twonn(plane))
    2
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"Expected `x` with shape (n, d), got shape {x.shape}")
    if not (isinstance(discard_fraction, float | int) and 0 <= discard_fraction < 1):
        raise ValueError(
            f"Expected `discard_fraction` in [0, 1), got {discard_fraction!r}; 0.1 is the "
            "value Ansuini et al. 2019 use"
        )
    x = x.astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        warnings.warn("twonn: input holds NaN/Inf; returning NaN", DegenerateSpectrumWarning, 2)
        return math.nan
    x = np.unique(x, axis=0)  # duplicates have r1 = 0 and an infinite ratio
    if x.shape[0] < 3:
        warnings.warn(
            f"twonn: {x.shape[0]} distinct points, at least 3 are needed; returning NaN",
            DegenerateSpectrumWarning,
            2,
        )
        return math.nan
    r1, r2 = two_nearest_distances(x)
    keep = r2 > r1  # drop ties (Ansuini et al.'s "degeneracies")
    mu = np.sort(r2[keep] / r1[keep])
    n = mu.size
    n_fit = min(math.floor(n * (1.0 - discard_fraction)), n - 1)
    if n_fit < 1:
        warnings.warn(
            f"twonn: {n} usable ratios leave nothing to fit; returning NaN",
            DegenerateSpectrumWarning,
            2,
        )
        return math.nan
    lx = np.log(mu[:n_fit])
    ly = -np.log(1.0 - np.arange(1, n_fit + 1) / n)
    return float(lx @ ly / (lx @ lx))
