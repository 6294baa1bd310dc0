"""The noise of the null, fitted so that it does not absorb the events under test.

The null's noise is Gaussian AR(1) ``(phi, sigma)`` (or shuffled residual blocks), fitted to the
residual ``r = (I - W) x'`` of the smooth trend. Fitting it to the residual of ``x`` itself
takes a staircase for noise: each step leaves a smooth S-shaped leftover of about
``trend_window`` samples in ``r``, the longer-lag differences the AR(1) fit relies on see
mostly those leftovers, ``phi`` runs into its cap, and surrogates with that noise wander as far
as the staircase, so none of its steps is significant. ``x'`` is therefore ``x`` with its
level shifts and fast ramps excised (``excise_events``):

1. For lags ``k = 1, 2, 4, 8, 16`` in turn, the lag-``k`` differences ``x'_{t+k} - x'_t`` minus
   their running median (the local slope of the trend, over ``2 trend_window + 1`` samples) are
   compared with ``threshold`` (default 5) robust standard deviations (1.4826 MAD) of
   themselves. A run of exceedances marks the increments all its windows share (the jump
   itself; the union where a ramp is longer than ``k``).
2. Marked increments are replaced by the local median increment (the trend's slope), and the
   lag is scanned again on the edited series (at most three passes); then the next lag.

A sharp step is caught at lag 1 (one increment), a ramp of ``L`` samples at the first lag
``>= L``; changes slower than about 16 samples are left to the trend. On Gaussian noise an
exceedance of 5 robust SD has probability 6e-7 per difference, so on null series nothing is
excised and the fit is the earlier one; only series with clear events change. Excised
increments lose their noise too, which biases the fit low by about the excised share (a few
per cent for a handful of events on hundreds of samples).

The AR(1) parameters then come by indirect inference: robust (MAD) variances of short-lag
differences ``r_t - r_{t-k}`` are matched with their values for an AR(1) passed through
``(I - W)`` (from the smoother's frequency response), unbiased where a lag-1 autocorrelation
of ``r`` is not.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter
from scipy.signal import lfilter

from ._smoother import smoother_matrix

MAD_TO_SD = 1.4826  # 1 / Phi^-1(3/4): MAD of a Gaussian times this is its standard deviation
_PHI_GRID = np.linspace(-0.6, 0.99, 320)
EXCISE_LAGS = (1, 2, 4, 8, 16)
EXCISE_THRESHOLD = 5.0


def robust_sd(v: np.ndarray, axis: int = -1) -> np.ndarray:
    """MAD-based standard deviation along ``axis`` (1.4826 * median |v - median v|).

    Falls back to the classical standard deviation where the MAD is zero (quantised series that
    are constant most of the time), so a non-constant series never gets a zero noise scale.
    """
    med = np.median(v, axis=axis, keepdims=True)
    mad = MAD_TO_SD * np.median(np.abs(v - med), axis=axis)
    return np.where(mad > 0, mad, np.std(v, axis=axis))


Q_LOW = 0.25  # the scale of a row comes from its smaller |values|: events are the large ones
Z_LOW = 0.31863936  # the 0.625 quantile of N(0, 1): P(|z| <= Z_LOW) = Q_LOW


def low_quantile_sd(d: np.ndarray) -> np.ndarray:
    """Per-row sd from the ``Q_LOW`` quantile of ``|d - median d|`` (rows, m), over ``Z_LOW``.

    A MAD breaks down when events move half of a row (a dense staircase moves a window
    statistic almost everywhere); the lower quartile of the absolute deviations stays bounded
    until about three quarters of the row are events, inflated by ``Phi^-1((1 + 0.25 / (1 -
    e)) / 2) / Z_LOW`` at a share ``e`` of events (1.0 at 0, 1.4 at 0.25, 2.1 at 0.5). The
    median centres away a constant offset such as a linear trend's. Falls back to the rms
    where it is zero.
    """
    dev = np.abs(d - np.median(d, axis=1, keepdims=True))
    s = np.quantile(dev, Q_LOW, axis=1) / Z_LOW
    return np.where(s > 0, s, np.sqrt(np.mean(dev * dev, axis=1)))


def low_quantile_sds_masked(d: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``low_quantile_sd(d[r, keep[r]][None, :])[0]`` of every row ``r``, shape (rows,).

    ``d`` (rows, m) and ``keep`` (rows, m) bool, at least one kept value per row. The kept
    values of every row are sorted at once (dropped ones as +inf, at the end), and the median
    and the ``Q_LOW`` quantile are read from the order statistics with numpy's own arithmetic
    (``np.median``: the mean of the two middle values; ``np.quantile``'s default linear method:
    ``a + (b - a) * g``, or ``b - (b - a) * (1 - g)`` for ``g >= 0.5``), so the values are those
    of the row-by-row calls bit for bit (tested against them). Rows whose quantile is 0 take the
    row-by-row rms fallback.
    """
    rows = d.shape[0]
    c = keep.sum(axis=1)  # (rows,) kept values
    r = np.arange(rows)
    srt = np.sort(np.where(keep, d, np.inf), axis=1)
    h = c // 2
    even = c % 2 == 0
    mid = srt[r, h]
    med = np.where(even, (srt[r, np.maximum(h - 1, 0)] + mid) / 2, mid)  # (rows,)
    dev = np.sort(np.where(keep, np.abs(d - med[:, None]), np.inf), axis=1)
    v = (c - 1) * Q_LOW  # virtual index of the quantile among the kept values
    below = np.floor(v)
    prev = below.astype(np.intp)
    nxt = np.minimum(prev + 1, c - 1)
    prev = np.where(v >= c - 1, c - 1, prev)  # numpy takes the last value there
    a, b = dev[r, prev], dev[r, nxt]
    g = v - below
    diff = b - a
    q = np.where(g >= 0.5, b - diff * (1 - g), a + diff * g)
    s = q / Z_LOW
    for i in np.flatnonzero(~(s > 0)):
        s[i] = low_quantile_sd(d[i, keep[i]][None, :])[0]
    return s


