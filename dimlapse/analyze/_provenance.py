"""Provenance in result attrs: job parameters as JSON-safe values, zarr-safe string variables."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr


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
