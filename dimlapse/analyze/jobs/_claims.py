"""Claims as tests: each study claim, per space, tested on independent episodes with a verdict.

A claim is *reproduced* only when its stated test says so at `alpha`; *not reproduced* when the
data exclude the study's value (the interval lies on the other side of it); else *inconclusive*
(too few episodes, or a run too short for the jobs: fewer than ``MIN_CLAIM_SNAPSHOTS``).

Events are the headline detector's notable events (``notable`` from the transitions job; its
``significant`` events until that variable exists) on the headline metric. Events that coincide
across series form one *episode* (a loss spike that moves every layer is one episode, not one
per layer), and n counts episodes, never raw events (``_episodes.episode_table``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from scipy.stats import binomtest

from .._provenance import params_attrs
from ._episodes import episode_table, fallback_episodes

CLAIMS = ("phases", "counts", "timing", "rho_loss", "rho_grad_norm", "sampling")
SPACES = ("activation", "weight")
VERDICTS = ("reproduced", "not reproduced", "inconclusive")
STUDY = {
    "phases": "collapse 0-300, expansion 300-5000, stabilisation 5000-8000 (of 8000 steps)",
    "counts": "~85 z-score jumps in activation space vs 1 in weight space",
    "timing": "two thirds of jumps in the first 2000 steps (first 25 %)",
    "rho_loss": "Spearman rho with loss -0.951",
    "rho_grad_norm": "Spearman rho with gradient norm -0.701",
    "sampling": "coarse sampling (every 100-1000 steps) misses most transitions",
}
STUDY_EARLY_SHARE = 2 / 3
#: Fewest snapshots for verdicts: the transitions' trend window (50 samples) needs a run of
#: at least one window; shorter runs get "inconclusive" and one warning line in the report.
MIN_CLAIM_SNAPSHOTS = 50
EPISODE_SAMPLES = 10  # fallback episode window, in capture intervals
EDGE_SAMPLES = 10  # sampling claim: events this close to either end are edge effects
COARSE_FROM = 100  # the study's "coarse": every 100 steps or more
EPISODE_FIELDS = ("start", "end", "step", "n_layers", "context")


def _binomial(k: int, n: int, p0: float, alpha: float, study: float) -> dict[str, Any]:
    """One-sided exact binomial test of a share above p0, two-sided Clopper-Pearson interval;
    reproduced when the test rejects at `alpha`, not reproduced when the interval lies below
    the `study` share, inconclusive otherwise."""
    if n == 0:
        return {
            "statistic": np.nan,
            "p_value": np.nan,
            "low": np.nan,
            "high": np.nan,
            "verdict": "inconclusive",
        }
    res = binomtest(k, n, p0, alternative="greater")
    ci = binomtest(k, n, p0).proportion_ci(confidence_level=1 - alpha, method="exact")
    if res.pvalue < alpha:
        verdict = "reproduced"
    elif ci.high < study:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    return {
        "statistic": k / n,
        "p_value": float(res.pvalue),
        "low": float(ci.low),
        "high": float(ci.high),
        "verdict": verdict,
    }


def _row(**kw: Any) -> dict[str, Any]:
    base = {
        "statistic": np.nan,
        "p_value": np.nan,
        "low": np.nan,
        "high": np.nan,
        "n": 0,
        "verdict": "inconclusive",
        "statistic_name": "",
        "test": "",
        "detail": "",
    }
    return base | kw


def _episode_steps(trans: xr.Dataset, space: str, window: float, context: dict) -> np.ndarray:
    if space not in trans["kind"].values:
        return np.zeros(0)
    ep, _, _ = episode_table(trans.sel(kind=[space]), window=window, context=context)
    return np.asarray(ep["step"].values, dtype=np.float64)


def timing_claim(ep_steps: np.ndarray, *, cutoff: float, share: float, alpha: float) -> dict:
    """Share of episodes at steps <= cutoff against a uniform spread (exact binomial test)."""
    k, n = int((ep_steps <= cutoff).sum()), int(ep_steps.size)
    res = _binomial(k, n, share, alpha, STUDY_EARLY_SHARE)
    return _row(
        **res,
        n=n,
        statistic_name=f"share of episodes at steps <= {cutoff:,.0f}",
        test=f"exact binomial test, H1: share > {share:g} (uniform spread), one-sided; "
        f"two-sided Clopper-Pearson {1 - alpha:.0%} interval; not reproduced when it excludes "
        f"{STUDY_EARLY_SHARE:.2f}",
        detail=f"{k} of {n} episodes early",
    )


def counts_claim(n_act: int, n_wt: int, *, alpha: float) -> dict:
    """Activation against weight episodes: conditional binomial test of equal rates."""
    res = _binomial(n_act, n_act + n_wt, 0.5, alpha, 0.75)
    return _row(
        **res,
        n=n_act + n_wt,
        statistic_name="share of all episodes in activation space",
        test="exact binomial test of the activation share of episodes, H1: > 0.5 (equal "
        "rates), one-sided, one test over both spaces; not reproduced when the interval "
        "excludes 0.75 (activation at least 3x weight)",
        detail=f"{n_act} activation vs {n_wt} weight episodes",
    )


def coupling_claim(cp: xr.Dataset, *, study_sign: float, level: float) -> dict:
    """Differenced Spearman rho per layer: reproduced when every interval excludes 0 with the
    study's sign; "shared trend only" when only the raw intervals do."""
    diff, raw = cp.sel(transform="diff"), cp.sel(transform="raw")
    ok = np.isfinite(diff["rho"].values)
    n = int(ok.sum())
    test = (
        f"{level:.0%} moving-block-bootstrap interval of Spearman rho on first differences, "
        "per layer; reproduced when every layer's interval excludes 0 with the study's sign"
    )
    if n == 0:
        return _row(statistic_name="median differenced rho", test=test, detail="no data")
    lo, hi = diff["rho_low"].values[ok], diff["rho_high"].values[ok]
    rlo, rhi = raw["rho_low"].values[ok], raw["rho_high"].values[ok]
    same = (hi < 0) if study_sign < 0 else (lo > 0)
    opposite = (lo > 0) if study_sign < 0 else (hi < 0)
    raw_same = (rhi < 0) if study_sign < 0 else (rlo > 0)
    if same.all():
        verdict, detail = "reproduced", f"differenced interval excludes 0 in all {n} layers"
    else:
        verdict = "not reproduced"
        detail = (
            "shared trend only: the raw intervals exclude 0 with the study's sign, the "
            f"differenced ones do not ({int(same.sum())} of {n} layers)"
            if raw_same.all()
            else f"differenced interval excludes 0 with the study's sign in {int(same.sum())} "
            f"of {n} layers"
        )
        if opposite.any():
            detail += f"; opposite sign in {int(opposite.sum())} layer(s)"
    return _row(
        statistic=float(np.median(diff["rho"].values[ok])),
        low=float(lo.min()),
        high=float(hi.max()),
        n=n,
        verdict=verdict,
        statistic_name="median differenced rho over layers (interval: envelope of layers)",
        test=test,
        detail=detail,
    )


