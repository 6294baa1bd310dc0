"""Onset and duration of a detected event: least-squares ramp fit around it.

Each detector says roughly *where* something happened (its footprint differs: the z-score
fires after a change, the mean-shift statistic is a triangle around it, PELT places a
staircase on a ramp). To report onset and duration the same way for every detector, the
samples around an event are fitted with

    x_j = c0 + c1 * g_j + c2 * (j - centre),   g_j = 0 before a, (j - a + 1) / (D + 1) on
    a <= j < b, 1 from b on, D = b - a,

a level change of any length (a step when D = 0) on top of a local linear trend, by exhaustive
search over (a, b) with every sum in closed form from prefix sums (O(1) per pair). ``a`` is the
first sample that has moved, ``b`` the first at the new level.
"""

from __future__ import annotations

import numpy as np

_FLANK = 2  # samples required on each side of the ramp, so level and slope stay identifiable


def _window_sum(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return p[hi] - p[lo]


def fit_ramp(x: np.ndarray, peak: int) -> tuple[int, int]:
    """Best ramp ``(a, b)`` (indices into ``x``) for a level change with ``a <= peak``.

    Parameters
    ----------
    x : ndarray, shape (L,)
        The samples around one event (finite).
    peak : int
        Index in ``x`` where the detector scored highest; the change must start by then.

    Returns
    -------
    (a, b) : first moved sample and first sample at the new level (``b == a`` for a step).
    Falls back to ``(peak, peak)`` when ``x`` is too short to fit.
    """
    n = x.size
    a_max = min(peak, n - 1 - _FLANK)
    if a_max < _FLANK:
        return peak, peak
    j = np.arange(n, dtype=np.float64)
    centre = (n - 1) / 2.0
    u = j - centre
    z = np.zeros(1)
    px = np.concatenate([z, np.cumsum(x)])  # prefix sums, length n + 1
    pjx = np.concatenate([z, np.cumsum(j * x)])
    pj = np.concatenate([z, np.cumsum(j)])
    pj2 = np.concatenate([z, np.cumsum(j * j)])
    pcnt = np.arange(n + 1, dtype=np.float64)

    a_all, b_all = np.meshgrid(np.arange(_FLANK, a_max + 1), np.arange(n + 1), indexing="ij")
    keep = (b_all >= a_all) & (b_all <= n - _FLANK)
    a, b = a_all[keep], b_all[keep]  # (pairs,)
    d = (b - a).astype(np.float64)

    # ramp part [a, b): g = (j - a + 1) / (D + 1)
    rx = _window_sum(px, a, b)
    rjx = _window_sum(pjx, a, b)
    rj = _window_sum(pj, a, b)
    rj2 = _window_sum(pj2, a, b)
    rc = _window_sum(pcnt, a, b)
    s_g = d / 2.0
    s_gg = d * (2 * d + 1) / (6 * (d + 1))
    s_gx = (rjx - (a - 1) * rx) / (d + 1)
    r_ju = rj2 - centre * rj
    r_u = rj - centre * rc
    s_gu = (r_ju - (a - 1) * r_u) / (d + 1)
    # plateau part [b, n): g = 1
    tail_c = n - b
    tail_x = px[n] - px[b]
    tail_u = (pj[n] - pj[b]) - centre * tail_c
    s_g = s_g + tail_c
    s_gg = s_gg + tail_c
    s_gx = s_gx + tail_x
    s_gu = s_gu + tail_u

    # Project g and x off span{1, u} (orthogonal, as sum(u) = 0); the fitted c1 then explains
    # (g~ . x~)^2 / (g~ . g~) of the residual sum of squares, so maximise that over (a, b).
    s_uu = float(np.sum(u * u))
    s_x = float(px[n])
    s_ux = float(pjx[n] - centre * px[n])
    gx = s_gx - s_g * s_x / n - s_gu * s_ux / s_uu
    gg = s_gg - s_g * s_g / n - s_gu * s_gu / s_uu
    ok = gg > 1e-9 * np.maximum(s_gg, 1e-12)
    if not ok.any():
        return peak, peak
    gain = np.where(ok, gx * gx / np.where(ok, gg, 1.0), -np.inf)
    best = int(np.argmax(gain))
    return int(a[best]), int(b[best])


def locate(
    x: np.ndarray, start: np.ndarray, stop: np.ndarray, peak: np.ndarray, margin: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ramp ``(a, b)`` sample indices for each event of one series, shape (k,) each.

    Each event's fit window is its footprint widened by ``margin`` samples, clipped so it never
    reaches into a neighbouring event.
    """
    n, k = x.size, start.size
    onset = np.empty(k, dtype=np.int64)
    end = np.empty(k, dtype=np.int64)
    for i in range(k):
        lo = max(int(start[i]) - margin, 0, int(stop[i - 1]) + 1 if i else 0)
        hi = min(int(stop[i]) + margin, n - 1, int(start[i + 1]) - 1 if i + 1 < k else n - 1)
        a, b = fit_ramp(x[lo : hi + 1], int(peak[i]) - lo)
        onset[i], end[i] = lo + a, lo + b
    return onset, end