def _odd(k: int) -> int:
    return k if k % 2 else k - 1


def _marks(dev: np.ndarray, limit: float, k: int, n_inc: int) -> np.ndarray:
    """Increments behind each run of lag-``k`` exceedances, shape (n_inc,) bool."""
    out = np.zeros(n_inc, dtype=bool)
    over = np.abs(dev) > limit  # (n - k,): d_t spans increments t .. t+k-1
    if not over.any():
        return out
    idx = np.flatnonzero(over)
    sgn = np.sign(dev[idx])
    new = np.ones(idx.size, dtype=bool)
    new[1:] = (np.diff(idx) > 1) | (sgn[1:] != sgn[:-1])
    first = idx[new]
    last = idx[np.append(np.flatnonzero(new)[1:], idx.size) - 1]
    for t0, t1 in zip(first, last, strict=True):
        lo, hi = (t1, t0 + k) if t1 < t0 + k else (t0, t1 + k)  # shared increments, else union
        out[lo:hi] = True
    return out


def local_slope(dx: np.ndarray, trend_window: int) -> np.ndarray:
    """Running median of the increments ``dx`` over ``2 trend_window + 1``: the trend's slope."""
    return median_filter(dx, size=_odd(min(2 * trend_window + 1, dx.size)), mode="nearest")


def event_component(x: np.ndarray, known: np.ndarray, trend_window: int) -> np.ndarray:
    """The part of ``x`` (n,) made by the ``known`` increments ((n - 1,) bool) beyond the local
    slope: a sharp copy of the events, flat elsewhere, shape (n,) (0 before the first)."""
    dx = np.diff(x)
    if not known.any():
        return np.zeros(x.size)
    extra = np.where(known, dx - local_slope(dx, trend_window), 0.0)
    return np.concatenate([[0.0], np.cumsum(extra)])


