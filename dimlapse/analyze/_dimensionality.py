"""The dimensionality job: spectral metrics per (kind, layer, step) and TwoNN on activations."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr

from ._metrics import SPECTRAL_METRICS, epsilon_rank, numerical_rank
from ._row_blocks import row_block_spectra, splits_over_rows
from ._spectra import blas_single_thread, singular_values, squeeze_leading
from ._stored_spectra import spectrum_layer_metrics, stored_spectra
from ._twonn import twonn

__all__ = ["DEFAULT_TWONN_STRIDE", "dimensionality", "numerical_rank_rtol"]

DEFAULT_TWONN_STRIDE = 10  # capture steps between TwoNN estimates (160 points on 1,600 steps)
DEFAULT_EPSILON = 1e-3  # epsilon-rank threshold on Gram eigenvalues
_MIN_CHUNK, _MAX_CHUNK = 16, 64  # steps per task (docs/storage-notes.md, "Dask on 2 cores")

Metric = Callable[..., np.ndarray]


def _metric_block(
    block: np.ndarray, *, center: bool, funcs: Sequence[tuple[Metric, dict[str, Any]]]
) -> np.ndarray:
    """(step, n, d...) -> (step, metric): one spectrum per step, every metric from it."""
    block = block.reshape(*block.shape[:2], -1)  # conv kernels: out x (in * k...)
    with blas_single_thread():
        s = singular_values(block, center=center)  # (step, rank)
    return _spectrum_metrics(s, funcs=funcs)


def _spectrum_metrics(
    s: np.ndarray, *, funcs: Sequence[tuple[Metric, dict[str, Any]]]
) -> np.ndarray:
    """(step, rank) spectra -> (step, metric)."""
    return np.stack([np.asarray(f(s, **kw), dtype=np.float64) for f, kw in funcs], axis=-1)


def _twonn_block(block: np.ndarray, *, discard_fraction: float) -> np.ndarray:
    """(step, n, d) -> (step,) TwoNN dimension of each step's rows."""
    with blas_single_thread():
        return np.array([twonn(x, discard_fraction=discard_fraction) for x in block])