#: A change of at least this share of a series' range within the phases' resolution is faster
#: than the phases resolve: its segment is "unresolved" and the change is stated with its size.
FAST_FRACTION = 0.5
STUDY_ORDER = ["collapse", "expansion", "stabilisation"]


def phase_sequence(p: xr.Dataset) -> list[tuple[float, float, str]]:
    """(start, end, class) of one trajectory's segments, adjacent ones of a class merged; the
    segment holding a change faster than the resolution is ``unresolved``."""
    frac = float(p["fastest_change_fraction"]) if "fastest_change_fraction" in p else np.nan
    at = float(p["fastest_change_step"]) if "fastest_change_step" in p else np.nan
    names = {-1: "collapse", 0: "stabilisation", 1: "expansion"}
    out: list[tuple[float, float, str]] = []
    for k in range(p.sizes["segment"]):
        a, b = float(p["segment_start"][k]), float(p["segment_end"][k])
        if not (np.isfinite(a) and np.isfinite(b)):
            continue
        name = names[int(p["segment_trend"][k])]
        if frac >= FAST_FRACTION and a <= at <= b:
            name = "unresolved"
        if out and out[-1][2] == name:
            out[-1] = (out[-1][0], b, name)
        else:
            out.append((a, b, name))
    return out


def fast_change_text(p: xr.Dataset, resolution: object) -> str:
    """The fastest change within the phases' resolution, with its size, when it is fast."""
    frac = float(p["fastest_change_fraction"]) if "fastest_change_fraction" in p else np.nan
    if not frac >= FAST_FRACTION:
        return ""
    a = float(p["fastest_change_from"]) if "fastest_change_from" in p else np.nan
    b = float(p["fastest_change_to"]) if "fastest_change_to" in p else np.nan
    ratio = f", x{b / a:.2g}" if np.isfinite(a) and np.isfinite(b) and a > 0 and b > 0 else ""
    word = "rise" if b > a else "drop"
    return (
        f"fast {word} {a:.4g} -> {b:.4g} ({frac:.0%} of the range{ratio}) within {resolution} "
        f"samples from step {float(p['fastest_change_step']):,.0f}, faster than the phases resolve"
    )


