"""Activation versus weight dimensionality: trajectories, transition counts, lagged coupling."""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy.stats import rankdata

from .._provenance import params_attrs
from .._validate import check_positive_int
from ._timing import timing
from ._trajectories import as_trajectories, step_values

KINDS = ("activation", "weight")


def normalised(da: xr.DataArray) -> xr.DataArray:
    """Min-max scale each trajectory to [0, 1] over `step` (constant or empty gives NaN)."""
    low = da.min("step", skipna=True)
    span = da.max("step", skipna=True) - low
    out = (da - low) / span.where(span > 0)
    return out.assign_attrs(
        long_name="dimensionality, min-max normalised per trajectory", units="1"
    )


def lagged_xcorr(a: np.ndarray, w: np.ndarray, max_lag: int) -> np.ndarray:
    """Pearson correlation of ``a[t + lag]`` with ``w[t]`` for lag in [-max_lag, max_lag].

    Finite overlapping pairs only; fewer than 3 pairs or a constant side gives NaN. A peak
    at a positive lag means changes in `a` follow changes in `w` by that many samples.
    """
    n = min(a.size, w.size)
    out = np.full(2 * max_lag + 1, np.nan)
    for k, lag in enumerate(range(-max_lag, max_lag + 1)):
        x = a[max(lag, 0) : n + min(lag, 0)]
        y = w[max(-lag, 0) : n - max(lag, 0)]
        keep = np.isfinite(x) & np.isfinite(y)
        if keep.sum() < 3:
            continue
        x, y = x[keep] - x[keep].mean(), y[keep] - y[keep].mean()
        den = np.sqrt((x * x).sum() * (y * y).sum())
        if den > 0:
            out[k] = float((x * y).sum() / den)
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    """(rows, n) -> average ranks along the last axis over finite values; NaN stays NaN."""
    out = np.full_like(x, np.nan)
    for i, row in enumerate(x):
        keep = np.isfinite(row)
        out[i, keep] = rankdata(row[keep])
    return out


