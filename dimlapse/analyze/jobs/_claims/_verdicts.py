"""Verdicts of the study's claims: each a stated test on episodes (or layers), with n."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from scipy.stats import binomtest

from ._episodes import fallback_episodes

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
