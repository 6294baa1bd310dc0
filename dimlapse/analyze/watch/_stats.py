"""Robust statistics of short dimensionality series, the evidence behind every diagnosis.

All take ``y``, one layer's metric over consecutive capture snapshots (oldest first), and
work in log units, so a change of 0.05 is a 5 % change whatever the layer's width.
"""

from __future__ import annotations

import numpy as np

__all__ = ["change", "level", "noise"]

_MAD_TO_SIGMA = 1.4826  # MAD of a normal sample -> its standard deviation
_SECOND_DIFF_SCALE = np.sqrt(6.0)  # var(e_t - 2 e_{t-1} + e_{t-2}) = 6 var(e) for white e


def level(y: np.ndarray, *, k: int = 3) -> float:
    """Median of the last ``k`` values (a level robust to one outlier)."""
    return float(np.median(y[-k:]))


def noise(y: np.ndarray) -> float:
    """Robust per-snapshot noise of ``log(y)``: ``1.4826 * MAD(second differences) / sqrt(6)``.

    Second differences remove any locally linear trend (a steady expansion is not noise), and
    the MAD ignores a single jump. For ``log y = trend + e`` with white ``e`` of standard
    deviation ``sigma``, it estimates ``sigma``. NaN for fewer than 4 values.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.size < 4 or not np.isfinite(y).all() or (y <= 0).any():
        return float("nan")
    d2 = np.diff(np.log(y), n=2)  # (t - 2,)
    mad = np.median(np.abs(d2 - np.median(d2)))
    return float(_MAD_TO_SIGMA * mad / _SECOND_DIFF_SCALE)


def change(y: np.ndarray, *, k: int = 3) -> float:
    """Relative change ``log(level(last k) / level(first k))`` across ``y``."""
    y = np.asarray(y, dtype=np.float64)
    first, last = float(np.median(y[:k])), float(np.median(y[-k:]))
    if not (first > 0 and last > 0):
        return float("nan")
    return float(np.log(last / first))
