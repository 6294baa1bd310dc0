"""One series against its surrogates: candidates, max-statistic p-values, the scale ladder.

p = (1 + #{surrogates whose largest event score >= the candidate's}) / (1 + n_surrogates), or,
where fewer than 10 surrogate maxima reach the candidate, the generalized Pareto tail of the
surrogate maxima (``_tail``). The candidates come from the detector on the observed series; the
null (surrogates at ``trend_window``) decides their p-values. The same candidates are tested
again against surrogates at every trend window of ``Calibration.ladder``: detectors place
candidates on the values (the same at every window) and score them on the residual from the
trend at that window, which gives each candidate its time scale: the narrowest trend window at
which it is significant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._noise import event_component
from ._ramp import locate
from ._registry import DETECTORS
from ._resolution import effects, is_constant, series_level, series_resolution
from ._sequential import reuse_observed, rung_pvalues
from ._smoother import smoother_sparse
from ._spec import NO_CONTEXT, Calibration, Context
from ._surrogates import surrogates
from ._tail import NO_TAIL, Tail, critical_score, fit_tail, tail_pvalues


@dataclass
class SeriesResult:
    """Calibrated events of one series for one detector (indices into the finite samples)."""

    onset: np.ndarray
    end: np.ndarray
    score: np.ndarray
    sign: np.ndarray
    p_value: np.ndarray
    n_null: float
    critical: float  # a candidate needs a score above this for p <= alpha
    tested: bool
    note: str = ""
    tail: Tail = NO_TAIL  # the fitted tail of the surrogate event scores
    from_tail: np.ndarray | None = None  # (k,) bool: p-value from the tail, not the count
    ladder: tuple[int, ...] = ()  # trend windows (samples) of p_ladder's columns
    p_ladder: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (k, len(ladder))
    info: dict[str, float] = field(default_factory=dict)  # fitted noise model
    known: np.ndarray | None = None  # (n - 1,) increments excised as significant events
    effect: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (k,) signed level change
    level: float = np.nan  # ``_resolution.series_level``
    resolution: float = np.nan  # ``_resolution.series_resolution``
    constant: bool = False  # range below the resolution: not tested

    @property
    def resolved(self) -> np.ndarray:
        """(k,) bool: candidates whose |effect| reaches the series' resolution."""
        return np.abs(self.effect) >= self.resolution


def empty_result(tested: bool, note: str) -> SeriesResult:
    z = np.zeros(0, dtype=np.int64)
    return SeriesResult(z, z, np.zeros(0), z, np.zeros(0), np.nan, np.nan, tested, note)


def n_surrogates(name: str, cal: Calibration) -> int:
    """Surrogates for detector ``name`` under ``cal``."""
    return DETECTORS[name].n_surrogates if cal.n_surrogates is None else cal.n_surrogates


MAX_PASSES = 12  # step-down: at most this many events accepted one by one
LADDER_SURROGATES = 50  # per rung of the scale ladder: the tail fit carries small p-values
MAX_EXCISED = 0.5  # beyond this share of excised increments the noise fit has too few left


