"""The study's z-score rule and the window mean-shift detector, vectorised over series.

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
  adjacent windows, divided by a robust scale of ``d`` itself, so it is a z-like number
  whatever the noise's autocorrelation. The scale is the row's lower quartile of ``|d|``
  (``low_quantile_sd``), not its MAD: a dense staircase moves ``d`` over most of the row and
  would inflate a MAD until its steps vanish. Self-standardising each row (the series and each
  surrogate by its own scale) keeps the test calibrated where the fitted noise level is off by
  its sampling error. Runs of ``|d| > threshold`` on the values are the candidates; under
  calibration each scores the peak ``|d|`` of the residual from the trend, so a change scores
  by how much sharper than the null's trend it is. A step of height h in white noise of sd
  sigma scores about h / sigma * sqrt(w / 2). ``d`` is centred at its row median first, so a
  linear trend (a constant offset of ``d``) is not one long candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .._validate import check_positive_int
from ._events import Events, runs
from ._noise import low_quantile_sd
from ._spec import DIRECTIONS, NO_CONTEXT, Context, check_choice, check_positive


@dataclass(frozen=True)
class ZScoreOptions:
    """Options of the study's rolling z-score rule (defaults: the study's)."""

    window: int = 50
    threshold: float = 2.0
    direction: str = "both"
    min_periods: int = 20
    merge_gap: int = 3

    def __post_init__(self) -> None:
        check_positive_int(self.window, "window", minimum=2)
        check_positive_int(self.min_periods, "min_periods", minimum=2)
        check_positive_int(self.merge_gap, "merge_gap", minimum=0)
        check_positive(self.threshold, "threshold")
        check_choice(self.direction, "direction", DIRECTIONS)
        if self.min_periods > self.window:
            raise ValueError(
                f"Expected `min_periods` <= `window`, got min_periods={self.min_periods!r} "
                f"and window={self.window!r}"
            )


@dataclass(frozen=True)
class MeanShiftOptions:
    """Options of the window mean-shift detector."""

    window: int = 25
    threshold: float = 3.0
    direction: str = "both"

    def __post_init__(self) -> None:
        check_positive_int(self.window, "window", minimum=2)
        check_positive(self.threshold, "threshold")
        check_choice(self.direction, "direction", DIRECTIONS)


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


def zscore(x: np.ndarray, opts: ZScoreOptions, ctx: Context = NO_CONTEXT) -> Events:
    """The study's rolling z-score rule, on the values as the study ran it (``ctx`` unused)."""
    z = zscore_statistic(x, window=opts.window, min_periods=opts.min_periods)
    return runs(z, opts.threshold, opts.direction, margin=opts.window, merge_gap=opts.merge_gap)


def meanshift_statistic(
    x: np.ndarray, *, window: int = 25, scale: float | None = None
) -> np.ndarray:
    """Standardised difference of adjacent ``window``-sample means at each split ``t``.

    ``d_t = mean(x[t:t+w]) - mean(x[t-w:t])`` for ``w <= t <= n - w`` (NaN elsewhere), divided
    by ``scale`` when given, else by a robust sd of the row's ``d`` (``low_quantile_sd``).
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
    if scale is not None and scale > 0:
        s = np.full(rows, float(scale))
    else:
        s = low_quantile_sd(d)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:, t] = np.where(s[:, None] > 0, d / s[:, None], np.nan)
    return out


def meanshift(x: np.ndarray, opts: MeanShiftOptions, ctx: Context = NO_CONTEXT) -> Events:
    """Window mean-shift detector; see the module docstring.

    Candidates are the runs of ``|d| > threshold`` on the values; with a smoother in ``ctx``
    each scores the peak ``|d|`` of the trend residual within its run instead (the residual's
    ``d`` in the same units as the values').
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    raw = meanshift_statistic(x, window=opts.window, scale=1.0)  # (rows, n) unscaled
    valid = np.isfinite(raw[0])
    if not valid.any():
        return runs(raw, opts.threshold, opts.direction, margin=opts.window // 2)
    scale = low_quantile_sd(raw[:, valid])
    scale = np.where(scale > 0, scale, 1.0)[:, None]  # (rows, 1)
    centre = np.median(raw[:, valid], axis=1, keepdims=True)  # a linear trend's offset
    d = (raw - centre) / scale
    ev = runs(d, opts.threshold, opts.direction, margin=opts.window // 2)
    if ctx.smoother is None or not len(ev):
        return ev
    dr = meanshift_statistic(ctx.residual(x), window=opts.window, scale=1.0) / scale  # centred
    dr = np.nan_to_num(np.abs(dr), nan=0.0).ravel()  # (rows * n,)
    n = x.shape[1]
    lo, hi = ev.row * n + ev.start, ev.row * n + ev.stop + 1
    bounds = np.stack([lo, hi], axis=1).ravel()  # runs never overlap within a row
    score = np.maximum.reduceat(np.append(dr, 0.0), bounds)[::2]
    return replace(ev, score=score)
