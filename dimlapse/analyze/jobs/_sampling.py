"""Sampling frequency: the transition analysis repeated on coarser subsamples of each trajectory.

The study's figure 4: a trajectory captured every 5 steps, subsampled to every 10, 25, ...,
1000 steps, and the transitions each sampling interval still sees. Next to the raw and
significant counts this job reports the null-surrogate count of each interval and how many of
the finest interval's significant transitions a coarse interval still finds (within one
coarse interval of the original step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from .._provenance import params_attrs
from .._transitions import ALL_DETECTORS, Calibration
from .._validate import check_positive_int
from ._timing import transition_counts
from ._trajectories import as_trajectories, infer_every

DEFAULT_INTERVALS = (5, 10, 25, 50, 100, 250, 500, 1000)
MIN_SAMPLES = 10  # fewest samples an interval must leave to be tested


def _strides(intervals: Sequence[int], every: int) -> list[tuple[int, int, int]]:
    """(requested interval, stride in samples, effective interval), finest first, deduplicated.

    Intervals below `every` cannot be sampled and are skipped; others round to the nearest
    multiple of `every`.
    """
    out: dict[int, tuple[int, int, int]] = {}
    for k in sorted(intervals):
        if k < every:
            continue
        stride = max(1, round(k / every))
        out.setdefault(stride, (k, stride, stride * every))
    return list(out.values())


def found(base: xr.Dataset, sub: xr.Dataset, tolerance: float) -> xr.DataArray:
    """Per transition of `base`: significant, with a raw candidate of `sub` within `tolerance`."""
    b_step = base["step"]
    b_sig = base["significant"].fillna(False).astype(bool) & b_step.notnull()
    s_step = sub["step"].rename(transition="transition_sub")
    near = (abs(b_step - s_step) <= tolerance).any(dim="transition_sub")
    return near & b_sig


def matched(base: xr.Dataset, sub: xr.Dataset, tolerance: float) -> xr.DataArray:
    """Significant transitions of `base` with a raw candidate of `sub` within `tolerance` steps."""
    return found(base, sub, tolerance).sum("transition")


def sampling(
    dim: xr.DataArray | xr.Dataset,
    *,
    intervals: Sequence[int] = DEFAULT_INTERVALS,
    every: int | None = None,
    detectors: Sequence[str] = ALL_DETECTORS,
    alpha: float = 0.05,
    min_samples: int = MIN_SAMPLES,
    base: xr.Dataset | None = None,
    **params: Any,
) -> xr.Dataset:
    """Transition counts of every trajectory subsampled to coarser capture intervals.

    Parameters
    ----------
    dim : DataArray (..., step) or Dataset with a ``dimensionality`` variable
        Trajectories at the run's capture steps.
    intervals : sequence of int
        Sampling intervals in optimizer steps. Each is rounded to a multiple of the run's
        `every`; intervals below `every` are skipped (recorded in attrs).
    every : int, optional
        The run's capture interval; default ``dim.attrs['every']`` or the median step spacing.
    detectors, alpha, **params
        Passed to :func:`dimlapse.analyze.transitions` (FDR across series per interval).
    min_samples : int
        Intervals leaving fewer samples are reported as NaN (too short to test).
    base : xr.Dataset, optional
        Transitions already computed on the full-resolution trajectory (reused for the
        finest interval when it equals `every`).

    Returns
    -------
    xr.Dataset
        Dims (interval, ..., detector): ``n_raw``, ``n_significant``, ``n_null`` and
        ``n_base_found`` (significant transitions of the finest interval that the interval
        still finds within one interval); per finest transition (interval, ..., detector,
        transition) ``base_found`` (1 found, 0 not, NaN untested) and ``base_step`` (its
        step, NaN unless significant), from which the claims job tells stable events from
        unstable ones; ``n_samples`` and ``effective_interval`` per interval.
    """
    from .._transitions import transitions

    da = as_trajectories(dim)
    every = infer_every(da, every)
    if isinstance(intervals, str | int) or not len(intervals):
        raise ValueError(f"Expected `intervals` to be a non-empty list of ints, got {intervals!r}")
    for k in intervals:
        check_positive_int(k, "intervals")
    min_samples = check_positive_int(min_samples, "min_samples", minimum=2)
    plan = _strides(intervals, every)
    skipped = sorted({int(k) for k in intervals} - {k for k, _, _ in plan})
    if not plan:
        raise ValueError(
            f"Expected `intervals` to include one >= the run's `every` ({every}), got "
            f"{list(intervals)!r}"
        )
    rows: list[tuple[int, int, int, xr.Dataset | None]] = []
    finest: xr.Dataset | None = None
    for k, stride, effective in plan:
        sub = da.isel(step=slice(0, None, stride))
        n = sub.sizes["step"]
        if n < min_samples:
            rows.append((k, effective, n, None))
            continue
        if stride == 1 and base is not None:
            shared = [d for d in da.dims if d != "step" and d in base.dims and d in da.coords]
            tr = base.sel({d: da[d].values for d in shared})  # the series of `da` only
        else:
            kw = {"calibration": Calibration(scales=()), **params}  # counts only: no scale ladder
            tr = transitions(sub, detectors=tuple(detectors), alpha=alpha, **kw).compute()
        if finest is None:
            finest = tr
        counts = transition_counts(tr)
        hit = found(finest, tr, tolerance=effective)  # finest: set above
        counts["n_base_found"] = hit.sum("transition")
        counts["base_found"] = hit.astype(np.float64)  # NaN where an interval is too short
        counts["base_step"] = finest["step"].where(finest["significant"].fillna(False).astype(bool))
        rows.append((k, effective, n, counts))
    computed = [c for *_, c in rows if c is not None]
    if not computed:
        raise ValueError(
            f"Expected trajectories of at least `min_samples` = {min_samples} samples at the "
            f"finest interval ({plan[0][2]} steps), got {rows[0][2]}; the run is too short for "
            "the sampling job"
        )
    template = computed[0]
    per_interval = [
        c if c is not None else xr.full_like(template, np.nan, dtype=float) for *_, c in rows
    ]
    out = xr.concat(per_interval, dim="interval", coords="minimal", join="outer")
    out = out.assign_coords(interval=[k for k, *_ in rows])
    out["effective_interval"] = ("interval", [e for _, e, _, _ in rows])
    out["n_samples"] = ("interval", [n for _, _, n, _ in rows])
    labels = {
        "n_raw": "raw transition candidates",
        "n_significant": "significant transitions (after FDR)",
        "n_null": "candidates on null surrogates",
        "n_base_found": "finest-interval significant transitions still found",
        "base_found": "this finest-interval significant transition is still found (1/0)",
        "base_step": "step of each finest-interval significant transition",
        "effective_interval": "sampling interval used",
        "n_samples": "samples in the subsampled trajectory",
    }
    for name, long_name in labels.items():
        out[name].attrs = {
            "long_name": long_name,
            "units": "step" if "interval" in name or name.endswith("step") else "1",
        }
    out["interval"].attrs = {"long_name": "requested sampling interval", "units": "step"}
    out.attrs = params_attrs(
        "sampling",
        {
            "every": every,
            "intervals": [int(k) for k in intervals],
            "skipped_intervals": skipped,
            "subsampling": "every stride-th capture from the first, stride = round(k / every)",
            "detectors": list(detectors),
            "alpha": alpha,
            "min_samples": min_samples,
            "matching": "a finest-interval significant transition is found when a raw "
            "candidate at the coarse interval lies within one coarse interval of its step",
            **params,
        },
    )
    return out