def _event_increments(n: int, onset: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Increments ``x[t+1] - x[t]`` spanned by events (one sample either side), (n - 1,) bool."""
    out = np.zeros(max(n - 1, 0), dtype=bool)
    for a, b in zip(onset, end, strict=True):
        out[max(int(a) - 2, 0) : min(int(b) + 1, n - 1)] = True
    return out


def _test(x, name, opts, b, y, ctx, alpha, level, resolution) -> SeriesResult:
    """Detector ``name`` on ``x`` and its surrogates ``y[:b]``: candidates and p-values."""
    detect = DETECTORS[name].detect
    obs = detect(np.atleast_2d(x), opts, ctx)
    null = detect(y[:b], opts, ctx)
    null_max = null.max_per_row(b)  # (b,)
    tail = fit_tail(null_max)
    p_value, from_tail = tail_pvalues(obs.score, null_max, tail)
    onset, end = locate(x, obs.start, obs.stop, obs.peak, obs.margin)
    return SeriesResult(
        onset=onset,
        end=end,
        score=obs.score,
        sign=obs.sign,
        p_value=p_value,
        n_null=float(null.count_per_row(b).mean()),
        critical=critical_score(null_max, tail, alpha),
        tested=True,
        tail=tail,
        from_tail=from_tail,
        effect=effects(x, onset, end),
        level=level,
        resolution=resolution,
    )


def _null_max(ev, rows: int, spans: list[tuple[int, int]], pad: int = 2) -> np.ndarray:
    """Largest event score per surrogate row, shape (rows,), ignoring events that overlap a
    known event's ``(onset, end)`` span (widened by ``pad``): those are the known events."""
    keep = np.ones(len(ev), dtype=bool)
    for a, b in spans:
        keep &= ~((ev.start <= b + pad) & (ev.stop >= a - pad))
    out = np.full(rows, -np.inf)
    np.maximum.at(out, ev.row[keep], ev.score[keep])
    return out


def calibrate_series(
    x: np.ndarray,
    options: dict[str, Any],
    cal: Calibration,
    key: tuple[int, ...],
    alpha: float,
    noise_floor: float = 0.0,
) -> dict[str, SeriesResult]:
    """Run each detector (name -> options) on ``x`` (finite, (n,)) against its surrogates.

    The first pass shares one set of surrogates (``default_rng(key)``) among the detectors:
    every candidate against the smooth-trend null. With ``cal.mask_events`` a step-down
    follows (``_step_down``), so several events in one series are each tested against the
    right null. A series whose range is below its resolution (``_resolution``) is constant
    and not tested; candidates whose |effect| is below it are never accepted.
    """
    level, resolution = series_level(x), series_resolution(x, noise_floor)
    if is_constant(x, resolution):
        out = {}
        for d in options:
            out[d] = empty_result(False, "constant: range below the resolution")
            out[d].constant, out[d].level, out[d].resolution = True, level, resolution
        return out
    need = {d: max(DETECTORS[d].min_length(o), 3) for d, o in options.items()}
    out = {
        d: empty_result(False, f"{x.size} finite samples; {d} needs {need[d]}")
        for d in options
        if x.size < need[d]
    }
    for r in out.values():
        r.level, r.resolution = level, resolution
    todo = [d for d in options if x.size >= need[d]]
    if not todo:
        return out
    nsur = {d: n_surrogates(d, cal) for d in todo}
    kw: dict[str, Any] = dict(
        trend_window=cal.trend_window, noise=cal.noise, block=cal.block,
        degree=cal.trend_degree, mask_events=cal.mask_events,
    )  # fmt: skip
    w = smoother_sparse(x.size, cal.trend_window, cal.trend_degree)
    rng = np.random.default_rng(list(key))
    _, y, info = surrogates(x, n_surrogates=max(nsur.values()), rng=rng, **kw)
    order = list(DETECTORS)
    for d in todo:
        ctx = Context(w)
        res = _test(x, d, options[d], nsur[d], y, ctx, alpha, level, resolution)
        res.info = info
        res.known = np.zeros(max(x.size - 1, 0), dtype=bool)
        if cal.mask_events:
            _step_down(x, d, options[d], nsur[d], ctx, cal, (*key, order.index(d)), alpha, res, kw)
        out[d] = res
    _ladder(x, todo, options, nsur, cal, key, out, alpha)
    return out


def _step_down(x, d, opts, b, ctx, cal, key, alpha, res, kw) -> None:
    """Accept significant candidates one at a time, strongest first, re-testing the rest.

    After each acceptance the remaining candidates are tested against surrogates that contain
    the accepted events as they are (sharp, ``plant=True``) over the smooth trend of the rest,
    with the noise refitted with them excised; surrogate events on an accepted event are
    ignored. A step's smooth leftover in the residual (which a smooth-trend null lacks) then
    no longer makes its neighbours significant, and the steps of a staircase are each tested
    against noise fitted without the others. The accepted event keeps the p-value of the test
    that accepted it; the rest get their last (``score`` likewise: the score that p is for).
    Candidates are placed on the values,
    so the candidate set does not change. Fills ``res.p_value`` and
    ``res.known`` in place.
    """
    p, score = res.p_value.copy(), res.score.copy()
    open_ = np.ones(p.size, dtype=bool)
    spans: list[tuple[int, int]] = []
    known = res.known
    for k in range(MAX_PASSES):
        cand = np.flatnonzero(open_ & (p <= alpha) & res.resolved)
        if cand.size == 0:
            break
        top = int(cand[np.argmax(score[cand])])  # strongest given the events accepted so far
        open_[top] = False
        spans.append((int(res.onset[top]), int(res.end[top])))
        more = _event_increments(x.size, res.onset[[top]], res.end[[top]])
        stop = (known | more).mean() > MAX_EXCISED or not open_.any()
        known |= more
        if stop:
            break
        g = np.random.default_rng([*key, k + 1])
        _, y, info = surrogates(x, n_surrogates=b, rng=g, known=known, plant=True, **kw)
        ctx_k = Context(ctx.smoother, event_component(x, known, cal.trend_window))
        null_max = _null_max(DETECTORS[d].detect(y, opts, ctx_k), b, spans)
        rest = np.flatnonzero(open_)
        now = DETECTORS[d].detect(np.atleast_2d(x), opts, ctx_k).score  # same candidates
        score[rest] = now[rest]
        p[rest] = tail_pvalues(now[rest], null_max, fit_tail(null_max))[0]
        res.info = {**info, "n_accepted": float(len(spans))}
    res.p_value, res.score = p, score
    res.known = known


def level_change(resid: np.ndarray, ev, window: int, edge: int) -> np.ndarray:
    """|mean after - mean before| of ``resid`` (rows, n) around each event, shape (k,).

    Before: up to ``window`` samples ending at the event's ``start``; after: up to ``window``
    samples from ``stop + 1``; neither reads the outer ``edge - window`` samples of the series,
    where the trend is extrapolated (a loss-like decay from the first sample is no transition).
    An event scores -inf (no event) when its ``peak`` (where the detector fired hardest) lies
    within ``edge`` samples of either end, or when either level has fewer than half a window of
    samples: a level change at this scale needs the level before and after it. The peak, not the
    footprint, is held to the edge: a detector's footprint of a slow change reaches into its
    flat tails (PELT's outer change points), which would otherwise put a grokking-like rise
    filling a quarter of the series out of reach of every wide rung.
    """
    rows, n = resid.shape
    c = np.concatenate([np.zeros((rows, 1)), np.cumsum(resid, axis=1)], axis=1)  # (rows, n+1)
    margin = max(edge - window, 0)
    a = np.clip(ev.start.astype(np.int64), 0, n)
    b = np.clip(ev.stop.astype(np.int64) + 1, 0, n)
    lo = np.minimum(np.maximum(a - window, margin), a)
    hi = np.maximum(np.minimum(b + window, n - margin), b)
    nb, na = a - lo, hi - b
    peak = ev.peak.astype(np.int64)
    need = max(window / 2, 1)
    ok = (peak >= edge) & (peak < n - edge) & (nb >= need) & (na >= need)
    before = (c[ev.row, a] - c[ev.row, lo]) / np.maximum(nb, 1)
    after = (c[ev.row, hi] - c[ev.row, b]) / np.maximum(na, 1)
    return np.where(ok, np.abs(after - before), -np.inf)


# An event accepted at the base window is sharp at a rung when its duration is below
# max(rung, base window) / SHARP samples; candidates within REACH * rung samples of it are
# not tested at that rung (the trend smears the step over about half its window either side,
# and wide rungs average levels over a quarter of it beyond that).
SHARP = 8
REACH = 0.75


def _near_sharp(ev, onset, end, accepted, tw: int, base_tw: int) -> np.ndarray:
    """(k,) bool: candidates near another candidate accepted and sharp, at rung ``tw``.

    ``ev`` holds the observed series' k candidates; ``onset``, ``end`` (their located spans)
    and ``accepted`` (significant at the base window ``base_tw``), (k,) each, are in the same
    order. A candidate is blocked when a sharp accepted one (duration below
    ``max(tw, base_tw) / SHARP``) lies within ``REACH * tw`` samples of its footprint. A slow
    rise accepted in part at the base window is no sharp event at a wide rung (its duration is
    not well below the window), and an accepted event never blocks itself, so slow changes stay
    testable at wide rungs.
    """
    a = ev.start.astype(np.int64)[:, None]
    b = ev.stop.astype(np.int64)[:, None]
    block = accepted & ((end - onset) < max(tw, base_tw) / SHARP)  # (k,)
    r = int(REACH * tw)
    reach = (onset[None, :] <= b + r) & (end[None, :] >= a - r)  # (k, k)
    np.fill_diagonal(reach, False)
    return np.any(reach & block[None, :], axis=1)


def _rung_scores(x, y, detect, opts, ctx, tw, base_tw, sharp=None):
    """Observed candidate scores (k,) and surrogate maxima (b,) at one rung of the ladder.

    At rungs up to ``base_tw`` the detector's own score on the residual (how sharp). At wider
    rungs a slow change leaves a wide, low leftover in the residual that a detector's short
    windows miss: the score is the residual's level change across the event, levels averaged
    over ``tw // 4`` samples either side (``level_change``: no event peaking within ``tw // 2``
    samples of an edge), the same for the surrogates.

    ``sharp`` (``(onset, end, accepted)`` of the observed candidates, (k,) each; accepted:
    significant at the base window) blocks, at every rung but the base, observed candidates
    near a sharp accepted one (``_near_sharp``; score -inf): a trend fitted at another window
    leaves a real step's smeared leftover in the residual beside it (at wide rungs a level
    change, at narrow ones a sawtooth), which is no event of its neighbours. The surrogates
    hold no such step, so their maxima need no such rule; blocking only lowers observed scores.
    """
    b = y.shape[0]
    if tw <= base_tw:
        obs = detect(np.atleast_2d(x), opts, ctx)  # same candidates, rescored
        score = obs.score.copy()
        if sharp is not None and tw < base_tw:
            score[_near_sharp(obs, sharp[0], sharp[1], sharp[2], tw, base_tw)] = -np.inf
        return score, detect(y, opts, ctx).max_per_row(b)
    w = max(tw // 4, 2)
    obs = detect(np.atleast_2d(x), opts, NO_CONTEXT)  # candidates are placed on the values
    score = level_change(ctx.residual(np.atleast_2d(x)), obs, w, tw // 2)
    if sharp is not None:
        score[_near_sharp(obs, sharp[0], sharp[1], sharp[2], tw, base_tw)] = -np.inf
    ev = detect(y, opts, NO_CONTEXT)
    null = np.full(b, -np.inf)
    np.maximum.at(null, ev.row, level_change(ctx.residual(y), ev, w, tw // 2))
    return score, null


def _ladder(x, todo, options, nsur, cal, key, out, alpha) -> None:
    """``p_ladder`` of every candidate at each trend window of the ladder (base included).

    A rung stops drawing on its surrogates once no candidate can reach ``p < 1 / rungs`` there
    (``_sequential``: the ladder's p-values and scales are unchanged; such entries are lower
    bounds).

    Rungs other than the base are run only for detectors with a candidate the data can resolve
    (the others can change no answer); elsewhere those columns stay 1.
    """
    ladder = cal.ladder(x.size)
    for d in todo:
        out[d].ladder = ladder
        out[d].p_ladder = np.ones((out[d].score.size, len(ladder)))
        out[d].p_ladder[:, ladder.index(cal.trend_window)] = out[d].p_value
    todo = [d for d in todo if out[d].resolved.any()]
    if not todo:
        return
    accepted = {}  # (onset, end, accepted at the base window) of every candidate
    for d in todo:
        ok = (out[d].p_value <= alpha) & out[d].resolved
        accepted[d] = (out[d].onset.astype(np.int64), out[d].end.astype(np.int64), ok)
    for j, tw in enumerate(ladder):
        if tw == cal.trend_window:
            continue
        rng = np.random.default_rng([*key, 1000 + j])
        for d in todo:
            b = min(nsur[d], LADDER_SURROGATES)
            _, y, _ = surrogates(
                x, n_surrogates=b, rng=rng, trend_window=tw, noise=cal.noise,
                block=cal.block, degree=cal.trend_degree, mask_events=cal.mask_events,
                known=out[d].known,
            )  # fmt: skip
            ctx = Context(smoother_sparse(x.size, tw, cal.trend_degree))

            detect = reuse_observed(DETECTORS[d].detect, x)  # observed: once per rung

            def scores(rows, d=d, ctx=ctx, tw=tw, detect=detect):  # on some surrogate rows
                return _rung_scores(
                    x, rows, detect, options[d], ctx, tw, cal.trend_window, accepted[d]
                )

            out[d].p_ladder[:, j] = rung_pvalues(
                scores, y, rungs=len(ladder), sequential=DETECTORS[d].rowwise
            )
