"""Spectra of row-chunked matrices (sharded runs) from Gram pieces, never a whole matrix per task.

A sharded (FSDP2) run stores each weight as row blocks, one per rank (``Shard(0)``), and each
probe activation as row blocks of examples; its dask arrays are chunked the same way. The
singular values of ``X`` (n x d) are the square roots of the eigenvalues of its Gram matrix on
the smaller side, and that Gram matrix is a sum over blocks, so ``X`` is never assembled:

- columns the smaller side (``d <= n``): ``X^T X = sum_i X_i^T X_i`` over the row blocks, one
  task per (step chunk, row block), then a dask tree reduction to ``(step, d, d)``. Centred
  (activations): the column means first (a tree reduction of block sums), then each block
  centred by the global mean before its product (two passes; ``sum x^T x - n mu mu^T`` cancels
  catastrophically).
- rows the smaller side (``n < d``): ``X X^T = sum_c X_c X_c^T`` over ``k`` column blocks, the
  ``k`` row blocks rechunked into them (each task holds ``n x d / k``); a column block centres
  itself exactly, the means being per column. Measured against block pairs ``X_i X_j^T`` (two
  row blocks per task: on 2 ranks, the whole matrix; 64 MB per task against 16 MB for column
  blocks and 32 MB merged, 4-step chunks of 512 x 4096 float32) at the same CPU within 10 %.

Where the Gram side does not allow it (:func:`splits_over_rows`: near-square matrices, whose
float64 Gram outweighs the float32 matrix) the matrix is merged as for an unsharded run: forced
Gram pieces read 2-4x the bytes per task and cost about 2x the CPU there (1024 x 1024).
"""

from __future__ import annotations

import dask.array as dsa
import numpy as np

from ._spectra import BATCH_BYTES, blas_single_thread, gram_singular_values, warn_degenerate

__all__ = ["row_block_spectra", "splits_over_rows"]


def splits_over_rows(data: dsa.Array) -> bool:
    """Whether a ``(step, n, d...)`` dask array's spectra are computed from its row blocks.

    True when it is chunked along ``n`` and the Gram side allows it: the float64 Gram pieces
    a reduction task sums (two of ``m x m``, ``m = min(n, d)``, 16 m^2 bytes a step) are smaller
    than the whole stored matrix (``n d`` items), so no task holds as much as merging would.
    For float32 that is a long side more than 4x the short one; a square float32 matrix's
    Gram alone is twice its size, so it is merged.
    """
    if data.ndim < 3 or data.numblocks[1] < 2:
        return False
    n, d = data.shape[1], int(np.prod(data.shape[2:]))
    m = min(n, d)
    return m > 0 and 16 * m * m < n * d * data.dtype.itemsize


def _block_gram(block: np.ndarray, mean: np.ndarray | None, *, local: bool) -> np.ndarray:
    """(s, a, m) block -> (s, 1, m, m) float64 ``x^T x``, with ``x`` the block minus ``mean``
    (s, 1, m) when given, or minus its own row means when ``local``. A few MB of float64 at a
    time, as in ``singular_values``."""
    s, a, m = block.shape
    out = np.empty((s, 1, m, m))
    per = max(1, BATCH_BYTES // (8 * max(1, a * m)))
    with blas_single_thread():
        for i in range(0, s, per):
            x = block[i : i + per].astype(np.float64)  # (b, a, m)
            if mean is not None:
                x -= mean[i : i + per]
            if local:
                x -= x.mean(axis=-1, keepdims=True)
            out[i : i + per, 0] = np.swapaxes(x, -1, -2) @ x
    return out


def _gram_spectra(gram: np.ndarray) -> np.ndarray:
    """(s, m, m) float64 Gram -> (s, m) descending singular values; a Gram holding NaN/Inf
    (its matrix did) gives a NaN spectrum with ``singular_values``'s warning."""
    bad = ~np.isfinite(gram).all(axis=(-2, -1))  # (s,)
    warn_degenerate(bad)
    if bad.any():
        gram = np.where(bad[:, None, None], 0.0, gram)
    with blas_single_thread():
        s = gram_singular_values(gram)  # (s, m)
    s[bad] = np.nan
    return s


def row_block_spectra(data: dsa.Array, *, center: bool) -> dsa.Array:
    """Singular values of every step of a row-chunked ``(step, n, d...)`` dask array.

    Parameters
    ----------
    data : dask.array.Array, shape (step, n, d...)
        Matrices chunked along ``n`` (one block per rank of a sharded run); trailing dims are
        flattened into ``d`` columns (conv kernels: ``out x (in * k...)``).
    center : bool
        Subtract each column's mean over the ``n`` rows (activations).

    Returns
    -------
    dask.array.Array, shape (step, min(n, d)), float64
        Descending singular values, chunked like ``data`` along ``step``: those of
        ``singular_values`` on the assembled matrices to float tolerance (the Gram is summed
        in another order), NaN with a ``DegenerateSpectrumWarning`` where a matrix holds
        NaN/Inf. No task reads a whole ``n x d`` matrix.
    """
    data = data.rechunk({i: -1 for i in range(2, data.ndim)})
    n, d = data.shape[1], int(np.prod(data.shape[2:]))
    x = data.reshape(data.shape[0], n, d)  # (step, n, d): trailing dims were one chunk
    k = x.numblocks[1]
    mean = None
    if d <= n:  # X^T X over the row blocks X_i (step, n_i, d)
        if center:
            mean = x.sum(axis=1, dtype=np.float64, keepdims=True) / n  # (step, 1, d)
    else:  # X X^T over column blocks: (X^T)_c (step, d / k, n), rows of X^T = columns of X
        x = x.transpose(0, 2, 1).rechunk({1: -(-d // k), 2: -1})
    m = x.shape[2]
    pieces = dsa.map_blocks(
        _block_gram,
        x,
        mean,
        local=center and d > n,
        new_axis=3,
        chunks=(x.chunks[0], (1,) * x.numblocks[1], (m,), (m,)),
        dtype=np.float64,
        meta=np.empty((0, 0, 0, 0)),
    )  # (step, block, m, m)
    gram = pieces.sum(axis=1, split_every=2)  # (step, m, m): a tree, two pieces per task
    return dsa.map_blocks(
        _gram_spectra,
        gram,
        drop_axis=2,
        chunks=(x.chunks[0], (m,)),
        dtype=np.float64,
        meta=np.empty((0, 0)),
    )
