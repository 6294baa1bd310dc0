"""False-discovery control across series (Benjamini and Hochberg 1995; Benjamini and Bogomolov
2014)."""

from __future__ import annotations

import numpy as np


def bh_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg (1995) adjusted p-values: q_(i) = min_{j >= i} m p_(j) / j, <= 1."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out


def hierarchical_fdr(p_series: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Select series by BH on their series-level p-values, then the within-series level.

    Returns ``(q_series, selected, level)``: a candidate of a selected series is significant
    when its (family-wise, max-statistic) p-value is <= ``level = alpha * R / m`` (Benjamini and
    Bogomolov 2014), R the number of selected series among the m tested.
    """
    q = bh_adjust(p_series)
    selected = q <= alpha
    m = p_series.size
    level = alpha * int(selected.sum()) / m if m else 0.0
    return q, selected, level