def phases_claim(ph: xr.Dataset) -> dict:
    """Layers whose phases follow the study's order (a stated rule, no p-value)."""
    res = ph.attrs.get("resolution")
    rows = []
    same = 0
    for layer in ph["layer"].values:
        p = ph.sel(layer=layer)
        seq = phase_sequence(p)
        if not seq:
            continue
        same += [name for *_, name in seq] == STUDY_ORDER
        spans = ", ".join(f"{n} {a:,.0f}-{b:,.0f}" for a, b, n in seq)
        fast = fast_change_text(p, res)
        rows.append(f"{layer}: {spans}" + (f" ({fast})" if fast else ""))
    n = len(rows)
    test = (
        "rule (no p-value): a layer follows the study when its phases are collapse, expansion, "
        f"stabilisation in that order, each labelled phase changing by >= "
        f"{ph.attrs.get('min_change', 'n/a')} of the smoothed range and >= "
        f"{ph.attrs.get('min_relative', 'n/a')} of the level; reproduced when half the layers "
        "or more do"
    )
    verdict = "inconclusive" if n == 0 else "reproduced" if 2 * same >= n else "not reproduced"
    return _row(
        statistic=same / n if n else np.nan,
        n=n,
        verdict=verdict,
        test=test,
        statistic_name="share of layers in the study's order",
        detail="; ".join(rows),
    )


def sampling_claim(
    sm: xr.Dataset, *, every: float, first: float, last: float, window: float, alpha: float
) -> dict:
    """Share of stable finest-interval episodes a coarse interval (>= 100 steps) misses.

    `sm`: the sampling job for one space, metric and detector (dims interval, layer,
    transition). An event is stable when the next-coarser interval finds it again and it lies
    more than ``EDGE_SAMPLES`` capture intervals from either end; stable events closer than
    `window` steps form one episode (the same single-linkage rule as the fallback episodes,
    here over stable events only); the share of those episodes the finest coarse interval
    misses is tested (exact binomial, H1: > 0.5).
    """
    test = (
        f"events of the finest interval found again at the next interval and > {EDGE_SAMPLES} "
        f"samples from either end, grouped into episodes; exact binomial test of the share of "
        f"episodes the first interval >= {COARSE_FROM} steps misses, H1: > 0.5"
    )
    name = "share of stable episodes missed"
    eff = np.asarray(sm["effective_interval"].values, dtype=float)
    coarse = np.flatnonzero(eff >= COARSE_FROM)
    if eff.size < 2 or coarse.size == 0:
        return _row(test=test, statistic_name=name, detail="no next or coarse interval")
    if "base_step" not in sm:
        return _row(test=test, statistic_name=name, detail="no per-event sampling record")
    base = sm["base_step"].isel(interval=0)
    steps = base.values
    margin = EDGE_SAMPLES * every
    interior = np.isfinite(steps) & (steps > first + margin) & (steps < last - margin)
    stable = interior & (sm["base_found"].isel(interval=1).values == 1)
    at_coarse = sm["base_found"].isel(interval=int(coarse[0])).values == 1
    pseudo = xr.Dataset({"step": base.where(stable), "significant": base.copy(data=stable)})
    ids = fallback_episodes(pseudo, window=window, context={})["event_episode"].values
    ep_ids = np.unique(ids[ids >= 0])
    missed = sum(not at_coarse[ids == e].any() for e in ep_ids)
    n_events, n_interior = int(np.isfinite(steps).sum()), int(interior.sum())
    detail = (
        f"{n_events} finest-interval events, {n_events - n_interior} at the edges, "
        f"{int(stable.sum())} stable in {ep_ids.size} episodes; every "
        f"{eff[coarse[0]]:.0f} steps misses {missed} of those episodes"
    )
    if ep_ids.size == 0:
        return _row(
            test=test,
            statistic_name=name,
            detail=detail + ": no stable event, so no sampling claim can be made",
        )
    res = _binomial(int(missed), int(ep_ids.size), 0.5, alpha, 0.5)
    return _row(**res, n=int(ep_ids.size), test=test, statistic_name=name, detail=detail)


_TEXT = ("statistic_name", "test", "verdict", "detail")
_NUM = ("statistic", "p_value", "low", "high", "n")


