"""Calibrated series results -> one labelled Dataset, with FDR control across series."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from ._calibrate import SeriesResult, n_surrogates
from ._fdr import hierarchical_fdr
from ._resolution import EFFECT_DEFINITION, RESOLUTION_DEFINITION
from ._spec import Calibration, options_attrs

EVENT_ATTRS = {
    "step": ("step where the change is centred (middle of the fitted ramp)", "step"),
    "onset": ("first step that has moved (ramp fit)", "step"),
    "duration": ("steps from onset to the first step at the new level (0: a step)", "step"),
    "score": ("detector score (peak |z|, standardised mean shift or jump)", "1"),
    "sign": ("direction of the change (+1 up, -1 down)", "1"),
    "effect": ("signed level change: mean after the event minus mean before it", "metric"),
    "relative_effect": ("effect / the series' level (median |value|)", "1"),
    "p_value": (
        "max-statistic surrogate p-value, family-wise within the series and over the "
        "time-scale ladder (smallest rung p-value times the number of rungs, at most 1)",
        "1",
    ),
    "scale": ("narrowest trend window (in steps) at which the event is significant", "step"),
    "significant": ("resolved and abrupt at some rung of the ladder after FDR control", "1"),
    "notable": ("significant and |relative_effect| >= the notable threshold (attrs)", "1"),
}
BOOL_EVENTS = ("significant", "notable")
COUNT_ATTRS = {
    "n_candidates": ("raw candidate events", "1"),
    "n_significant": ("significant events after FDR control across series", "1"),
    "n_notable": ("notable events: significant with a large enough relative effect", "1"),
    "level": ("the series' level: median |value| over its finite samples", "metric"),
    "resolution": ("smallest change the stored data can show (float32 rounding + floor)", "metric"),
    "constant": ("range below the resolution: not tested, not in the FDR family", "1"),
    "n_null": ("mean candidate count of the same detector on the null surrogates", "1"),
    "p_series": ("series-level max-statistic p-value (smallest candidate p; 1 if none)", "1"),
    "q_series": ("Benjamini-Hochberg adjusted series-level p-value", "1"),
    "critical_score": ("score a candidate must exceed for p <= alpha (surrogate maxima)", "1"),
    "tested": ("series had enough finite samples to be tested", "1"),
    "tail_threshold": ("threshold u of the GPD tail of the surrogate maxima (NaN: no fit)", "1"),
    "tail_scale": ("scale sigma of the GPD tail of the surrogate maxima", "1"),
    "tail_shape": ("shape xi >= 0 of the GPD tail of the surrogate maxima", "1"),
    "noise_phi": ("AR(1) coefficient of the fitted null noise", "1"),
    "noise_sigma": ("AR(1) innovation sd of the fitted null noise", "1"),
    "noise_excised": ("share of increments excised as events before the noise fit", "1"),
}


def combined_p(res: SeriesResult) -> np.ndarray:
    """(k,) p-value over the ladder: ``min(1, L * min_j p_j)`` (Bonferroni over L rungs)."""
    if not res.ladder:
        return res.p_value
    rungs = len(res.ladder)
    return np.minimum(1.0, rungs * res.p_ladder.min(axis=1, initial=1.0))


def _event_table(res: SeriesResult, steps: np.ndarray, level: float) -> dict[str, np.ndarray]:
    centre = (res.onset + res.end) // 2
    spacing = float(np.median(np.diff(steps))) if steps.size > 1 else 1.0
    scale = np.full(res.score.size, np.nan)
    if res.score.size and res.ladder:
        ok = len(res.ladder) * res.p_ladder <= level  # (k, ladder)
        first = np.argmax(ok, axis=1)
        tw = np.asarray(res.ladder, dtype=np.float64)[first] * spacing
        scale = np.where(ok.any(axis=1), tw, np.nan)
    return {
        "step": steps[centre],
        "onset": steps[res.onset],
        "duration": steps[res.end] - steps[res.onset],
        "score": res.score,
        "sign": res.sign,
        "p_value": combined_p(res),
        "scale": scale,
        "effect": res.effect,
        "relative_effect": res.effect / res.level if res.level > 0 else res.effect * np.nan,
    }


def assemble(
    results: list[dict[str, SeriesResult]],
    finite_steps: list[np.ndarray],
    options: dict[str, Any],
    shape: tuple[int, ...],
    other: list,
    coords: dict,
    alpha: float,
    cal: Calibration,
    notable: float,
) -> xr.Dataset:
    """Dataset with dims ``(*other, detector, transition)``; ``results[i]`` is series ``i``."""
    detectors = list(options)
    n_series, n_det = len(results), len(detectors)
    width = max([r[d].score.size for r in results for d in detectors] + [0])
    ev = {k: np.full((n_series, n_det, width), np.nan) for k in EVENT_ATTRS if k not in BOOL_EVENTS}
    sig = np.zeros((n_series, n_det, width), dtype=bool)
    note = np.zeros((n_series, n_det, width), dtype=bool)
    counts = {k: np.full((n_series, n_det), np.nan) for k in COUNT_ATTRS}
    for j, d in enumerate(detectors):
        tested = np.array([r[d].tested for r in results], dtype=bool)
        # the series' p-value: its smallest over the candidates the data can resolve
        p_series = np.array([combined_p(r[d])[r[d].resolved].min(initial=1.0) for r in results])
        q, selected, level = hierarchical_fdr(p_series[tested], alpha)
        m = max(int(tested.sum()), 1)
        ladder_level = alpha * max(int(selected.sum()), 1) / m  # level, or alpha / m if R = 0
        counts["p_series"][tested, j] = p_series[tested]
        counts["q_series"][tested, j] = q
        sel = np.zeros(n_series, dtype=bool)
        sel[tested] = selected
        for i, r in enumerate(results):
            res = r[d]
            k = res.score.size
            for name, v in _event_table(res, finite_steps[i], ladder_level).items():
                ev[name][i, j, :k] = v
            sig[i, j, :k] = sel[i] & res.resolved & (combined_p(res) <= level)
            with np.errstate(invalid="ignore"):
                note[i, j, :k] = sig[i, j, :k] & (
                    np.abs(ev["relative_effect"][i, j, :k]) >= notable
                )
            row = {
                "n_candidates": k if res.tested else np.nan,
                "n_significant": sig[i, j].sum() if res.tested else np.nan,
                "n_notable": note[i, j].sum() if res.tested else np.nan,
                "level": res.level,
                "resolution": res.resolution,
                "constant": res.constant,
                "n_null": res.n_null,
                "critical_score": res.critical,
                "tested": res.tested,
                "tail_threshold": res.tail.threshold,
                "tail_scale": res.tail.scale,
                "tail_shape": res.tail.shape,
                **{k2: res.info.get(k2, np.nan) for k2 in ("noise_phi", "noise_sigma")},
                "noise_excised": res.info.get("noise_excised", np.nan),
            }
            for name, value in row.items():
                counts[name][i, j] = value
    dims = (*other, "detector", "transition")
    coords = {**coords, "detector": ("detector", detectors), "transition": np.arange(width)}
    data: dict[str, Any] = {k: (dims, a.reshape(*shape, n_det, width)) for k, a in ev.items()}
    data["significant"] = (dims, sig.reshape(*shape, n_det, width))
    data["notable"] = (dims, note.reshape(*shape, n_det, width))
    for name, c in counts.items():
        c = c.reshape(*shape, n_det)
        data[name] = (dims[:-1], c.astype(bool) if name in ("tested", "constant") else c)
    ds = xr.Dataset(data, coords=coords)
    for name, (long_name, units) in {**EVENT_ATTRS, **COUNT_ATTRS}.items():
        ds[name].attrs.update(long_name=long_name, units=units)
    ds.attrs.update({"alpha": alpha, "detectors": detectors, **cal.attrs()})
    ds.attrs["scale_ladder_factors"] = [1.0, *cal.scales]
    for d in detectors:
        ds.attrs[f"{d}_n_surrogates"] = n_surrogates(d, cal)
        ds.attrs.update(options_attrs(options[d], prefix=f"{d}_"))
    ds.attrs["p_value_method"] = (
        "empirical max-statistic count; generalized Pareto tail of the surrogate maxima "
        "(Knijnenburg et al. 2009) where fewer than 10 of them reach the score"
    )
    ds.attrs["fdr"] = (
        "per detector: Benjamini-Hochberg on series-level max-statistic p-values, then "
        "candidates with p <= alpha * R / m in selected series (Benjamini and Bogomolov 2014)"
    )
    ds.attrs["scale_definition"] = (
        "narrowest trend window (trend_window times a ladder factor, in steps) at which the "
        "candidate's rung p-value times the number of rungs is <= alpha * max(R, 1) / m; "
        "NaN: significant at none"
    )
    ds.attrs["ladder_definition"] = (
        "every candidate is tested at every rung of the ladder; rungs up to trend_window score "
        "the detector on the residual from the trend, wider rungs score the residual's level "
        "change across the event (levels over a quarter of the rung's window either side, none "
        "read from the outer quarter window, no event peaking within half a window of an "
        "edge); at every rung but trend_window, a candidate "
        "within 0.75 rung windows of another candidate significant at trend_window and sharp "
        "(duration below max(rung, trend_window) / 8 samples) is not tested (a step's leftover "
        "in the residual of another window is no event of its neighbours); p_value = min(1, "
        "rungs * smallest rung p-value), so the FDR family includes the ladder (Bonferroni "
        "over rungs)"
    )
    gaps = [np.diff(f) for f in finite_steps if f.size > 1]
    ds.attrs["step_spacing"] = float(np.median(np.concatenate(gaps))) if gaps else 1.0
    ds.attrs["resolution_definition"] = RESOLUTION_DEFINITION
    ds.attrs["effect_definition"] = EFFECT_DEFINITION
    ds.attrs["notable_relative_effect"] = float(notable)
    ds.attrs["notable_definition"] = (
        f"significant and |relative_effect| >= {notable:g} (a change of at least "
        f"{100 * notable:g} % of the series' level)"
    )
    return ds