def step_chunked(da: xr.DataArray, *, keep_rows: bool = False) -> dsa.Array:
    """Dask data of `da`, one chunk over the non-step dims, 16-64 steps per chunk.

    Chunks smaller than 16 steps are merged in whole multiples, so task boundaries stay
    aligned with the store's chunks; larger chunks are left as they are. ``keep_rows`` keeps
    the chunks of dim 1 (the row blocks of a sharded run) and merges only the dims after it.
    """
    data = da.data if isinstance(da.data, dsa.Array) else dsa.from_array(da.data, chunks=-1)
    data = data.rechunk({i: -1 for i in range(2 if keep_rows else 1, data.ndim)})
    first = data.chunks[0][0] if data.chunks[0] else 1
    if first < _MIN_CHUNK:
        data = data.rechunk({0: first * max(1, _MAX_CHUNK // first)})
    return data


def _resolve_metrics(metrics: Sequence[str] | Mapping[str, Metric] | None) -> dict[str, Metric]:
    if metrics is None:
        return dict(SPECTRAL_METRICS)
    if isinstance(metrics, Mapping):
        bad = [k for k, v in metrics.items() if not callable(v)]
        if bad:
            raise ValueError(f"Expected `metrics` values to be callables, got {bad!r} that are not")
        return dict(metrics)
    if isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics):
        raise ValueError(
            f"Expected `metrics` to be a list of names from {sorted(SPECTRAL_METRICS)}, a "
            f"mapping name -> function, or None, got {metrics!r}"
        )
    unknown = [m for m in metrics if m not in SPECTRAL_METRICS]
    if unknown or not metrics:
        raise ValueError(
            f"Unknown `metrics` {unknown or metrics!r}; valid names: {sorted(SPECTRAL_METRICS)}"
        )
    return {m: SPECTRAL_METRICS[m] for m in metrics}


def _matrices(ds: xr.Dataset | None, *, min_ndim: int) -> dict[str, xr.DataArray]:
    """Data variables of a group usable as (step, n, d...) matrices, keyed by layer name."""
    if ds is None:
        return {}
    arrays = {
        str(k): squeeze_leading(v)
        for k, v in ds.data_vars.items()
        if v.ndim >= min_ndim and v.dims[0] == "step" and k != "step"
    }
    arrays = {k: v for k, v in arrays.items() if v.ndim >= min_ndim}
    # a root parameter (e.g. a position table `pos`) has no owning module: use its own name
    owners = [str(v.attrs.get("layer") or k) for k, v in arrays.items()]
    # a module owning several matrices (e.g. attention in/out projections): param names
    return {
        (owner if owners.count(owner) == 1 else name): da
        for (name, da), owner in zip(arrays.items(), owners, strict=True)
    }


def numerical_rank_rtol(n: int, d: int, dtype: np.dtype) -> float:
    """Relative tolerance of ``numerical_rank`` for an (n, d) matrix stored as ``dtype``.

    ``max(n, d) * eps(dtype)``, numpy.linalg.matrix_rank's default with the eps of the stored
    dtype (float32 rounding must not count as rank), but never below ``sqrt(min(n, d) *
    eps64)``, the resolution of the float64 Gram spectrum.
    """
    eps64 = float(np.finfo(np.float64).eps)
    return max(max(n, d) * float(np.finfo(dtype).eps), float(np.sqrt(min(n, d) * eps64)))


def _float_dtype(da: xr.DataArray) -> np.dtype:
    return da.dtype if np.issubdtype(da.dtype, np.floating) else np.dtype(np.float64)


def _layer_metrics(
    da: xr.DataArray, *, center: bool, metrics: dict[str, Metric], epsilon: float
) -> xr.DataArray:
    n, d = da.shape[1], int(np.prod(da.shape[2:]))
    special: dict[Any, dict[str, Any]] = {
        numerical_rank: {"rtol": numerical_rank_rtol(n, d, _float_dtype(da))},
        epsilon_rank: {"epsilon": epsilon, "n_samples": n if center else 1},
    }
    funcs = [(f, special.get(f, {})) for f in metrics.values()]
    data = step_chunked(da, keep_rows=True)
    if splits_over_rows(data):  # a sharded run's row blocks: Gram pieces, no whole matrix per task
        s = row_block_spectra(data, center=center)  # (step, rank)
        out = dsa.map_blocks(
            _spectrum_metrics,
            s,
            funcs=funcs,
            dtype=np.float64,
            chunks=(s.chunks[0], (len(funcs),)),
            meta=np.empty((0, 0), dtype=np.float64),
        )
    else:
        data = data.rechunk({1: -1})  # unsharded arrays have one row chunk: no rechunk
        out = dsa.map_blocks(
            _metric_block,
            data,
            center=center,
            funcs=funcs,
            dtype=np.float64,
            drop_axis=list(range(2, data.ndim)),
            chunks=(data.chunks[0], (len(funcs),)),
            meta=np.empty((0, 0), dtype=np.float64),
        )  # (step, metric)
    return xr.DataArray(
        out, dims=("step", "metric"), coords={"step": da["step"].values, "metric": list(metrics)}
    )


def _layer_twonn(da: xr.DataArray, *, stride: int, discard_fraction: float) -> xr.DataArray:
    sub = da.isel(step=slice(None, None, stride))
    data = step_chunked(sub)
    out = dsa.map_blocks(
        _twonn_block,
        data,
        discard_fraction=discard_fraction,
        dtype=np.float64,
        drop_axis=[1, 2],
        meta=np.empty((0,), dtype=np.float64),
    )
    return xr.DataArray(out, dims=("twonn_step",), coords={"twonn_step": sub["step"].values})


def _definition(f: Callable[..., Any]) -> str:
    """A function's docstring up to its numpydoc sections: the formula and the reference."""
    doc = inspect.getdoc(f) or str(getattr(f, "__name__", repr(f)))
    return doc.split("\nParameters\n")[0].strip().replace("\n", " ")


def dimensionality(
    run: Any,
    *,
    metrics: Sequence[str] | Mapping[str, Metric] | None = None,
    twonn_stride: int | None = None,
    epsilon: float = DEFAULT_EPSILON,
    twonn_discard_fraction: float = 0.1,
) -> xr.Dataset:
    """Spectral dimensionality of every weight matrix and activation layer at every step.

    Parameters
    ----------
    run : object with ``.weights`` and ``.activations`` xarray Datasets
        As returned by :func:`dimlapse.analyze.open_run` (layout of ``docs/store-layout.md``).
        Activations ``(step, sample, feature)`` are sample-centred; weights ``(step, out,
        in, k...)`` are *not* centred (the spectrum of the linear map itself) and conv kernels
        are reshaped to ``out x (in * k...)``; 1-D parameters (biases) are skipped. Leading
        singleton dims are dropped first, so a ``(1, length, d)`` position table is the
        ``length x d`` matrix; a parameter without an owning module is named by itself.
    metrics : list of names, mapping name -> function, or None
        Metrics from :data:`SPECTRAL_METRICS` (default: all of them) or custom functions of a
        descending spectrum ``(..., rank)``.
    twonn_stride : int or None
        TwoNN on activations at every ``twonn_stride``-th capture step; None uses
        ``DEFAULT_TWONN_STRIDE`` (10), 0 skips TwoNN.
    epsilon : float
        Threshold of ``epsilon_rank`` on Gram eigenvalues (``s**2 / n`` for activations with
        ``n`` probe rows, ``s**2`` for weights).
    twonn_discard_fraction : float
        Share of the largest TwoNN ratios left out of the fit.

    Returns
    -------
    xarray.Dataset
        Lazy (Dask) variables ``dimensionality`` (kind, layer, step, metric), NaN where a
        (kind, layer) pair does not exist, and ``twonn`` (layer, twonn_step); attrs hold each
        metric's definition and every parameter. Nothing is computed until the caller
        computes or saves the result (one pass over the store).
    """
    chosen = _resolve_metrics(metrics)
    if twonn_stride is None:
        twonn_stride = DEFAULT_TWONN_STRIDE
    if isinstance(twonn_stride, bool) or not isinstance(twonn_stride, int) or twonn_stride < 0:
        raise ValueError(
            f"Expected `twonn_stride` to be an int >= 0 (0 skips TwoNN) or None, got "
            f"{twonn_stride!r}"
        )
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not epsilon > 0:
        raise ValueError(f"Expected `epsilon` to be a positive float, got {epsilon!r}")
    if not (hasattr(run, "weights") and hasattr(run, "activations")):
        raise TypeError(
            "Expected `run` to have `.weights` and `.activations` xarray Datasets (as returned "
            f"by dimlapse.analyze.open_run), got {type(run).__name__}"
        )
    acts = _matrices(run.activations, min_ndim=3)
    weights = _matrices(run.weights, min_ndim=3)
    stored = stored_spectra(run)  # spectra mode: every capture step's spectra, stored
    if not acts and not weights and not stored:
        raise ValueError(
            "Expected `run` to hold at least one activation (step, sample, feature) or weight "
            "(step, out, in...) array, found none"
        )

    kinds = []
    for kind, arrays, center in (("weight", weights, False), ("activation", acts, True)):
        if kind in stored:
            arrays = stored[kind]
            per_layer = [
                spectrum_layer_metrics(
                    da, metrics=chosen, epsilon=epsilon, rtol=numerical_rank_rtol
                )
                for da in arrays.values()
            ]
        elif arrays:
            per_layer = [
                _layer_metrics(da, center=center, metrics=chosen, epsilon=epsilon)
                for da in arrays.values()
            ]
        else:
            continue
        kinds.append(
            xr.concat(per_layer, dim="layer", join="outer").assign_coords(
                layer=list(arrays), kind=kind
            )
        )
    dim = xr.concat(kinds, dim="kind", join="outer", fill_value=np.nan)
    order = list(
        dict.fromkeys([*stored.get("weight", weights), *stored.get("activation", acts)])
    )  # store order, not the join's sort
    dim = dim.sel(layer=order).transpose("kind", "layer", "step", "metric")
    dim.attrs = {"long_name": "spectral dimensionality", "units": "1"}
    out = xr.Dataset({"dimensionality": dim})

    if twonn_stride and acts:
        tw = [
            _layer_twonn(da, stride=twonn_stride, discard_fraction=twonn_discard_fraction)
            for da in acts.values()
        ]
        out["twonn"] = xr.concat(tw, dim="layer", join="outer").assign_coords(layer=list(acts))
        out["twonn"].attrs = {"long_name": "TwoNN intrinsic dimension", "units": "1"}

    params = {
        "metrics": list(chosen),
        "twonn_stride": twonn_stride,
        "twonn_discard_fraction": twonn_discard_fraction,
        "epsilon_rank_epsilon": epsilon,
        "epsilon_rank_gram": "s**2 / n_rows for activations, s**2 for weights",
        "numerical_rank_rtol": "max(n, d) * eps of the stored dtype per matrix "
        "(numpy.linalg.matrix_rank's default), at least sqrt(min(n, d) * eps64) (Gram resolution)",
        "rankme_epsilon": 1e-7,
        "activations": "sample-centred (column means over probe rows removed)",
        "weights": "not centred; conv kernels reshaped to out x (in * k...); 1-D params skipped",
        "spectrum": "sqrt of float64 Gram eigenvalues on the smaller side (resolution about "
        "s_1 * sqrt(eps))",
    }
    out.attrs = {
        "job": "dimensionality",
        "parameters": json.dumps(params, sort_keys=True),
        **{k: v for k, v in params.items() if not isinstance(v, list)},
        "metric_definitions": json.dumps({k: _definition(f) for k, f in chosen.items()}),
        "twonn_definition": _definition(twonn),
    }
    every = getattr(run, "attrs", {}).get("every") if hasattr(run, "attrs") else None
    if isinstance(every, int):
        out.attrs["every"] = every
    return out
