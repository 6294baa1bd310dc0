"""Singular-value spectra of activation and weight matrices, eagerly and over Dask chunks.

One spectrum per (array, step): the singular values of the (optionally sample-centred) matrix,
computed as the square roots of the eigenvalues of its Gram matrix on the smaller side,
accumulated in float64. On these machines this is 3-6x faster than a full SVD
(``docs/storage-notes.md``, "Spectral kernels"), and a float64 Gram matches a float64 SVD where a
float32 Gram lost up to 4 % of effective rank on steep spectra.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import dask.array as dsa
import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from ._metrics import DegenerateSpectrumWarning

__all__ = [
    "BATCH_BYTES",
    "blas_single_thread",
    "gram_singular_values",
    "singular_values",
    "spectra",
    "squeeze_leading",
    "warn_degenerate",
]

_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter: threadpool_limits | None = None


@contextmanager
def blas_single_thread() -> Iterator[None]:
    """Pin BLAS to one thread while any user of this context is inside it.

    BLAS thread counts are process-wide, so a per-task ``threadpool_limits`` would race: one
    task restoring the old limit un-pins its neighbours. This context counts its users, pins
    on the first entry and restores on the last exit. Spectral tasks enter it themselves;
    callers should also wrap their ``compute()`` in it, so the pin is set and restored once,
    from the calling thread (OpenBLAS 0.3.31 reported inconsistent thread counts when a pool
    thread set and restored the limit). With Dask's threaded scheduler each worker thread then
    uses one BLAS thread (``docs/storage-notes.md``, "Dask on 2 cores": oversubscribed BLAS made
    the parallel job slower than a plain loop).

    Examples
    --------
    >>> with blas_single_thread():
    ...     result = dimensionality(run).compute()  # doctest: +SKIP
    """
    global _blas_users, _blas_limiter
    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = threadpool_limits(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


def warn_degenerate(bad: np.ndarray, *, stacklevel: int = 2) -> None:
    """The :class:`DegenerateSpectrumWarning` for the matrices flagged in ``bad`` (any shape)."""
    if bad.any():
        warnings.warn(
            f"singular_values: {int(bad.sum())} of {bad.size} matrices hold NaN/Inf; "
            "their spectra are NaN",
            DegenerateSpectrumWarning,
            stacklevel=stacklevel + 1,
        )


BATCH_BYTES = 16 << 20  # float64 working set per batch of matrices (also a row-block task)


def singular_values(x: np.ndarray, *, center: bool) -> np.ndarray:
    """Singular values of a stack of matrices via the Gram matrix on the smaller side.

    Parameters
    ----------
    x : array_like, shape (..., n, d)
        Matrices; rows are samples for activations (``center=True``), output units for weights.
        Any float dtype; arithmetic is float64.
    center : bool
        Subtract each column's mean over the ``n`` rows first (sample-centring, so ``s**2 / n``
        are the covariance eigenvalues). Weights are not centred.

    Returns
    -------
    numpy.ndarray, shape (..., min(n, d)), float64
        Singular values in descending order (rounding-negative Gram eigenvalues become 0).
        The Gram eigenvalues carry an absolute error of about ``eps * s_1**2``, so values
        below about ``s_1 * sqrt(eps)`` (1.5e-8 relative) are rounding noise: an exactly
        rank-deficient matrix gives a tail of that size, not exact zeros, and a rank cut
        should use a relative tolerance of at least ``sqrt(m * eps)``. They are kept, not
        zeroed, because the tail just above that level (e.g. the float32 rounding of stored
        activations, ~1e-7 relative) is resolved and counts in entropy-based metrics: zeroing
        below ``m * eps * s_1**2`` moved the effective rank of real activations by 1.4e-5.
        A matrix holding NaN or Inf gives an all-NaN spectrum with a
        :class:`DegenerateSpectrumWarning`.

    Examples
    --------
    >>> singular_values(np.diag([3.0, 2.0, 1.0]), center=False)
    array([3., 2., 1.])
    """
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"Expected `x` with shape (..., n, d), got shape {x.shape}")
    n, d = x.shape[-2:]
    lead = x.shape[:-2]
    if min(n, d) == 0:
        return np.zeros((*lead, 0))
    bad = ~np.isfinite(x).all(axis=(-2, -1))  # (...)
    warn_degenerate(bad)
    # float64 copies of a whole chunk (hundreds of MB) cost more in page faults than the
    # arithmetic (x4-5 CPU on a 64-step chunk of 1536 x 512 activations): a few MB of matrices
    # at a time, the same per-matrix arithmetic, so the same bits
    flat, flat_bad = x.reshape(-1, n, d), bad.reshape(-1)
    per = max(1, BATCH_BYTES // (8 * n * d))
    s = np.concatenate(
        [
            _finite_spectra(flat[i : i + per], flat_bad[i : i + per], center)
            for i in range(0, len(flat), per)
        ]
    )
    s = s.reshape(*lead, -1)
    if bad.any():
        s[bad] = np.nan
    return s


def _finite_spectra(x: np.ndarray, bad: np.ndarray, center: bool) -> np.ndarray:
    """(k, n, d) -> (k, min(n, d)) descending singular values (``singular_values``); the
    matrices flagged in ``bad`` (k,) are zeroed first (their spectra are set to NaN later)."""
    x = x.astype(np.float64, copy=False)
    if bad.any():  # only this batch is copied, not the whole chunk
        x = np.where(bad[:, None, None], 0.0, x)
    n, d = x.shape[-2:]
    if center:
        x = x - x.mean(axis=-2, keepdims=True)
    xt = np.swapaxes(x, -1, -2)
    gram = x @ xt if n <= d else xt @ x  # (k, r, r), float64 accumulation
    return gram_singular_values(gram)


def gram_singular_values(gram: np.ndarray) -> np.ndarray:
    """(k, r, r) float64 Gram matrices -> (k, r) descending singular values of their matrices
    (rounding-negative eigenvalues become 0)."""
    lam = np.linalg.eigvalsh(gram)[..., ::-1]  # (k, r) descending
    return np.sqrt(np.maximum(lam, 0.0))


def squeeze_leading(da: xr.DataArray) -> xr.DataArray:
    """Drop singleton dims right after ``step`` while more than two matrix dims remain.

    A ``(step, 1, length, d)`` parameter (a batch-shaped position table) is the ``length x d``
    matrix, not ``1 x (length * d)``, whose spectrum has a single value.

    Examples
    --------
    >>> da = xr.DataArray(np.zeros((3, 1, 6, 4)), dims=("step", "a", "b", "c"))
    >>> squeeze_leading(da).dims
    ('step', 'b', 'c')
    """
    while da.ndim > 3 and da.shape[1] == 1:
        da = da.isel({da.dims[1]: 0}, drop=True)
    return da


def _block_spectra(block: np.ndarray, *, center: bool) -> np.ndarray:
    """(step, n, d...) -> (step, min(n, prod(d...))), BLAS pinned to one thread."""
    block = block.reshape(*block.shape[:2], -1)  # conv kernels: out x (in * k...)
    with blas_single_thread():
        return singular_values(block, center=center)


def spectra(da: xr.DataArray, *, center: bool) -> xr.DataArray:
    """Singular-value spectrum of every step of a ``(step, a, b, ...)`` array.

    Parameters
    ----------
    da : xarray.DataArray, dims (step, a, b, ...)
        Activations ``(step, sample, feature)`` or weights ``(step, out, in, k...)``; trailing
        dims beyond the third are flattened into the columns (conv kernels become
        ``out x (in * k...)``) after leading singleton dims are dropped
        (:func:`squeeze_leading`). Dask-backed arrays stay lazy: one task per ``step`` chunk
        (other dims are merged into one chunk), each running with one BLAS thread. Arrays
        chunked along ``a`` (the row blocks of a sharded run) whose Gram side is small enough
        are not merged: their Gram matrix is summed over blocks, so no task reads a whole
        matrix (``_row_blocks``; equal to float tolerance, not bit for bit).
    center : bool
        Sample-centre each matrix (columns minus their mean over rows); ``True`` for
        activations, ``False`` for weights.

    Returns
    -------
    xarray.DataArray, dims (step, component)
        Descending float64 singular values (see :func:`singular_values`), chunked like
        ``da`` along ``step``; ``component`` runs over ``min(a, b * ...)``.
    """
    from ._row_blocks import row_block_spectra, splits_over_rows  # built on this module

    if not isinstance(da, xr.DataArray) or da.ndim < 3:
        raise ValueError(
            "Expected `da` to be an xarray.DataArray with dims (step, a, b, ...), got "
            f"{type(da).__name__} with dims {getattr(da, 'dims', None)}"
        )
    da = squeeze_leading(da)
    step_dim = da.dims[0]
    n = da.shape[1]
    d = int(np.prod(da.shape[2:]))
    r = min(n, d)
    data = da.data
    s: dsa.Array | np.ndarray
    if isinstance(data, dsa.Array) and splits_over_rows(data):
        s = row_block_spectra(data, center=center)  # sharded: no task reads a whole matrix
    elif isinstance(data, dsa.Array):
        data = data.rechunk({i: -1 for i in range(1, da.ndim)})
        s = dsa.map_blocks(
            _block_spectra,
            data,
            center=center,
            dtype=np.float64,
            drop_axis=list(range(2, da.ndim)),
            chunks=(data.chunks[0], (r,)),
            meta=np.empty((0, 0), dtype=np.float64),
        )
    else:
        s = _block_spectra(np.asarray(data), center=center)
    coords = {k: v for k, v in da.coords.items() if v.dims == (step_dim,)}
    return xr.DataArray(
        s,
        dims=(step_dim, "component"),
        coords={**coords, "component": np.arange(r)},
        name=da.name,
        attrs={
            "long_name": "singular value",
            "units": da.attrs.get("units", "1"),
            "centered": int(center),
            "method": "sqrt of float64 Gram eigenvalues (smaller side)",
        },
    )
