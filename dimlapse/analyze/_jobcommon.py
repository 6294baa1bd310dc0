"""Small helpers shared by the study's jobs (phases, coupling, sampling, compare).

Validation of job inputs lives here so that every job names its arguments the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

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


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Validate an integer option at a job's boundary."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"Expected `{name}` to be an int >= {minimum}, got {value!r}")
    return int(value)


def check_fraction(value: Any, name: str, *, low: float = 0.0, high: float = 1.0) -> float:
    """Validate a float option in the open interval (low, high)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low < value < high:
        raise ValueError(f"Expected `{name}` to be a float in ({low}, {high}), got {value!r}")
    return float(value)


def jsonable(value: Any) -> Any:
    """Convert numpy scalars, tuples and arrays in attrs to JSON-serialisable Python objects."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def params_attrs(job: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Dataset attrs for a job: the job name and every parameter (also as one JSON string)."""
    clean = jsonable(dict(params))
    attrs: dict[str, Any] = {"job": job, "parameters": json.dumps(clean, sort_keys=True)}
    for key, value in clean.items():
        attrs[key] = "null" if value is None else value
    return attrs


def vlen_strings(ds: xr.Dataset) -> xr.Dataset:
    """Convert fixed-width unicode variables and coords to variable-length strings.

    Zarr v3 warns (``UnstableSpecificationWarning``) on fixed-width ``<U`` arrays; NumPy's
    ``StringDType`` is stored as the v3 variable-length string type.
    """
    string = np.dtypes.StringDType()
    out = ds.copy()
    for name, var in list(out.variables.items()):
        if var.dtype.kind in "UO":
            values = np.asarray(var.values).astype(str).astype(string)
            out[name] = var.copy(data=values)
            out[name].encoding = {}
    return out