def excise_events(
    x: np.ndarray,
    *,
    trend_window: int,
    lags: tuple[int, ...] = EXCISE_LAGS,
    threshold: float = EXCISE_THRESHOLD,
    passes: int = 3,
    known: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``x`` with level shifts and fast ramps replaced by the local trend; see the module doc.

    Parameters
    ----------
    x : ndarray, shape (n,)
        Finite series.
    trend_window : int
        Sets the running-median span (``2 trend_window + 1`` increments) of the local slope.
    known : ndarray of bool, shape (n - 1,), optional
        Increments already known to belong to events (significant candidates of an earlier
        pass); excised before the scan.

    Returns
    -------
    clean : ndarray, shape (n,)
        ``x[0] + cumsum`` of the increments, marked ones replaced by the local slope.
    marked : ndarray of bool, shape (n - 1,)
        Which increments were replaced.
    """
    n = x.size
    dx = np.diff(x)  # (n - 1,)
    marked = np.zeros(dx.size, dtype=bool) if known is None else known.copy()
    if n < 16:
        return x.copy(), marked
    span = _odd(min(2 * trend_window + 1, dx.size))
    slope = local_slope(dx, trend_window)  # (n - 1,) local trend increment
    clean = np.concatenate([x[:1], x[0] + np.cumsum(np.where(marked, slope, dx))])
    for k in lags:
        if k > n // 8:
            break
        for _ in range(passes):
            d = clean[k:] - clean[:-k]  # (n - k,)
            base = median_filter(d, size=_odd(min(span, d.size)), mode="nearest")
            dev = d - base
            sd = float(robust_sd(dev))
            if not sd > 0:
                break
            new = _marks(dev, threshold * sd, k, dx.size) & ~marked
            if not new.any():
                break
            marked |= new
            inc = np.where(marked, slope, dx)
            clean = np.concatenate([x[:1], x[0] + np.cumsum(inc)])
    return clean, marked


def _highpass_moments(w: np.ndarray, lags: tuple[int, ...]) -> np.ndarray:
    """Var(r_t - r_{t-k}) for r = (I-W)e, e unit-innovation AR(1); shape (phi grid, lag).

    Uses the frequency response of the middle row of ``w`` (the interior smoother).
    """
    n = w.shape[0]
    row = w[n // 2]
    lag = np.arange(n, dtype=np.float64) - n // 2
    nz = row != 0
    freq = np.linspace(0.0, np.pi, 4097)
    h = (row[nz][None, :] * np.cos(freq[:, None] * lag[nz][None, :])).sum(1)  # (freq,)
    phi = _PHI_GRID[:, None]
    spec = (1.0 - h) ** 2 / (1.0 - 2.0 * phi * np.cos(freq)[None, :] + phi**2)  # (phi, freq)
    k = np.asarray(lags, dtype=np.float64)[:, None]
    gain = 2.0 * (1.0 - np.cos(k * freq[None, :]))  # (lag, freq): the k-difference filter
    # variance = (1/pi) * integral over [0, pi] of the spectrum, unit innovations; one lag at a
    # time: the (phi, lag, freq) product is 63 MB, whose fresh pages cost more than the
    # arithmetic on this kind of machine, and each (phi, freq) row is summed alike either way
    out = [np.trapezoid(spec * g[None, :], freq, axis=1) for g in gain]  # (phi,) per lag
    return np.stack(out, axis=1) / np.pi


_MOMENTS: dict[tuple, np.ndarray] = {}


def fit_ar1(
    residual: np.ndarray,
    trend_window: int,
    degree: int = 1,
    excised: np.ndarray | None = None,
) -> tuple[float, float]:
    """Fit AR(1) ``(phi, sigma)`` to a residual ``(I - W) x`` from robust difference variances.

    The robust (MAD) variances of ``r_t - r_{t-k}`` for six geometric lags ``k`` between 1 and
    ``min(32, trend_window / 2)`` are matched (least squares on the log scale) with their values
    for an AR(1) passed through the smoother's high-pass. Short-lag differences barely see a
    smooth leftover of a transition in the residual, and a step touches only ``k`` of them, so
    the fit describes the noise, not the transitions being tested. ``phi`` is in [-0.6, 0.99].
    Differences spanning an ``excised`` increment ((n - 1,) bool) are left out: excised
    stretches carry the trend's slope, no noise.
    """
    n = residual.size
    # lags up to trend_window / 2 (not / 4): the longer lags pin down a strong persistence
    # (sd of phi-hat 0.025 instead of 0.033 at phi = 0.9, n = 1,600); a phi underestimated by
    # the fit gives surrogates less persistent than the data, i.e. false alarms
    top = max(2, min(32, trend_window // 2, n // 4))
    lags = tuple(int(k) for k in np.unique(np.round(np.geomspace(1, top, 6))))
    if n < 3:
        return 0.0, 0.0
    bad = np.zeros(n, dtype=np.int64)
    if excised is not None and excised.any():
        bad[1:] = np.cumsum(excised)  # bad[t]: excised increments before sample t
    var = []
    for k in lags:
        ok = bad[k:] == bad[:-k]  # (n - k,): no excised increment between t and t + k
        d = residual[k:][ok] - residual[:-k][ok]
        var.append(float(robust_sd(d)) ** 2 if d.size >= 8 else 0.0)
    v = np.array(var)
    if not np.all(v > 0):
        return 0.0, 0.0
    key = (n, int(trend_window), int(degree), lags)
    if key not in _MOMENTS:
        _MOMENTS[key] = _highpass_moments(smoother_matrix(n, trend_window, degree), lags)
    logm = np.log(_MOMENTS[key])  # (phi, lag)
    log_s2 = np.mean(np.log(v)[None, :] - logm, axis=1)  # best innovation variance per phi
    loss = np.sum((np.log(v)[None, :] - log_s2[:, None] - logm) ** 2, axis=1)
    best = int(np.argmin(loss))
    return float(_PHI_GRID[best]), float(np.exp(0.5 * log_s2[best]))


def ar1_noise(
    rng: np.random.Generator, n_surrogates: int, n: int, phi: float, sigma: float
) -> np.ndarray:
    """Stationary Gaussian AR(1) paths, shape (n_surrogates, n)."""
    eps = rng.standard_normal((n_surrogates, n))
    e0 = eps[:, :1] * sigma / np.sqrt(1.0 - phi * phi)  # stationary start
    if n == 1:
        return e0
    rest = lfilter([sigma], [1.0, -phi], eps[:, 1:], axis=-1, zi=phi * e0)[0]
    return np.concatenate([e0, rest], axis=1)


def block_shuffle(
    rng: np.random.Generator, residual: np.ndarray, n_surrogates: int, block: int
) -> np.ndarray:
    """Block-shuffled copies of ``residual`` (random circular offset, shuffled block order)."""
    n = residual.size
    out = np.empty((n_surrogates, n))
    starts = np.arange(0, n, block)
    for b in range(n_surrogates):
        rolled = np.roll(residual, -int(rng.integers(block)))
        pieces = [rolled[s : s + block] for s in starts]
        out[b] = np.concatenate([pieces[i] for i in rng.permutation(len(pieces))])
    return out
