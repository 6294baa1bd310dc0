"""Raw transition-event detectors, vectorised over many series at once.

Every detector takes ``x`` of shape (n,) or (rows, n) (finite values, samples evenly spaced)
and returns :class:`Events`: one entry per contiguous excursion (an *event*), never one per
exceeding sample, so a step, a ramp or a sigmoid rise is one candidate. The same function runs
on the observed series and on its null surrogates (``_surrogates``), which is what calibrates
it (``_transitions``). Scores are "larger is more abrupt"; events carry a ``sign`` (+1 up).

- ``zscore``: the motivating study's rule (as in ndtracker's ``JumpDetector``): for each sample
  ``t >= min_periods``, ``z_t = (x_t - mean(x[t-w:t])) / std(x[t-w:t])`` (trailing window of
  ``w = window`` samples, shorter near the start, population std), an exceedance where
  ``|z_t| > threshold``. It runs on the metric values themselves, not on first differences:
  that is what the study did, so its raw counts (about 88 on 1,600 samples of white noise at
  threshold 2) are reproduced, and a level shift shows as a run of large z while first
  differences would turn it into a single spike indistinguishable from one outlier. Runs of
  consecutive same-sign exceedances are one event; its score is the peak ``|z|``.
- ``meanshift``: ``d_t = mean(x[t:t+w]) - mean(x[t-w:t])``, the difference of the means of
  adjacent windows, divided by a robust scale of ``d`` itself (1.4826 * median |d_t|), so it is
  a z-like number whatever the noise's autocorrelation; a step of height h in white noise of sd
  sigma scores about h / sigma * sqrt(w / 2). Runs of ``|d| > threshold`` are events.
- ``pelt``: penalised optimal segmentation of the mean (Killick, Fearnhead and Eckley 2012)
  with ruptures' C implementation (``KernelCPD``, whose linear kernel is exactly the ``l2``
  cost; ``model="rbf"`` uses the Gaussian kernel). Default penalty ``pen_scale * s2 * log(n)``
  (BIC-like with ``pen_scale=2``), ``s2`` a robust long-run noise variance (MAD of second
  differences of ``window``-sample block means, times ``window / 6``; default window 15, short
  enough that a step smeared over ``trend_window`` = 50 samples scores low), so autocorrelated
  noise does not shatter into segments. Change points closer than ``merge_gap`` samples with
  jumps of the same sign are one event (a ramp becomes a staircase under ``l2``). A change
  point's score is its own jump, between the means of up to ``window`` samples either side
  (not crossing the neighbouring change points), in units of its standard error
  ``s sqrt(1/n_b + 1/n_a)``; an event scores its largest. A sharp step is one big jump, a
  smooth rise many small ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import ruptures as rpt

from ._surrogates import MAD_TO_SD, robust_sd

DIRECTIONS = ("both", "up", "down")


@dataclass(frozen=True)
class Events:
    """Events found in a (rows, n) batch; every field is a (k,) array (``margin`` an int).

    ``start``/``stop`` bound the samples where the detector fired (inclusive), ``peak`` is the
    sample of the largest score, ``margin`` how far before ``start`` the change itself may lie.
    """

    row: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    peak: np.ndarray
    score: np.ndarray
    sign: np.ndarray
    margin: int = 0

    def __len__(self) -> int:
        return int(self.row.size)

    def max_per_row(self, rows: int) -> np.ndarray:
        """Largest event score of each row, -inf where a row has no event. Shape (rows,)."""
        out = np.full(rows, -np.inf)
        np.maximum.at(out, self.row, self.score)
        return out

    def count_per_row(self, rows: int) -> np.ndarray:
        """Number of events in each row. Shape (rows,)."""
        return np.bincount(self.row, minlength=rows)


def _empty(margin: int) -> Events:
    z = np.zeros(0, dtype=np.int64)
    return Events(z, z, z, z, np.zeros(0), z, margin)


def _concat(parts: list[Events], margin: int) -> Events:
    if not parts:
        return _empty(margin)
    fields = {
        f: np.concatenate([getattr(p, f) for p in parts])
        for f in ("row", "start", "stop", "peak", "score", "sign")
    }
    order = np.lexsort((fields["start"], fields["row"]))
    return Events(**{f: v[order] for f, v in fields.items()}, margin=margin)


def runs(
    stat: np.ndarray, threshold: float, direction: str, margin: int = 0, merge_gap: int = 0
) -> Events:
    """Events = maximal runs of same-sign samples with ``|stat| > threshold``.

    ``stat`` is (rows, n); NaN never exceeds. Exceedances at most ``merge_gap`` non-exceeding
    samples apart belong to one run (0: strictly consecutive). Score = peak ``|stat|`` in the run.
    """
    n = stat.shape[1]
    parts = []
    signs = {"both": (1, -1), "up": (1,), "down": (-1,)}[direction]
    with np.errstate(invalid="ignore"):
        for sign in signs:
            val = (sign * stat).ravel()
            pos = np.flatnonzero(val > threshold)  # sorted flat indices
            if pos.size == 0:
                continue
            new = np.ones(pos.size, dtype=bool)
            new[1:] = (np.diff(pos) > merge_gap + 1) | (pos[1:] // n != pos[:-1] // n)
            first = np.flatnonzero(new)
            last = np.append(first[1:], pos.size) - 1
            run_id = np.cumsum(new) - 1
            v = val[pos]
            order = np.lexsort((-v, run_id))  # groups keep their order; max first in each
            peak = pos[order[first]]
            parts.append(
                Events(
                    row=pos[first] // n,
                    start=pos[first] % n,
                    stop=pos[last] % n,
                    peak=peak % n,
                    score=v[order[first]],
                    sign=np.full(first.size, sign, dtype=np.int64),
                )
            )
    return _concat(parts, margin)


def zscore_statistic(x: np.ndarray, *, window: int = 50, min_periods: int = 20) -> np.ndarray:
    """Trailing-window z-score ``(x_t - mean(x[t-w:t])) / std(x[t-w:t])``, shape as ``x``.

    NaN for ``t < min_periods`` and where the window is constant.
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    rows, n = x.shape
    xc = x - x.mean(axis=1, keepdims=True)  # centre: fewer cancellation errors in the sums
    c1 = np.concatenate([np.zeros((rows, 1)), np.cumsum(xc, axis=1)], axis=1)  # (rows, n+1)
    c2 = np.concatenate([np.zeros((rows, 1)), np.cumsum(xc * xc, axis=1)], axis=1)
    t = np.arange(n)
    lo = np.maximum(t - window, 0)
    cnt = np.maximum(t - lo, 1)
    mean = (c1[:, t] - c1[:, lo]) / cnt
    var = np.maximum((c2[:, t] - c2[:, lo]) / cnt - mean * mean, 0.0)
    sd = np.sqrt(var)
    # exactly constant windows (no change between neighbours inside) have no z; the cumulative
    # sums would leave a rounding residue there instead of 0
    moves = np.concatenate([np.zeros((rows, 1)), np.cumsum(np.diff(x, axis=1) != 0, axis=1)], 1)
    varied = moves[:, np.maximum(t - 1, 0)] - moves[:, lo] > 0  # (rows, n)
    scale = np.abs(xc).max(axis=1, keepdims=True)
    ok = varied & (sd > 1e-12 * scale) & (t >= min_periods)[None, :]
    z = np.full((rows, n), np.nan)
    np.divide(xc - mean, sd, out=z, where=ok)
    return z


