"""``transitions``: every detector on every series of a DataArray, FDR-controlled across them."""

from __future__ import annotations

import numpy as np
import xarray as xr

from ._transitions import _VAR_ATTRS, _event_table
from ._transitions_core import (
    SeriesResult,
    check_alpha,
    empty_result,
    hierarchical_fdr,
    resolve_params,
)
from ._transitions_pool import calibrate_all

_COUNT_ATTRS = {
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
}


def transitions(
    da: xr.DataArray,
    *,
    detectors: tuple[str, ...] | list[str] = ("zscore", "meanshift", "pelt"),
    alpha: float = 0.05,
    **params: object,
) -> xr.Dataset:
    """Calibrated transitions of every series in ``da``, per detector, FDR across series.

    Parameters
    ----------
    da : xr.DataArray
        Trajectories with a ``step`` dimension, e.g. dims ``(kind, layer, metric, step)``.
        All-NaN series are skipped (``tested`` False) and not counted in the FDR family.
    detectors : sequence of str
        Names from ``DETECTORS``.
    alpha : float
        False-discovery level across the tested series of each detector.
    **params
        As for ``find_transitions``. A plain name applies to every detector that takes it;
        prefix it with a detector name to target one (``pelt_window=40``,
        ``zscore_n_surrogates=500``). ``workers`` (int, default: the usable cores) sets the
        processes that calibrate series in parallel (1: serial); results do not depend on it.

    Returns
    -------
    xr.Dataset
        Dims ``(..., detector, transition)`` with the event variables of ``find_transitions``
        (NaN / False padded; ``step``, ``onset``, ``duration`` become float), and per series
        ``n_candidates``, ``n_significant``, ``n_null``, ``p_series``, ``q_series``,
        ``critical_score``, ``tested`` with dims ``(..., detector)``.

    Notes
    -----
    Per detector, Benjamini-Hochberg (1995) on the series-level p-values selects R of the m
    tested series; a candidate in a selected series is significant when its p-value is at most
    ``alpha * R / m`` (Benjamini and Bogomolov 2014). Series ``i`` (C order over the non-step
    dims) draws its surrogates from ``np.random.default_rng([seed, i])``; with one series the
    result equals ``find_transitions``.
    """
    if not isinstance(da, xr.DataArray) or "step" not in da.dims:
        raise ValueError(
            f"Expected `da` to be an xarray.DataArray with a 'step' dimension, got "
            f"{type(da).__name__} with dims {getattr(da, 'dims', None)}"
        )
    detectors = tuple(detectors)
    if not detectors:
        raise ValueError("Expected `detectors` to name at least one detector, got ()")
    alpha = check_alpha(alpha)
    params = dict(params)
    workers = params.pop("workers", None)
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1
    ):
        raise ValueError(f"Expected `workers` to be a positive int or None, got {workers!r}")
    workers = None if workers is None else int(workers)
    cal, det, nsur = resolve_params(detectors, params)
    other = [d for d in da.dims if d != "step"]
    arr = np.asarray(da.transpose(*other, "step").values, dtype=np.float64)
    shape = arr.shape[:-1]
    flat = arr.reshape(-1, arr.shape[-1])  # (series, step)
    steps = (
        np.asarray(da["step"].values).astype(np.int64)
        if "step" in da.coords
        else np.arange(arr.shape[-1], dtype=np.int64)
    )
    finite = np.isfinite(flat)
    todo = np.flatnonzero(finite.any(axis=1))
    done = calibrate_all(
        [flat[i][finite[i]] for i in todo], det, nsur, cal, alpha, ids=todo, workers=workers
    )
    results: list[dict[str, SeriesResult]] = [
        {d: empty_result(False, "all NaN") for d in detectors} for _ in range(flat.shape[0])
    ]
    for i, out in zip(todo, done, strict=True):
        results[i] = out
    finite_steps = [steps[np.isfinite(r)] for r in flat]
    return _assemble(results, finite_steps, detectors, shape, other, da, alpha, cal, det, nsur)


def _assemble(results, finite_steps, detectors, shape, other, da, alpha, cal, det, nsur):
    n_series, n_det = len(results), len(detectors)
    width = max([r[d].score.size for r in results for d in detectors] + [0])
    ev = {k: np.full((n_series, n_det, width), np.nan) for k in _VAR_ATTRS if k != "significant"}
    sig = np.zeros((n_series, n_det, width), dtype=bool)
    counts = {k: np.full((n_series, n_det), np.nan) for k in _COUNT_ATTRS}
    for j, d in enumerate(detectors):
        tested = np.array([r[d].tested for r in results])
        p_series = np.array([r[d].p_value.min(initial=1.0) for r in results])
        q, selected, level = hierarchical_fdr(p_series[tested], alpha)
        counts["p_series"][tested, j] = p_series[tested]
        counts["q_series"][tested, j] = q
        sel = np.zeros(n_series, dtype=bool)
        sel[tested] = selected
        for i, r in enumerate(results):
            res = r[d]
            k = res.score.size
            for name, v in _event_table(res, finite_steps[i]).items():
                ev[name][i, j, :k] = v
            sig[i, j, :k] = sel[i] & (res.p_value <= level)
            counts["n_candidates"][i, j] = k if res.tested else np.nan
            counts["n_significant"][i, j] = sig[i, j].sum() if res.tested else np.nan
            counts["n_null"][i, j] = res.n_null
            counts["critical_score"][i, j] = res.critical
            counts["tested"][i, j] = res.tested
            counts["tail_threshold"][i, j] = res.tail.threshold
            counts["tail_scale"][i, j] = res.tail.scale
            counts["tail_shape"][i, j] = res.tail.shape
    dims = (*other, "detector", "transition")
    coords = {d: da[d] for d in other if d in da.coords}
    coords["detector"] = xr.DataArray(list(detectors), dims="detector")
    coords["transition"] = xr.DataArray(np.arange(width), dims="transition")
    data = {k: (dims, v.reshape(*shape, n_det, width)) for k, v in ev.items()}
    data["significant"] = (dims, sig.reshape(*shape, n_det, width))
    for k, v in counts.items():
        v = v.reshape(*shape, n_det)
        data[k] = (dims[:-1], v.astype(bool) if k == "tested" else v)
    ds = xr.Dataset(data, coords=coords)
    for k, (long_name, units) in {**_VAR_ATTRS, **_COUNT_ATTRS}.items():
        ds[k].attrs.update(long_name=long_name, units=units)
    ds.attrs.update({"alpha": alpha, "detectors": list(detectors)})
    ds.attrs.update({k: ("auto" if v is None else v) for k, v in cal.items()})
    for d in detectors:
        ds.attrs[f"{d}_n_surrogates"] = nsur[d]
        for k, v in det[d].items():
            ds.attrs[f"{d}_{k}"] = "auto" if v is None else v
    ds.attrs["p_value_method"] = (
        "empirical max-statistic count; generalized Pareto tail of the surrogate maxima "
        "(Knijnenburg et al. 2009) where fewer than 10 of them reach the score"
    )
    ds.attrs["fdr"] = (
        "per detector: Benjamini-Hochberg on series-level max-statistic p-values, then "
        "candidates with p <= alpha * R / m in selected series (Benjamini and Bogomolov 2014)"
    )
    return ds
