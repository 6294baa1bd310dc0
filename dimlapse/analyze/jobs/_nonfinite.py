"""Non-finite values a run holds, and the steps the analysis left out because of them."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

__all__ = ["excluded_steps", "nonfinite_record"]


def nonfinite_record(run: Any) -> dict[str, list[int]]:
    """Arrays and the steps at which they hold NaN or Inf.

    The recorder lists non-finite weights and activations in the store's ``nonfinite`` attr
    (``"<group>/<array>" -> steps``); scalars (loss, gradient norm, ...) are small, so they
    are scanned here as well. Inf always counts; NaN counts only in a scalar that is finite
    at more than half of the steps, since a sparse scalar (held-out accuracy, evaluated at
    capture steps only) is NaN where it was not measured.

    Parameters
    ----------
    run : Run
        As returned by :func:`dimlapse.analyze.open_run`.

    Returns
    -------
    dict of str to list of int
        Sorted steps per array, arrays in sorted order.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> scalars = xr.Dataset({"loss": ("step", [0.5, np.nan, 0.4])}, coords={"step": [0, 1, 2]})
    >>> nonfinite_record(SimpleNamespace(attrs={}, scalars=scalars))
    {'scalars/loss': [1]}
    """
    attrs = getattr(run, "attrs", {}) or {}
    record: dict[str, set[int]] = {
        str(k): {int(s) for s in v} for k, v in dict(attrs.get("nonfinite") or {}).items()
    }
    scalars = getattr(run, "scalars", None)
    if scalars is not None and scalars.sizes.get("step", 0):
        steps = np.asarray(scalars["step"].values)
        for name, var in scalars.data_vars.items():
            if var.dims != ("step",) or var.dtype.kind != "f":
                continue
            values = np.asarray(var.values, dtype=np.float64)  # (step,)
            dense = np.isfinite(values).mean() > 0.5
            bad = ~np.isfinite(values) if dense else np.isinf(values)
            if bad.any():
                record.setdefault(f"scalars/{name}", set()).update(int(s) for s in steps[bad])
    return {k: sorted(record[k]) for k in sorted(record)}


def excluded_steps(dim: xr.DataArray) -> dict[str, list[int]]:
    """``"<kind>/<layer>" -> steps`` whose every metric is NaN in a layer that has finite ones.

    A matrix holding NaN or Inf has an all-NaN spectrum, so its metrics are NaN and the jobs
    after ``dimensionality`` skip those steps.

    Parameters
    ----------
    dim : xarray.DataArray, dims (kind, layer, step, metric)
        The computed ``dimensionality`` variable.
    """
    finite = np.isfinite(dim.transpose("kind", "layer", "step", "metric").values)
    steps = np.asarray(dim["step"].values)
    out: dict[str, list[int]] = {}
    for i, kind in enumerate(dim["kind"].values):
        for j, layer in enumerate(dim["layer"].values):
            any_metric = finite[i, j].any(axis=-1)  # (step,)
            if any_metric.any() and not any_metric.all():
                out[f"{kind}/{layer}"] = [int(s) for s in steps[~any_metric]]
    return out
