"""Calibrated series results -> one labelled Dataset, with FDR control across series."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from ._calibrate import SeriesResult, n_surrogates
from ._fdr import hierarchical_fdr
from ._spec import Calibration, options_attrs

EVENT_ATTRS = {
    "step": ("step where the change is centred (middle of the fitted ramp)", "step"),
    "onset": ("first step that has moved (ramp fit)", "step"),
    "duration": ("steps from onset to the first step at the new level (0: a step)", "step"),
    "score": ("detector score (peak |z|, standardised mean shift or jump)", "1"),
    "sign": ("direction of the change (+1 up, -1 down)", "1"),
    "p_value": ("max-statistic surrogate p-value (family-wise within the series)", "1"),
    "scale": ("narrowest trend window (in steps) at which the event is significant", "step"),
    "significant": ("abrupt relative to trend_window after FDR control", "1"),
}
COUNT_ATTRS = {
    "n_candidates": ("raw candidate events", "1"),
    "n_significant": ("significant events after FDR control across series", "1"),
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


def _event_table(res: SeriesResult, steps: np.ndarray, level: float) -> dict[str, np.ndarray]:
    centre = (res.onset + res.end) // 2
    spacing = float(np.median(np.diff(steps))) if steps.size > 1 else 1.0
    scale = np.full(res.score.size, np.nan)
    if res.score.size and res.ladder:
        ok = res.p_ladder <= level  # (k, ladder)
        first = np.argmax(ok, axis=1)
        tw = np.asarray(res.ladder, dtype=np.float64)[first] * spacing
        scale = np.where(ok.any(axis=1), tw, np.nan)
    return {
        "step": steps[centre],
        "onset": steps[res.onset],
        "duration": steps[res.end] - steps[res.onset],
        "score": res.score,
        "sign": res.sign,
        "p_value": res.p_value,
        "scale": scale,
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
) -> xr.Dataset:
    """Dataset with dims ``(*other, detector, transition)``; ``results[i]`` is series ``i``."""
    detectors = list(options)
    n_series, n_det = len(results), len(detectors)
    width = max([r[d].score.size for r in results for d in detectors] + [0])
    ev = {k: np.full((n_series, n_det, width), np.nan) for k in EVENT_ATTRS if k != "significant"}
    sig = np.zeros((n_series, n_det, width), dtype=bool)
    counts = {k: np.full((n_series, n_det), np.nan) for k in COUNT_ATTRS}
    for j, d in enumerate(detectors):
        tested = np.array([r[d].tested for r in results], dtype=bool)
        p_series = np.array([r[d].p_value.min(initial=1.0) for r in results])
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
            sig[i, j, :k] = sel[i] & (res.p_value <= level)
            row = {
                "n_candidates": k if res.tested else np.nan,
                "n_significant": sig[i, j].sum() if res.tested else np.nan,
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
    for name, c in counts.items():
        c = c.reshape(*shape, n_det)
        data[name] = (dims[:-1], c.astype(bool) if name == "tested" else c)
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
        "candidate's p-value is <= alpha * max(R, 1) / m; NaN: significant at none"
    )
    return ds