def zscore(
    x: np.ndarray,
    *,
    window: int = 50,
    threshold: float = 2.0,
    direction: str = "both",
    min_periods: int = 20,
    merge_gap: int = 3,
) -> Events:
    """The study's rolling z-score detector; see the module docstring."""
    z = zscore_statistic(x, window=window, min_periods=min_periods)
    return runs(z, threshold, direction, margin=window, merge_gap=merge_gap)


def meanshift_statistic(x: np.ndarray, *, window: int = 25) -> np.ndarray:
    """Standardised difference of adjacent ``window``-sample means at each split ``t``.

    ``d_t = mean(x[t:t+w]) - mean(x[t-w:t])`` for ``w <= t <= n - w`` (NaN elsewhere), divided
    by 1.4826 * median |d| of the row.
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    rows, n = x.shape
    out = np.full((rows, n), np.nan)
    if n < 2 * window:
        return out
    xc = x - x.mean(axis=1, keepdims=True)
    c = np.concatenate([np.zeros((rows, 1)), np.cumsum(xc, axis=1)], axis=1)
    t = np.arange(window, n - window + 1)
    d = (c[:, t + window] - 2 * c[:, t] + c[:, t - window]) / window  # (rows, n - 2w + 1)
    scale = MAD_TO_SD * np.median(np.abs(d), axis=1)
    scale = np.where(scale > 0, scale, np.sqrt(np.mean(d * d, axis=1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:, t] = np.where(scale[:, None] > 0, d / scale[:, None], np.nan)
    return out


def meanshift(
    x: np.ndarray, *, window: int = 25, threshold: float = 3.0, direction: str = "both"
) -> Events:
    """Window mean-shift detector; see the module docstring."""
    d = meanshift_statistic(x, window=window)
    return runs(d, threshold, direction, margin=window // 2)


def long_run_sd(x: np.ndarray, window: int) -> float:
    """Robust long-run noise sd from second differences of adjacent block means.

    ``1.4826 MAD(m_{i+1} - 2 m_i + m_{i-1}) * sqrt(window / 6)``, ``m_i`` the means of
    ``window``-sample blocks: second differences cancel a locally linear trend and a step
    touches two of them. Short series fall back to the differences of single samples.
    """
    nb = x.size // window
    if nb >= 5:
        bm = x[: nb * window].reshape(nb, window).mean(axis=1)
        return float(robust_sd(np.diff(bm, n=2)) * np.sqrt(window / 6.0))
    return float(robust_sd(np.diff(x, n=2)) / np.sqrt(6.0)) if x.size > 3 else 0.0


def _pelt_row(
    x: np.ndarray,
    *,
    model: str,
    penalty: float | None,
    pen_scale: float,
    min_size: int,
    merge_gap: int,
    window: int,
) -> tuple[np.ndarray, ...]:
    n = x.size
    s = long_run_sd(x, window)
    if s <= 0:
        s = float(np.std(x))
    if s <= 0:  # constant series: nothing to segment
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(5))
    if model == "l2":
        signal, pen = x - x.mean(), pen_scale * s * s * np.log(n)
        algo = rpt.KernelCPD(kernel="linear", min_size=min_size)
    else:
        signal, pen = (x - x.mean()) / s, pen_scale * np.log(n)
        algo = rpt.KernelCPD(kernel="rbf", min_size=min_size, params={"gamma": 0.5})
    pen = float(penalty) if penalty is not None else float(pen)
    bkps = np.asarray(algo.fit(signal.reshape(-1, 1)).predict(pen=pen), dtype=np.int64)
    cps = bkps[:-1]  # index where each new segment starts
    if cps.size == 0:
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(5))
    bounds = np.concatenate([[0], cps, [n]])
    c = np.concatenate([[0.0], np.cumsum(x)])
    means = (c[bounds[1:]] - c[bounds[:-1]]) / np.diff(bounds)
    jump = np.sign(np.diff(means)).astype(np.int64)  # (n_cps,)
    # each change point's own jump: means of up to `window` samples on either side, not
    # crossing the neighbouring change points, so a staircase (a smooth ramp) scores low
    lo = np.maximum(cps - window, bounds[:-2])
    hi = np.minimum(cps + window, bounds[2:])
    mb = (c[cps] - c[lo]) / (cps - lo)
    ma = (c[hi] - c[cps]) / (hi - cps)
    cp_score = np.abs(ma - mb) / (s * np.sqrt(1.0 / (cps - lo) + 1.0 / (hi - cps)))
    new = np.ones(cps.size, dtype=bool)
    new[1:] = (np.diff(cps) > merge_gap) | (jump[1:] != jump[:-1])
    first = np.flatnonzero(new)
    last = np.append(first[1:], cps.size) - 1
    best = np.array([f + np.argmax(cp_score[f : e + 1]) for f, e in zip(first, last, strict=True)])
    return cps[first], cps[last], cps[best], cp_score[best], jump[first]


def pelt(
    x: np.ndarray,
    *,
    model: str = "l2",
    penalty: float | None = None,
    pen_scale: float = 2.0,
    min_size: int = 5,
    merge_gap: int = 20,
    window: int = 15,
    direction: str = "both",
) -> Events:
    """PELT change points (ruptures) grouped into events; see the module docstring."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    parts = []
    for r, row in enumerate(x):
        a, stop, peak, score, sign = _pelt_row(
            row,
            model=model,
            penalty=penalty,
            pen_scale=pen_scale,
            min_size=min_size,
            merge_gap=merge_gap,
            window=window,
        )
        keep = {"both": sign != 0, "up": sign > 0, "down": sign < 0}[direction]
        k = int(keep.sum())
        if k:
            parts.append(
                Events(
                    row=np.full(k, r, dtype=np.int64),
                    start=a[keep],
                    stop=stop[keep],
                    peak=peak[keep],
                    score=score[keep].astype(np.float64),
                    sign=sign[keep],
                )
            )
    return _concat(parts, margin=min_size)


DETECTORS: dict[str, Callable[..., Events]] = {
    "zscore": zscore,
    "meanshift": meanshift,
    "pelt": pelt,
}
