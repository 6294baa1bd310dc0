"""Trajectory inputs of the study's jobs: a dimensionality DataArray or Dataset, its steps and
capture interval."""

from __future__ import annotations

import numpy as np
import xarray as xr

#: Name of the dimensionality variable produced by :func:`dimlapse.analyze.dimensionality`.
DIM_VAR = "dimensionality"


def as_trajectories(dim: xr.DataArray | xr.Dataset, *, argname: str = "dim") -> xr.DataArray:
    """Return the trajectory DataArray (..., step) from a DataArray or a dimensionality Dataset.

    Raises
    ------
    TypeError, ValueError
        When the input is not xarray, has no `step` dimension, or is a Dataset without a
        ``dimensionality`` variable.
    """
    if isinstance(dim, xr.Dataset):
        if DIM_VAR not in dim.data_vars:
            raise ValueError(
                f"Expected `{argname}` to hold a {DIM_VAR!r} variable, got variables "
                f"{sorted(map(str, dim.data_vars))}; pass `dimensionality(run)` or a DataArray"
            )
        dim = dim[DIM_VAR]
    if not isinstance(dim, xr.DataArray):
        raise TypeError(
            f"Expected `{argname}` to be an xarray DataArray or Dataset with a `step` dimension, "
            f"got {type(dim).__name__}"
        )
    if "step" not in dim.dims:
        raise ValueError(
            f"Expected `{argname}` to have a 'step' dimension, got dims {dim.dims}; "
            "trajectories are indexed by optimizer step"
        )
    return dim


def step_values(da: xr.DataArray) -> np.ndarray:
    """Optimizer steps of `da` as float64 (the `step` coordinate, or 0..n-1 without one)."""
    if "step" in da.coords:
        return np.asarray(da["step"].values, dtype=np.float64)
    return np.arange(da.sizes["step"], dtype=np.float64)


def infer_every(da: xr.DataArray, every: int | None = None) -> int:
    """Capture interval in optimizer steps: `every`, else the attrs, else the median spacing."""
    if every is None:
        every = da.attrs.get("every")
    if isinstance(every, str) or every is None:
        steps = step_values(da)
        if steps.size < 2:
            return 1
        every = int(np.median(np.diff(steps)))
    if not isinstance(every, int | np.integer) or int(every) < 1:
        raise ValueError(f"Expected `every` to be a positive int, got {every!r}")
    return int(every)
