"""Dimensionality from spectra stored by a spectra-mode capture (``spectra/weights``,
``spectra/activations``; docs/store-layout.md).

A spectra-mode run stores, at every capture step, the singular values the analysis would
compute itself (float64, sqrt of the Gram eigenvalues on the smaller side; activations
sample-centred, weights not, leading singleton dims squeezed, conv kernels as
``out x (in * k...)``), with each matrix's ``(rows, columns)`` in the ``matrix_shape`` attr.
The metrics are the same pure functions of a spectrum, so a spectra-mode run and a full run of
the same training give the same dimensionality (to 1e-6 relative, tested).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr

from ._metrics import epsilon_rank, numerical_rank

Metric = Any


def stored_spectra(run: Any) -> dict[str, dict[str, xr.DataArray]]:
    """``{kind: {layer: (step, component) singular values}}`` of a spectra-mode run, or {}."""
    attrs = getattr(run, "attrs", {}) or {}
    if attrs.get("mode") != "spectra" or not hasattr(run, "spectra"):
        return {}
    out: dict[str, dict[str, xr.DataArray]] = {}
    for kind, ds in run.spectra.items():
        arrays = {str(k): v for k, v in ds.data_vars.items() if v.ndim == 2}
        owners = [str(v.attrs.get("layer") or k) for k, v in arrays.items()]
        out[kind] = {
            (owner if owners.count(owner) == 1 else name): da
            for (name, da), owner in zip(arrays.items(), owners, strict=True)
        }
    return {k: v for k, v in out.items() if v}


def _block(s: np.ndarray, *, funcs: Sequence[tuple[Metric, dict[str, Any]]]) -> np.ndarray:
    """(step, rank) stored spectra -> (step, metric)."""
    s = np.asarray(s, dtype=np.float64)
    return np.stack([np.asarray(f(s, **kw), dtype=np.float64) for f, kw in funcs], axis=-1)


def spectrum_layer_metrics(
    da: xr.DataArray,
    *,
    metrics: Mapping[str, Metric],
    epsilon: float,
    rtol: Any,
) -> xr.DataArray:
    """Every metric of one layer's stored spectra: ``(step, metric)``, lazy.

    ``rtol(n, d, dtype)`` is the numerical-rank tolerance of the analysis of stored matrices
    (the stored weights and activations are float32).
    """
    n, d = (int(v) for v in da.attrs["matrix_shape"])
    center = bool(da.attrs.get("centered", False))
    special: dict[Any, dict[str, Any]] = {
        numerical_rank: {"rtol": rtol(n, d, np.dtype(np.float32))},
        epsilon_rank: {"epsilon": epsilon, "n_samples": n if center else 1},
    }
    funcs = [(f, special.get(f, {})) for f in metrics.values()]
    data = da.data if isinstance(da.data, dsa.Array) else dsa.from_array(da.data, chunks=-1)
    data = data.rechunk({1: -1})
    out = dsa.map_blocks(
        _block,
        data,
        funcs=funcs,
        dtype=np.float64,
        chunks=(data.chunks[0], (len(funcs),)),
        meta=np.empty((0, 0), dtype=np.float64),
    )
    return xr.DataArray(
        out, dims=("step", "metric"), coords={"step": da["step"].values, "metric": list(metrics)}
    )