def _peak(xc: np.ndarray, *, lags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., lag) -> lag and value of the largest |xcorr| (NaN where all NaN)."""
    empty = ~np.isfinite(xc).any(axis=-1)
    best = np.argmax(np.where(np.isfinite(xc), np.abs(xc), -1.0), axis=-1)
    value = np.take_along_axis(xc, best[..., None], axis=-1)[..., 0]
    return np.where(empty, np.nan, lags[best]), np.where(empty, np.nan, value)


def comparison(
    dim: xr.DataArray | xr.Dataset,
    *,
    transitions: xr.Dataset | None = None,
    max_lag: int | None = None,
    total_steps: float | None = None,
    share: float = 0.25,
) -> xr.Dataset:
    """Activation versus weight dimensionality of the same layers.

    Parameters
    ----------
    dim : DataArray (kind, ..., step) or Dataset with a ``dimensionality`` variable
        Trajectories with a ``kind`` dimension holding ``activation`` and ``weight``.
    transitions : xr.Dataset, optional
        Transitions of `dim` (:func:`dimlapse.analyze.transitions`); adds counts and timing
        per space.
    max_lag : int, optional
        Largest lag of the cross-correlation in samples; default ``min(50, n // 4)``.
    total_steps, share : optional
        Passed to :func:`timing` (default total: the last step of `dim`).

    Returns
    -------
    xr.Dataset
        ``normalised`` (kind, ..., step); ``xcorr`` (..., lag): rank correlation of the first
        differences, activation at ``t + lag`` against weight at ``t``; ``peak_lag``,
        ``peak_lag_steps`` and ``peak_xcorr`` (largest absolute correlation); with `trans`,
        per (kind, ..., detector) counts and early shares and per (kind, metric, detector)
        totals over layers (``n_raw_total``, ``n_significant_total``, ``n_null_total``).
        Lazy when `dim` is dask-backed (the counts from `transitions` are computed already).
    """
    trans = transitions
    da = as_trajectories(dim)
    if "kind" not in da.dims:
        raise ValueError(
            f"Expected `dim` to have a 'kind' dimension (activation / weight), got dims {da.dims}"
        )
    n = da.sizes["step"]
    if max_lag is None:
        max_lag = max(1, min(50, n // 4))
    max_lag = check_positive_int(max_lag, "max_lag")
    steps = step_values(da)
    spacing = float(np.median(np.diff(steps))) if steps.size > 1 else 1.0
    lags = np.arange(-max_lag, max_lag + 1)
    out = xr.Dataset({"normalised": normalised(da)})

    kinds = [str(k) for k in da["kind"].values] if "kind" in da.coords else []
    if all(k in kinds for k in KINDS):
        act = da.sel(kind="activation", drop=True)
        wt = da.sel(kind="weight", drop=True)

        def gufunc(a: np.ndarray, w: np.ndarray) -> np.ndarray:
            lead = a.shape[:-1]
            # Ranks of the first differences: the first few steps of a run move the metrics
            # by orders of magnitude more than the rest, and Pearson on raw differences
            # would be that transient alone.
            fa = _ranks(np.diff(a.reshape(-1, a.shape[-1]).astype(np.float64), axis=-1))
            fw = _ranks(np.diff(w.reshape(-1, w.shape[-1]).astype(np.float64), axis=-1))
            rows = [lagged_xcorr(x, y, max_lag) for x, y in zip(fa, fw, strict=True)]
            stacked = np.stack(rows) if rows else np.empty((0, lags.size))
            return stacked.reshape((*lead, lags.size))

        xc = xr.apply_ufunc(
            gufunc,
            act,
            wt,
            input_core_dims=[["step"], ["step"]],
            output_core_dims=[["lag"]],
            dask="parallelized",
            output_dtypes=[np.float64],
            dask_gufunc_kwargs={"output_sizes": {"lag": lags.size}, "allow_rechunk": True},
        ).assign_coords(lag=lags)
        out["xcorr"] = xc.assign_attrs(
            long_name="rank correlation of first differences, activation(t + lag) vs weight(t)",
            units="1",
        )
        peak_lag, peak_xcorr = xr.apply_ufunc(
            _peak,
            xc,
            input_core_dims=[["lag"]],
            output_core_dims=[[], []],
            kwargs={"lags": lags},
            dask="parallelized",
            output_dtypes=[np.float64, np.float64],
        )
        out["peak_lag"] = peak_lag.assign_attrs(
            long_name="lag of the largest |xcorr| (positive: activation follows weight)",
            units="sample",
        )
        out["peak_lag_steps"] = (peak_lag * spacing).assign_attrs(
            long_name="lag of the largest |xcorr| in optimizer steps", units="step"
        )
        out["peak_xcorr"] = (peak_xcorr).assign_attrs(long_name="xcorr at the peak lag", units="1")

    if trans is not None:
        total = float(steps[-1]) if total_steps is None else total_steps
        tim = timing(trans, total_steps=total, share=share, start_step=float(steps[0]))
        for name, var in tim.data_vars.items():
            out[name] = var
        for name in ("n_raw", "n_significant", "n_null"):
            if "layer" in tim[name].dims:
                out[f"{name}_total"] = (
                    tim[name]
                    .sum("layer", min_count=1)
                    .assign_attrs(long_name=f"{tim[name].attrs['long_name']}, all layers")
                    .assign_attrs(units="1")
                )
    out.attrs = params_attrs(
        "compare",
        {
            "normalisation": "min-max per trajectory over step",
            "xcorr": "Pearson correlation of the ranks of first differences (Spearman-type, "
            "robust to the early transient); activation at t + lag vs "
            "weight at t; positive peak lag: activation changes follow weight changes",
            "max_lag": max_lag,
            "step_spacing": spacing,
            "kinds_present": kinds,
            "share": share,
        },
    )
    return out