def claims(
    trans: xr.Dataset,
    *,
    phases: xr.Dataset,
    coupling: xr.Dataset,
    sampling: xr.Dataset,
    metric: str,
    detector: str,
    total_steps: float,
    start_step: float = 0.0,
    n_snapshots: int,
    every: float | None = None,
    context: dict[str, list[tuple[float, float]]] | None = None,
    share: float = 0.25,
    alpha: float = 0.05,
    window: float | None = None,
) -> xr.Dataset:
    """Every study claim, per space, as a test with a verdict; and the episodes it counted.

    Parameters
    ----------
    trans : xr.Dataset
        The transitions job (kind, layer, metric, detector, transition).
    phases, coupling, sampling : xr.Dataset
        The phases, coupling and sampling jobs of the same run.
    metric, detector : str
        Headline metric and detector the claims are judged on.
    total_steps, start_step : float
        Last and first step of the run (the timing claim's span).
    n_snapshots : int
        Snapshots of the run; below ``MIN_CLAIM_SNAPSHOTS`` every verdict is inconclusive.
    every : float, optional
        Capture interval (default: the median spacing of ``phases.step``).
    context : dict, optional
        Training-context windows, label -> [(start, end)] (:func:`context_windows`).
    share, alpha : float
        Early share of training for the timing claim; level of every test.
    window : float, optional
        Episode window in steps; default ``EPISODE_SAMPLES`` capture intervals.

    Returns
    -------
    xr.Dataset
        Dims (claim, space): ``statistic``, ``statistic_name``, ``test``, ``p_value``,
        ``low``/``high`` (interval), ``n`` (episodes, or layers for phases and coupling),
        ``verdict`` (``VERDICTS``), ``detail``, ``study``; dim ``episode``: the episodes of
        each space (``episode_space``, ``episode_start``, ``episode_end``, ``episode_step``,
        ``episode_n_layers``, ``episode_context``). Attrs: every parameter, the episode source.
    """
    if every is None:
        every = float(np.median(np.diff(phases["step"].values)))
    window = EPISODE_SAMPLES * float(every) if window is None else float(window)
    context = context or {}
    cutoff = float(start_step + share * (total_steps - start_step))
    t = trans.sel(detector=detector, metric=metric)
    rows: dict[tuple[str, str], dict] = {}
    episodes, source = [], "none"
    n_ep = {}
    for space in SPACES:
        if space not in t["kind"].values:
            n_ep[space] = 0
            continue
        ep, _, source = episode_table(t.sel(kind=[space]), window=window, context=context)
        fields = {v: ("episode", ep[v].values) for v in EPISODE_FIELDS}
        episodes.append(xr.Dataset(fields | {"space": ("episode", [space] * ep.sizes["episode"])}))
        ep_steps = np.asarray(ep["step"].values, dtype=np.float64)
        n_ep[space] = ep_steps.size
        rows[("timing", space)] = timing_claim(ep_steps, cutoff=cutoff, share=share, alpha=alpha)
    for space in SPACES:
        rows[("counts", space)] = counts_claim(n_ep["activation"], n_ep["weight"], alpha=alpha)
        for target, key, sign in (("loss", "rho_loss", -1), ("grad_norm", "rho_grad_norm", -1)):
            ok = space in coupling["kind"].values and target in coupling["target"].values
            rows[(key, space)] = (
                coupling_claim(
                    coupling.sel(kind=space, metric=metric, target=target),
                    study_sign=sign,
                    level=float(coupling.attrs.get("level", 0.95)),
                )
                if ok
                else _row(detail="not recorded")
            )
        rows[("phases", space)] = (
            phases_claim(phases.sel(kind=space, metric=metric))
            if space in phases["kind"].values
            else _row(detail="no trajectories")
        )
        ok = all(space in sampling[d].values for d in ("kind",)) and (
            metric in sampling["metric"].values and detector in sampling["detector"].values
        )
        steps = phases["step"].values
        rows[("sampling", space)] = (
            sampling_claim(
                sampling.sel(kind=space, metric=metric, detector=detector),
                every=float(every),
                first=float(steps.min()),
                last=float(steps.max()),
                window=window,
                alpha=alpha,
            )
            if ok
            else _row(detail="not computed for this space or metric")
        )
    short = n_snapshots < MIN_CLAIM_SNAPSHOTS
    if short:
        for row in rows.values():
            row["verdict"] = "inconclusive"
            row["detail"] = f"run too short ({n_snapshots} snapshots): " + row["detail"]
    empty = _row()
    grid = {v: [[rows.get((c, s), empty)[v] for s in SPACES] for c in CLAIMS] for v in empty}
    dims = ("claim", "space")
    data = {v: (dims, np.asarray(grid[v], dtype=object if v in _TEXT else float)) for v in grid}
    data["study"] = ("claim", np.asarray([STUDY[c] for c in CLAIMS], dtype=object))
    out = xr.Dataset(data, coords={"claim": list(CLAIMS), "space": list(SPACES)})
    if episodes:
        ep = xr.concat(episodes, dim="episode")
        for v in ("space", *EPISODE_FIELDS):
            out[f"episode_{v}"] = ("episode", ep[v].values)
    out.attrs = params_attrs(
        "claims",
        {
            "metric": metric,
            "detector": detector,
            "alpha": alpha,
            "share": share,
            "cutoff_step": cutoff,
            "episode_window": window,
            "episode_source": source,
            "events": "notable events (significant ones where notable is absent)",
            "n_snapshots": int(n_snapshots),
            "min_snapshots": MIN_CLAIM_SNAPSHOTS,
            "short_run": bool(short),
            "verdicts": list(VERDICTS),
            "context": {k: [list(w) for w in v] for k, v in context.items()},
        },
    )
    return out
