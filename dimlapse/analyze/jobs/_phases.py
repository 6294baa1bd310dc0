"""Phase segmentation of dimensionality trajectories: collapse, expansion, stabilisation.

Method (stated in the result's attrs): smooth each trajectory with a centred moving average,
fit a segmented (piecewise) linear regression with `n_breakpoints` = 2 breakpoints by exhaustive
least squares over a grid of candidate positions (each segment its own line; Bai and Perron
1998 give the dynamic-programming version of the same objective), and classify each segment by
its slope. A segment trends when both (a) its slope, extrapolated over the whole run, would
move the smoothed series by at least `tolerance` of its range (the normalised slope), and (b)
its fitted change over its own span exceeds `noise_factor` standard deviations of the raw
series around the fit (so noise never makes a phase), and (c) its fitted change is at least
`min_change` of the smoothed series' range and `min_relative` of its level (so a segment of a
nearly constant series, e.g. a weight stable rank moving from 16.64 to 16.66, is no phase).
Trending down is *collapse*, up is *expansion*, anything else *stabilisation*. Adjacent
segments of one class merge into a phase. A change faster than the phases' resolution (the
smoothing window) is reported with its size (``fastest_change_*``), never hidden in a label.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import xarray as xr

from .._provenance import params_attrs
from .._validate import check_fraction, check_positive_int
from ._trajectories import as_trajectories, step_values

PHASES = ("collapse", "expansion", "stabilisation")
#: Trend codes of ``segment_trend`` (CF flag convention), keyed by phase name.
TREND_CODES = {"collapse": -1, "stabilisation": 0, "expansion": 1}
N_SEGMENTS = 3
#: A labelled collapse or expansion changes by at least this share of the smoothed range...
MIN_CHANGE = 0.1
#: ... and by at least this share of the series' median level (float noise of a constant
#: series has a range too; 1 % of the level is far above it and far below the study's phases).
MIN_RELATIVE = 0.01


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of a 1-D series, NaN-aware, shrinking at the edges.

    Each output is the mean of the finite values within ``window // 2`` samples either side.
    """
    finite = np.isfinite(y)
    values = np.where(finite, y, 0.0)
    half = window // 2
    kernel = np.ones(2 * half + 1)
    total = np.convolve(values, kernel, mode="same")
    count = np.convolve(finite.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _segment_sse(cum: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Residual sum of squares of the least-squares line through samples [a, b).

    `cum` holds prefix sums of (1, x, y, x^2, xy, y^2) with a leading zero row; `a` and `b`
    broadcast against each other.
    """
    n, sx, sy, sxx, sxy, syy = (cum[b, k] - cum[a, k] for k in range(6))
    with np.errstate(invalid="ignore", divide="ignore"):
        vxx = sxx - sx * sx / n
        vxy = sxy - sx * sy / n
        vyy = syy - sy * sy / n
        slope_term = np.where(vxx > 0, vxy * vxy / np.where(vxx > 0, vxx, 1.0), 0.0)
        return np.maximum(vyy - slope_term, 0.0)


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of the least-squares line (slope 0 for a single point)."""
    if x.size < 2 or np.ptp(x) == 0:
        return 0.0, float(np.mean(y))
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def segmented_fit(
    x: np.ndarray, y: np.ndarray, *, min_size: int, max_candidates: int
) -> tuple[int, int]:
    """Indices (i, j) splitting finite samples into [0, i), [i, j), [j, n) with least SSE.

    Candidates are every index when ``n <= max_candidates``, else an even grid refined once
    to single samples around the grid optimum. Contract: ``n >= 3 * min_size``.
    """
    n = x.size
    xs = (x - x[0]) / max(x[-1] - x[0], 1e-300)
    ys = (y - y.mean()) / max(np.std(y), 1e-300)
    cols = np.stack([np.ones(n), xs, ys, xs * xs, xs * ys, ys * ys], axis=1)
    cum = np.vstack([np.zeros((1, 6)), np.cumsum(cols, axis=0)])  # (n + 1, 6)

    def best(cand_i: np.ndarray, cand_j: np.ndarray) -> tuple[int, int]:
        i = cand_i[:, None]
        j = cand_j[None, :]
        total = _segment_sse(cum, np.zeros_like(i), i) + _segment_sse(cum, i, j)
        total = total + _segment_sse(cum, j, np.full_like(j, n))
        ok = (j - i >= min_size) & (i >= min_size) & (n - j >= min_size)
        total = np.where(ok, total, np.inf)
        a, b = np.unravel_index(np.argmin(total), total.shape)
        return int(cand_i[a]), int(cand_j[b])

    grid = np.arange(min_size, n - min_size + 1)
    if grid.size <= max_candidates:
        return best(grid, grid)
    coarse = np.unique(np.linspace(min_size, n - min_size, max_candidates).round().astype(int))
    i, j = best(coarse, coarse)
    spacing = int(np.ceil((n - 2 * min_size) / max_candidates)) + 1
    near_i = np.arange(max(min_size, i - spacing), min(n - min_size, i + spacing) + 1)
    near_j = np.arange(max(min_size, j - spacing), min(n - min_size, j + spacing) + 1)
    return best(near_i, near_j)


def _phases_1d(
    y: np.ndarray,
    x: np.ndarray,
    window: int,
    tol: float,
    noise_factor: float,
    min_size: int,
    mc: int,
    min_change: float = MIN_CHANGE,
    min_relative: float = MIN_RELATIVE,
) -> dict[str, np.ndarray]:
    """Phase outputs for one trajectory (see :func:`phases`)."""
    n_out = y.size
    nan3 = np.full(N_SEGMENTS, np.nan)
    out = {
        "breakpoint_step": np.full(N_SEGMENTS - 1, np.nan),
        "segment_start": nan3.copy(),
        "segment_end": nan3.copy(),
        "segment_slope": nan3.copy(),
        "normalised_slope": nan3.copy(),
        "segment_change": nan3.copy(),
        "segment_trend": np.zeros(N_SEGMENTS, dtype=np.int8),
        "phase_start": nan3.copy(),
        "phase_end": nan3.copy(),
        "smoothed": np.full(n_out, np.nan),
        "fitted": np.full(n_out, np.nan),
        "r_squared": np.array(np.nan),
        "fastest_change_step": np.array(np.nan),
        "fastest_change_fraction": np.array(np.nan),
        "fastest_change_from": np.array(np.nan),
        "fastest_change_to": np.array(np.nan),
    }
    res = max(window, min_size)  # samples: no phase boundary is placed more finely than this
    finite = np.flatnonzero(np.isfinite(y))
    if finite.size > res and np.ptp(y[finite]) > 0:
        moves = np.abs(y[finite][res:] - y[finite][:-res])  # change over `res` samples
        k = int(np.argmax(moves))
        out["fastest_change_step"] = np.array(x[finite][k])
        out["fastest_change_fraction"] = np.array(moves[k] / np.ptp(y[finite]))
        out["fastest_change_from"] = np.array(y[finite][k])
        out["fastest_change_to"] = np.array(y[finite][k + res])
    sm = smooth(y, window)
    out["smoothed"] = sm
    keep = np.isfinite(y) & np.isfinite(sm)
    if keep.sum() < N_SEGMENTS * min_size:
        return out
    xf, yf = x[keep], sm[keep]
    i, j = segmented_fit(xf, yf, min_size=min_size, max_candidates=mc)
    bounds = [0, i, j, xf.size]
    span = float(np.ptp(yf))
    duration = float(xf[-1] - xf[0])
    fitted = np.empty_like(yf)
    lines = [_line(xf[a:b], yf[a:b]) for a, b in pairwise(bounds)]
    for k, (slope, intercept) in enumerate(lines):
        a, b = bounds[k], bounds[k + 1]
        fitted[a:b] = slope * xf[a:b] + intercept
    noise = float(np.std(y[keep] - fitted))  # raw samples around the fit
    level = float(np.median(np.abs(y[keep])))
    for k, (slope, _) in enumerate(lines):
        a, b = bounds[k], bounds[k + 1]
        rate = slope * duration / span if span > 0 else 0.0
        change = abs(slope * (xf[b - 1] - xf[a]))
        out["segment_change"][k] = slope * (xf[b - 1] - xf[a])
        out["segment_start"][k] = xf[a]
        out["segment_end"][k] = xf[b] if b < xf.size else xf[-1]
        out["segment_slope"][k] = slope
        out["normalised_slope"][k] = rate
        trending = abs(rate) >= tol and change > noise_factor * noise
        out["segment_trend"][k] = int(np.sign(rate)) if trending else 0
    # a phase (adjacent segments of one trend merged) must change by a stated share of the
    # range and of the level, or it is no collapse / expansion
    trend, k = out["segment_trend"], 0
    while k < N_SEGMENTS:
        last = k
        while last + 1 < N_SEGMENTS and trend[last + 1] == trend[k]:
            last += 1
        total = abs(float(np.sum(out["segment_change"][k : last + 1])))
        if trend[k] != 0 and (total < min_change * span or total < min_relative * level):
            trend[k : last + 1] = 0
        k = last + 1
    out["breakpoint_step"] = np.array([xf[i], xf[j]], dtype=np.float64)
    full_fit = np.full(n_out, np.nan)
    full_fit[keep] = fitted
    out["fitted"] = full_fit
    ss_tot = float(np.sum((yf - yf.mean()) ** 2))
    ss_res = float(np.sum((yf - fitted) ** 2))
    out["r_squared"] = np.array(1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0)
    # merge adjacent segments of the same class; each phase keeps its first span
    for p, name in enumerate(PHASES):
        code = TREND_CODES[name]
        hits = np.flatnonzero(out["segment_trend"] == code)
        if hits.size == 0:
            continue
        first = last = int(hits[0])
        while last + 1 < N_SEGMENTS and out["segment_trend"][last + 1] == code:
            last += 1
        out["phase_start"][p] = out["segment_start"][first]
        out["phase_end"][p] = out["segment_end"][last]
    return out


_OUTPUTS: tuple[tuple[str, list[str], type], ...] = (
    ("breakpoint_step", ["boundary"], np.float64),
    ("segment_start", ["segment"], np.float64),
    ("segment_end", ["segment"], np.float64),
    ("segment_slope", ["segment"], np.float64),
    ("normalised_slope", ["segment"], np.float64),
    ("segment_change", ["segment"], np.float64),
    ("segment_trend", ["segment"], np.int8),
    ("phase_start", ["phase"], np.float64),
    ("phase_end", ["phase"], np.float64),
    ("smoothed", ["step"], np.float64),
    ("fitted", ["step"], np.float64),
    ("r_squared", [], np.float64),
    ("fastest_change_step", [], np.float64),
    ("fastest_change_fraction", [], np.float64),
    ("fastest_change_from", [], np.float64),
    ("fastest_change_to", [], np.float64),
)

_ATTRS = {
    "breakpoint_step": ("breakpoint of the segmented fit (first step of the next segment)", "step"),
    "segment_start": ("first step of the segment", "step"),
    "segment_end": ("last step of the segment (first step of the next one)", "step"),
    "segment_slope": ("least-squares slope of the smoothed series", "1/step"),
    "normalised_slope": ("slope x run duration / range of the smoothed series", "1"),
    "segment_change": ("change of the fitted line over the segment", "1"),
    "segment_trend": ("trend class of the segment", "1"),
    "phase_start": ("start of the first span of the phase (NaN when absent)", "step"),
    "phase_end": ("end of the first span of the phase (NaN when absent)", "step"),
    "smoothed": ("trajectory after the centred moving average", "1"),
    "fitted": ("segmented linear fit of the smoothed trajectory", "1"),
    "r_squared": ("coefficient of determination of the segmented fit", "1"),
    "fastest_change_step": ("start of the largest change within the resolution", "step"),
    "fastest_change_fraction": (
        "largest change of the raw series within the resolution / its range",
        "1",
    ),
    "fastest_change_from": ("raw value where the fastest change starts", "1"),
    "fastest_change_to": ("raw value one resolution later", "1"),
}


def phases(
    dim: xr.DataArray | xr.Dataset,
    *,
    window: int | None = None,
    tolerance: float = 0.1,
    noise_factor: float = 2.0,
    min_size: int | None = None,
    max_candidates: int = 300,
    min_change: float = MIN_CHANGE,
    min_relative: float = MIN_RELATIVE,
) -> xr.Dataset:
    """Collapse / expansion / stabilisation boundaries of every trajectory.

    Parameters
    ----------
    dim : DataArray (..., step) or Dataset with a ``dimensionality`` variable
        Trajectories; lazy (dask) input gives a lazy result.
    window : int, optional
        Width in samples of the centred moving average; default ``max(1, n // 100) | 1``.
    tolerance : float
        A segment whose slope, extrapolated over the run, moves the smoothed series by less
        than this fraction of its range is flat (*stabilisation*); falling segments are
        *collapse*, rising ones *expansion*.
    noise_factor : float
        A trending segment must also change by more than this many standard deviations of
        the raw series around the fit.
    min_size : int, optional
        Fewest samples per segment; default ``max(3, n // 100)``.
    max_candidates : int
        Grid size for the breakpoint search before the single-sample refinement.
    min_change, min_relative : float
        A trending segment's fitted change is at least `min_change` of the smoothed range and
        `min_relative` of the series' median absolute level.

    Returns
    -------
    xr.Dataset
        Per trajectory: ``breakpoint_step`` (boundary), ``segment_*`` (segment),
        ``phase_start`` / ``phase_end`` (phase = collapse, expansion, stabilisation),
        ``smoothed`` and ``fitted`` (step), ``r_squared``; the method and every parameter in
        attrs. Trajectories with too few finite samples give NaN.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> y = np.interp(np.arange(0, 8001, 5), [0, 300, 5000, 8000], [20, 5, 40, 40])
    >>> ds = phases(xr.DataArray(y, dims="step", coords={"step": np.arange(0, 8001, 5)}))
    >>> ds.phase_start.sel(phase="expansion").item() // 100
    3.0
    """
    da = as_trajectories(dim)
    n = da.sizes["step"]
    if window is None:
        window = max(1, n // 100) | 1
    window = check_positive_int(window, "window")
    tolerance = check_fraction(tolerance, "tolerance")
    if (
        isinstance(noise_factor, bool)
        or not isinstance(noise_factor, int | float)
        or noise_factor < 0
    ):
        raise ValueError(f"Expected `noise_factor` to be a float >= 0, got {noise_factor!r}")
    if min_size is None:
        min_size = max(3, n // 100)
    min_size = check_positive_int(min_size, "min_size", minimum=2)
    max_candidates = check_positive_int(max_candidates, "max_candidates", minimum=3)
    min_change = check_fraction(min_change, "min_change")
    min_relative = check_fraction(min_relative, "min_relative")
    x = step_values(da)

    def gufunc(arr: np.ndarray) -> tuple[np.ndarray, ...]:
        lead = arr.shape[:-1]
        flat = arr.reshape(-1, arr.shape[-1]).astype(np.float64)
        rows = [
            _phases_1d(
                r,
                x,
                window,
                tolerance,
                noise_factor,
                min_size,
                max_candidates,
                min_change,
                min_relative,
            )
            for r in flat
        ]
        outs: list[np.ndarray] = []
        for name, core, dtype in _OUTPUTS:
            stacked = np.stack([r[name] for r in rows]) if rows else np.empty((0,))
            sizes = {"boundary": 2, "segment": 3, "phase": 3, "step": arr.shape[-1]}
            outs.append(stacked.astype(dtype).reshape(lead + tuple(sizes[c] for c in core)))
        return tuple(outs)

    results = xr.apply_ufunc(
        gufunc,
        da,
        input_core_dims=[["step"]],
        output_core_dims=[core if core != ["step"] else ["step"] for _, core, _ in _OUTPUTS],
        exclude_dims={"step"},
        dask="parallelized",
        output_dtypes=[dtype for _, _, dtype in _OUTPUTS],
        dask_gufunc_kwargs={
            "output_sizes": {"boundary": 2, "segment": 3, "phase": 3, "step": n},
            "allow_rechunk": True,
        },
    )
    data_vars = {}
    for (name, _, _), value in zip(_OUTPUTS, results, strict=True):
        long_name, units = _ATTRS[name]
        data_vars[name] = value.assign_attrs(long_name=long_name, units=units)
    data_vars["segment_trend"].attrs.update(
        flag_values=[-1, 0, 1], flag_meanings="collapse stabilisation expansion"
    )
    ds = xr.Dataset(data_vars).assign_coords(
        step=da["step"].values if "step" in da.coords else np.arange(n),
        phase=list(PHASES),
        segment=np.arange(N_SEGMENTS),
        boundary=np.arange(N_SEGMENTS - 1),
    )
    ds = ds.assign_coords({c: da.coords[c] for c in da.coords if "step" not in da.coords[c].dims})
    ds.attrs = params_attrs(
        "phases",
        {
            "method": "segmented linear least squares with 2 breakpoints on the centred "
            "moving average; a segment trends when |slope| x run duration >= tolerance x "
            "smoothed range, its own change > noise_factor x residual sd of the raw series, "
            "and its change >= min_change x smoothed range and >= min_relative x median "
            "|level|",
            "window": window,
            "tolerance": tolerance,
            "noise_factor": float(noise_factor),
            "min_size": min_size,
            "max_candidates": max_candidates,
            "min_change": min_change,
            "min_relative": min_relative,
            "n_breakpoints": N_SEGMENTS - 1,
            "resolution": max(window, min_size),
            "resolution_note": "samples; a change faster than this is not resolved by the "
            "phases (see fastest_change_fraction)",
        },
    )
    return ds
