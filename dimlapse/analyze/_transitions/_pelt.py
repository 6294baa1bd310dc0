"""PELT change points grouped into events.

Penalised optimal segmentation of the mean (Killick, Fearnhead and Eckley 2012) with ruptures'
C implementation (Truong, Oudre and Vayatis 2020; ``KernelCPD``, whose linear kernel is exactly
the ``l2`` cost; ``model="rbf"`` uses the Gaussian kernel). Default penalty
``pen_scale * s2 * log(n)`` (BIC-like with ``pen_scale=2``), ``s`` a robust long-run noise sd
of the row (``long_run_sd``: lower-quartile scale of second differences of ``window``-sample
block means, times ``sqrt(window / 6)``; a MAD would be inflated by a dense staircase, whose
steps would then fall under the penalty).

Adjacent change points with jumps of the same sign are one event when the segment between them
is at most ``merge_gap`` samples long *and* looks like part of a ramp rather than a plateau: its
own least-squares slope is more than half the slope implied by the means of its neighbours
(up to ``window`` samples either side). That is the choice between "constant" and "a line with
the neighbours' slope" by the smaller residual sum of squares, so a ramp that ``l2`` cuts into a
staircase is one event, while the steps of a real staircase stay separate however close they
are (only a plateau between them is needed, not a distance). A merged run is split again
between its rises (``_humps``): on noiseless or nearly noiseless data (a full-batch loss
learning mode after mode) the penalty is tiny, PELT cuts the whole curve into ``min_size``
segments of one sign and every segment continues a ramp, so the run is cut at each col of its
jump profile lower than ``VALLEY`` times the rise beyond it (by ``VALLEY_SE`` standard errors,
which a noisy ramp's scattered jumps never reach).

A change point's score is its own jump, between the means of up to ``window`` samples either
side (not crossing the neighbouring change points), in units of its standard error
``s sqrt(1/n_b + 1/n_a)``; an event scores its largest. A sharp step is one big jump, a smooth
rise many small ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import ruptures as rpt

from .._validate import check_positive_int
from ._events import Events, concat_events
from ._noise import Q_LOW, Z_LOW, low_quantile_sd, low_quantile_sds_masked
from ._spec import DIRECTIONS, NO_CONTEXT, Context, check_choice, check_positive


@dataclass(frozen=True)
class PeltOptions:
    """Options of the PELT detector."""

    model: str = "l2"
    penalty: float | None = None
    pen_scale: float = 2.0
    min_size: int = 5
    merge_gap: int = 20
    window: int = 15
    direction: str = "both"

    def __post_init__(self) -> None:
        check_choice(self.model, "model", ("l2", "rbf"))
        if self.penalty is not None:
            check_positive(self.penalty, "penalty")
        check_positive(self.pen_scale, "pen_scale")
        check_positive_int(self.min_size, "min_size")
        check_positive_int(self.merge_gap, "merge_gap", minimum=0)
        check_positive_int(self.window, "window", minimum=2)
        check_choice(self.direction, "direction", DIRECTIONS)


JUMP_SD = 5.0  # a first difference this many robust sd from the median is a jump


def long_run_sd(x: np.ndarray, window: int) -> float:
    """Robust long-run noise sd from second differences of adjacent window means.

    ``low_quantile_sd(m_{t+w} - 2 m_t + m_{t-w}) * sqrt(w / 6)``, ``m_t`` the mean of
    ``x[t:t+w]`` (``w = window``, every offset ``t``): second differences cancel a locally
    linear trend. Those whose span holds a jump (a first difference beyond ``JUMP_SD`` robust
    sd of them) are left out, and the lower-quartile scale holds until three quarters of the
    rest are events: a dense staircase does not inflate it. Short series fall back to the
    differences of single samples.
    """
    return float(long_run_sds(np.atleast_2d(np.asarray(x, dtype=np.float64)), window)[0])


def _low_quantile_sds(d: np.ndarray) -> np.ndarray:
    """``low_quantile_sd(d[r][None, :])[0]`` of every row ``r`` of ``d`` (rows, m), batched.

    The quantile is taken along each row whatever the batch; the rms fallback (rows whose
    lower quartile is 0) is a mean whose rounding depends on the batch's shape, so those rows
    are taken one at a time, as a lone row.
    """
    dev = np.abs(d - np.median(d, axis=1, keepdims=True))
    s = np.quantile(dev, Q_LOW, axis=1) / Z_LOW  # (rows,)
    for r in np.flatnonzero(~(s > 0)):
        s[r] = low_quantile_sd(d[r][None, :])[0]
    return s


def long_run_sds(x: np.ndarray, window: int) -> np.ndarray:
    """:func:`long_run_sd` of every row of ``x`` (rows, n), shape (rows,).

    One numpy call per step for the whole batch (a series and its surrogates share ``n``):
    per row this was the largest Python cost of PELT after ruptures itself. Row by row the
    arithmetic is the same as one row at a time (reductions along the contiguous last axis),
    so the values are identical; rows whose jump mask leaves a ragged subset are read from
    sorted rows (``low_quantile_sds_masked``, the same bits as one row at a time).
    """
    rows, n = x.shape
    w = window
    if n <= 3:
        return np.zeros(rows)
    if n < 5 * w:
        return _low_quantile_sds(np.diff(x, n=2, axis=1)) / np.sqrt(6.0)
    d1 = np.diff(x, axis=1)  # (rows, n - 1)
    dev = np.abs(d1 - np.median(d1, axis=1, keepdims=True))
    s1 = _low_quantile_sds(dev)  # (rows,)
    jumps = np.zeros((rows, n), dtype=np.int64)
    np.cumsum(dev > JUMP_SD * s1[:, None], axis=1, out=jumps[:, 1:])
    jumps[~(s1 > 0)] = 0  # no robust scale: no jumps
    c = np.zeros((rows, n + 1))
    np.cumsum(x - x.mean(axis=1, keepdims=True), axis=1, out=c[:, 1:])
    t = np.arange(w, n - 2 * w + 1)  # second block starts
    d2 = (c[:, t + 2 * w] - c[:, t + w] - 2 * (c[:, t + w] - c[:, t]) + (c[:, t] - c[:, t - w])) / w
    clean = jumps[:, t + 2 * w - 1] - jumps[:, t - w] == 0  # (rows, m): no jump spanned
    ragged = (clean.sum(axis=1) >= 3 * w) & ~clean.all(axis=1)
    out = np.empty(rows)
    whole = ~ragged  # rows that keep every second difference
    if whole.any():
        out[whole] = _low_quantile_sds(d2[whole])
    if ragged.any():  # most rows of a noisy series: a few jumps drop some differences
        out[ragged] = low_quantile_sds_masked(d2[ragged], clean[ragged])
    return out * np.sqrt(w / 6.0)


def _ramp_like(
    x: np.ndarray, c: np.ndarray, cps: np.ndarray, bounds: np.ndarray, window: int, todo: np.ndarray
) -> np.ndarray:
    """Whether each segment between adjacent change points continues a ramp, shape (k - 1,).

    Segment ``i`` spans ``cps[i]:cps[i+1]``; its LS slope ``b`` against the slope ``g`` from the
    means of up to ``window`` samples before ``cps[i]`` and after ``cps[i+1]``: ramp iff
    ``b * g > g * g / 2`` (the line with slope ``g`` fits it better than a constant).
    Only segments where ``todo`` (k - 1,) is True are tested (the rest are False): merge
    candidates.

    The decision is that of the slope from a BLAS dot ``u @ seg`` per segment: on a series
    that is constant up to rounding (a frozen layer's metric) another summation order flips
    merge decisions. The dots of all segments are first summed at once; a decision whose
    margin exceeds that sum's rounding bound is the dot's decision too, and only the rest
    (close calls) take the per-segment dot.
    """
    a, b = cps[:-1], cps[1:]
    lo = np.maximum(a - window, bounds[:-3])
    hi = np.minimum(b + window, bounds[3:])
    m_left = (c[a] - c[lo]) / (a - lo)
    m_right = (c[hi] - c[b]) / (hi - b)
    dist = (b + hi) / 2.0 - (lo + a) / 2.0
    g = (m_right - m_left) / dist  # (k - 1,) slope the neighbours imply
    out = np.zeros(a.size, dtype=bool)
    idx = np.flatnonzero(todo)
    if idx.size == 0:
        return out
    ta, tb = a[idx], b[idx]
    m = (tb - ta).astype(np.float64)  # (t,) segment lengths, >= 1
    # u: each sample's centred position in its segment (the segments one after another)
    size = tb - ta
    starts = np.concatenate([[0], np.cumsum(size)[:-1]])  # (t,) where each begins in `pos`
    within = np.arange(int(size.sum())) - np.repeat(starts, size)  # 0 .. m - 1 per segment
    pos = within + np.repeat(ta, size)
    u = within - np.repeat((m - 1) / 2.0, size)
    prod = u * x[pos]
    dot = np.add.reduceat(prod, starts)  # (t,) u @ seg in another order
    absdot = np.add.reduceat(np.abs(prod), starts)
    uu = m * (m * m - 1) / 12.0  # sum of u^2, exact in float64 for these lengths
    gi = g[idx]
    ok = uu > 0
    slope = np.where(ok, dot / np.where(ok, uu, 1.0), 0.0)
    lhs, rhs = slope * gi, 0.5 * gi * gi
    eps = np.finfo(np.float64).eps
    # |dot - BLAS dot| <= 2 (m + 1) eps sum|u seg| (both orders' error bounds), and the two
    # products' own roundings; a factor 4 on both for safety
    bound = 8 * (m + 1) * eps * absdot / np.where(ok, uu, 1.0) * np.abs(gi)
    bound += 8 * eps * (np.abs(lhs) + np.abs(rhs))
    sure = np.abs(lhs - rhs) > bound
    out[idx[sure]] = lhs[sure] > rhs[sure]
    for i in idx[~sure]:  # close calls: the per-segment dot decides
        seg = x[a[i] : b[i]]
        uv = np.arange(seg.size) - (seg.size - 1) / 2.0
        uuv = float(uv @ uv)
        s = float(uv @ seg) / uuv if uuv > 0 else 0.0
        out[i] = s * g[i] > 0.5 * g[i] * g[i]
    return out


VALLEY = 0.25  # a rise is its own event when the col before a taller one is this low
VALLEY_SE = 3.0  # ... by this many standard errors of the jumps


def _humps(jumps: np.ndarray, se: np.ndarray) -> np.ndarray:
    """Where a run of same-sign change points holds several rises, shape (k,) bool.

    ``jumps`` (k,): each change point's jump along the run's direction (a smooth rise cut
    into a staircase gives one hump of jumps); ``se`` (k,): their standard errors. A hump is
    its own rise when the lowest jump between it and every taller hump (its col) is below
    ``VALLEY`` times its height, by ``VALLEY_SE`` standard errors: peaks by descending
    height, each kept peak splitting the run at its col. Returns True where a new event
    starts (the change point after the col), False for the first.
    """
    k = jumps.size
    out = np.zeros(k, dtype=bool)
    if k < 3:
        return out
    order = np.argsort(-jumps, kind="stable")
    kept = [int(order[0])]  # the tallest rise
    for m in order[1:]:
        if not 0 < m < k - 1 or jumps[m] <= max(jumps[m - 1], jumps[m + 1]):
            continue  # not a local peak
        for q in kept:  # the col towards every taller kept peak must be deep
            lo, hi = (m, q) if m < q else (q, m)
            c = lo + int(np.argmin(jumps[lo : hi + 1]))
            if not (VALLEY * jumps[m] - jumps[c] > VALLEY_SE * se[c]):
                break
        else:
            kept.append(int(m))
    kept.sort()
    for a, b in pairwise(kept):
        c = a + int(np.argmin(jumps[a : b + 1]))
        out[c + 1 if c < b else b] = True  # the col's change point stays with the left rise
    return out


def _split_runs(
    means: np.ndarray, bounds: np.ndarray, jump: np.ndarray, new: np.ndarray, s: float
) -> np.ndarray:
    """``new`` with every merged run split between its rises (``_humps``), shape (k,)."""
    out = new.copy()
    step = np.diff(means)  # (k,) each change point's jump
    size = np.diff(bounds).astype(np.float64)  # (k + 1,) segment lengths
    se = s * np.sqrt(1.0 / size[:-1] + 1.0 / size[1:])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], new.size)
    for a, e in zip(starts, ends, strict=True):
        if e - a >= 3:  # runs of < 3: nothing to split (most runs; a call each was the cost)
            out[a:e] |= _humps(step[a:e] * jump[a], se[a:e])
    return out


def _pelt_row(
    x: np.ndarray, resid: np.ndarray, opts: PeltOptions, s: float
) -> tuple[np.ndarray, ...]:
    n = x.size
    none = tuple(np.zeros(0, dtype=np.int64) for _ in range(5))
    if np.ptp(x) == 0:  # constant series: nothing to segment
        return none
    # a floor relative to the range, the same for a series and its surrogates: noiseless data
    # (a full-batch loss, a synthetic staircase) compare jumps, not rounding errors
    s = max(s, 1e-9 * float(np.ptp(x)))
    if opts.model == "l2":
        signal, pen = x - x.mean(), opts.pen_scale * s * s * np.log(n)
        algo = rpt.KernelCPD(kernel="linear", min_size=opts.min_size)
    else:
        signal, pen = (x - x.mean()) / s, opts.pen_scale * np.log(n)
        algo = rpt.KernelCPD(kernel="rbf", min_size=opts.min_size, params={"gamma": 0.5})
    pen = float(opts.penalty) if opts.penalty is not None else float(pen)
    bkps = np.asarray(algo.fit(signal.reshape(-1, 1)).predict(pen=pen), dtype=np.int64)
    cps = bkps[:-1]  # index where each new segment starts
    if cps.size == 0:
        return none
    bounds = np.concatenate([[0], cps, [n]])
    c = np.concatenate([[0.0], np.cumsum(x)])
    means = (c[bounds[1:]] - c[bounds[:-1]]) / np.diff(bounds)
    jump = np.sign(np.diff(means)).astype(np.int64)  # (n_cps,)
    # each change point's own jump: means of up to `window` samples on either side, not
    # crossing the neighbouring change points, so a staircase (a smooth ramp) scores low;
    # measured on the trend residual when calibrated (how much sharper than the trend)
    w = opts.window
    lo = np.maximum(cps - w, bounds[:-2])
    hi = np.minimum(cps + w, bounds[2:])
    cr = c if resid is x else np.concatenate([[0.0], np.cumsum(resid)])
    mb = (cr[cps] - cr[lo]) / (cps - lo)
    ma = (cr[hi] - cr[cps]) / (hi - cps)
    cp_score = np.abs(ma - mb) / (s * np.sqrt(1.0 / (cps - lo) + 1.0 / (hi - cps)))
    new = np.ones(cps.size, dtype=bool)
    if cps.size > 1:
        close = np.diff(cps) <= opts.merge_gap
        same = jump[1:] == jump[:-1]
        cand = close & same
        ramp = _ramp_like(x, c, cps, bounds, w, cand)
        new[1:] = ~(cand & ramp)
        new = _split_runs(means, bounds, jump, new, s)
    first = np.flatnonzero(new)
    last = np.append(first[1:], cps.size) - 1
    best = _first_argmax(cp_score, first)
    return cps[first], cps[last], cps[best], cp_score[best], jump[first]


def _first_argmax(v: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Index of the first largest value of each group of ``v`` (k,); groups start at ``first``
    (ascending, ``first[0] == 0``). The same as ``np.argmax`` per group, without the loop."""
    top = np.repeat(np.maximum.reduceat(v, first), np.diff(np.append(first, v.size)))
    at = np.flatnonzero(v == top)  # (>= groups,) ascending
    group = np.searchsorted(first, at, side="right") - 1
    return at[np.unique(group, return_index=True)[1]]


def pelt(x: np.ndarray, opts: PeltOptions, ctx: Context = NO_CONTEXT) -> Events:
    """PELT change points (ruptures) grouped into events; see the module docstring."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    resid = ctx.residual(x)  # (rows, n); x itself without a smoother
    sds = long_run_sds(x, opts.window)  # (rows,)
    parts = []
    for r, row in enumerate(x):
        s = float(sds[r])
        a, stop, peak, score, sign = _pelt_row(row, row if resid is x else resid[r], opts, s)
        keep = {"both": sign != 0, "up": sign > 0, "down": sign < 0}[opts.direction]
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
    return concat_events(parts, margin=opts.min_size)
