"""Spectra of row-chunked (sharded) matrices from Gram pieces, against a numpy SVD of the
assembled matrix; the graph's block shapes show that no task holds a whole matrix."""

import itertools

import dask.array as dsa
import numpy as np
import pytest
import xarray as xr
from gram_bounds import gram_abs_error
from test_capture_sharded import _torchrun

from dimlapse.analyze import (
    SPECTRAL_METRICS,
    DegenerateSpectrumWarning,
    blas_single_thread,
    dimensionality,
    open_run,
    singular_values,
    spectra,
)
from dimlapse.analyze._dimensionality import numerical_rank_rtol
from dimlapse.analyze._row_blocks import row_block_spectra, splits_over_rows


@pytest.fixture(autouse=True)
def _pinned():
    """Every compute here pinned from this thread, as callers do (``blas_single_thread``): a
    pool thread that sets and restores the BLAS limit itself leaves OpenBLAS reporting other
    thread counts to later tests (test_analyze_spectra.py's pin test failed after these)."""
    with blas_single_thread():
        yield


def svd(x, *, center):
    x = np.asarray(x, dtype=np.float64)
    if center:
        x = x - x.mean(axis=-2, keepdims=True)
    return np.linalg.svd(x, compute_uv=False)


def row_blocked(x, rows, steps=None):
    """A dask array of ``x`` (step, n, ...) made of separate row blocks (as a store's shards
    are): the graph never holds ``x`` whole."""
    cuts = np.cumsum([0, *rows])
    assert cuts[-1] == x.shape[1]
    blocks = [
        dsa.from_array(x[:, a:b], chunks=(steps or x.shape[0], *x.shape[1:]))
        for a, b in itertools.pairwise(cuts)
    ]
    return dsa.concatenate(blocks, axis=1)


def whole_blocks(arr, shapes):
    """(layer, block shape) of every block in ``arr``'s graph whose last two dims are a whole
    ``n x d`` matrix of ``shapes`` (either orientation), from the graph layers' chunks."""
    wholes = {tuple(s) for s in shapes} | {tuple(s)[::-1] for s in shapes}
    found = []
    for name, layer in arr.__dask_graph__().layers.items():
        chunks = (layer.collection_annotations or {}).get("chunks")
        if chunks is None or len(chunks) < 3:
            continue
        for block in itertools.product(chunks[-2], chunks[-1]):
            if block in wholes:
                found.append((name, block))
    return found


CASES = [  # (n, d...), row blocks: uneven, 1-row blocks, columns and rows the smaller side
    ((40, 8), (13, 27)),
    ((40, 8), (1, 1, 38)),
    ((24, 2, 3), (10, 14)),  # conv-like: columns are 2 x 3 flattened
    ((6, 40), (3, 3)),
    ((7, 40), (1, 6)),
    ((3, 64), (1, 1, 1)),
]


@pytest.mark.parametrize(("shape", "rows"), CASES)
@pytest.mark.parametrize("center", [True, False])
def test_row_blocks_match_the_svd_of_the_assembled_matrix(shape, rows, center):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5, *shape)) * rng.exponential(size=shape[1:]) + 2.0).astype(
        np.float32
    )
    lazy = row_block_spectra(row_blocked(x, rows, steps=2), center=center)
    assert lazy.chunks[0] == (2, 2, 1)  # chunked like the input along step
    s = lazy.compute()
    n, d = shape[0], int(np.prod(shape[1:]))
    ref = svd(x.reshape(5, n, d), center=center)
    assert s.shape == ref.shape == (5, min(n, d))
    if center and n <= d:  # centring n rows removes one direction: rounding noise in both
        assert (s[:, -1] <= 1e-7 * s[:, :1]).all()
        s, ref = s[:, :-1], ref[:, :-1]
    bound = gram_abs_error(ref, n, d)
    assert (np.abs(s - ref) <= bound).all(), np.max(np.abs(s - ref) / bound)
    assert (np.diff(s, axis=-1) <= 0).all()


@pytest.mark.parametrize(("n", "d", "rows"), [(60, 8, (20, 40)), (8, 60, (5, 3))])
def test_rank_deficient_row_blocks_keep_the_rank(n, d, rows):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, n, 3)) @ rng.standard_normal((3, 3, d))  # rank 3
    s = row_block_spectra(row_blocked(x, rows), center=False).compute()
    r = min(n, d)
    assert (s[:, 3:] <= np.sqrt(r * np.finfo(float).eps) * s[:, :1]).all()
    assert (s[:, :3] > 1e-3 * s[:, :1]).all()
    rtol = numerical_rank_rtol(n, d, np.dtype(np.float64))
    np.testing.assert_array_equal(SPECTRAL_METRICS["numerical_rank"](s, rtol=rtol), [3, 3, 3])


def test_centring_a_large_offset_in_two_passes_keeps_the_precision_of_one_block():
    # post-activation-like columns: offset 1e3, spread 1e-2 (s_1 of the raw matrix ~1e5x the
    # centred one). sum x^T x - n mu mu^T would lose ~10 digits here; two passes lose none
    rng = np.random.default_rng(2)
    x = 1e3 + 1e-2 * rng.standard_normal((4, 400, 16)) @ np.diag(0.8 ** np.arange(16))
    ref = svd(x, center=True)
    one = singular_values(x, center=True)
    blocks = row_block_spectra(row_blocked(x, (150, 250)), center=True).compute()
    err_one, err_blocks = np.abs(one - ref) / ref, np.abs(blocks - ref) / ref
    assert err_blocks.max() < 1e-6 and err_blocks.max() <= 10 * max(err_one.max(), 1e-12)
    naive = x.sum(axis=1, keepdims=True)  # the one-pass formula, as a control that can fail
    gram = np.swapaxes(x, 1, 2) @ x - np.swapaxes(naive, 1, 2) @ naive / 400
    lam = np.sqrt(np.maximum(np.linalg.eigvalsh(gram)[:, ::-1], 0))
    assert (np.abs(lam - ref) / ref).max() > 1e3 * err_blocks.max()


@pytest.mark.parametrize(("n", "d", "rows"), [(40, 6, (13, 27)), (6, 40, (4, 2))])
def test_a_nan_in_one_block_gives_that_step_a_nan_spectrum_and_the_same_warning(n, d, rows):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, n, d))
    x[2, n - 1, 1] = np.nan  # in the last block
    with pytest.warns(DegenerateSpectrumWarning, match="1 of 4 matrices hold NaN/Inf") as w:
        s = row_block_spectra(row_blocked(x, rows), center=True).compute()
    with pytest.warns(DegenerateSpectrumWarning) as merged:
        singular_values(x, center=True)
    assert str(w[0].message) == str(merged[0].message)
    assert np.isnan(s[2]).all() and np.isfinite(s[[0, 1, 3]]).all()
    keep = [0, 1, 3]
    ref = svd(x[keep], center=True)[:, : min(n, d) - 1]
    np.testing.assert_allclose(s[keep][:, : min(n, d) - 1], ref, rtol=1e-9)


def test_spectra_splits_where_the_gram_side_allows_it_and_merges_otherwise():
    rng = np.random.default_rng(4)
    tall = rng.standard_normal((6, 50, 8)).astype(np.float32)  # 16 * 8^2 < 50 * 8 * 4
    wide = rng.standard_normal((6, 8, 50)).astype(np.float32)
    square = rng.standard_normal((6, 30, 30)).astype(np.float32)  # its Gram outweighs it
    for x, splits in ((tall, True), (wide, True), (square, False)):
        data = row_blocked(x, (x.shape[1] // 2, x.shape[1] - x.shape[1] // 2), steps=3)
        assert splits_over_rows(data) is splits
        da = xr.DataArray(data, dims=("step", "a", "b"), coords={"step": np.arange(6)})
        s = spectra(da, center=True)
        assert s.chunks == ((3, 3), (min(x.shape[1:]),))
        assert (whole_blocks(s.data, [x.shape[1:]]) == []) is splits
        ref = spectra(da.compute(), center=True)
        # atol: the wide matrix's centred tail value is Gram rounding noise (~1e-8 s_1)
        xr.testing.assert_allclose(s.compute(), ref, rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize(
    ("n", "d", "dtype", "splits"),
    [
        (33, 8, np.float32, True),  # long side > 4x the short: two float64 pieces are smaller
        (32, 8, np.float32, False),  # exactly 4x: the pieces weigh as much as the matrix
        (8, 33, np.float32, True),
        (17, 8, np.float64, True),  # float64 storage: > 2x suffices
        (16, 8, np.float64, False),
        (64, 64, np.float32, False),
    ],
)
def test_the_gram_side_allows_splitting_when_its_pieces_are_smaller_than_the_matrix(
    n, d, dtype, splits
):
    data = row_blocked(np.zeros((2, n, d), dtype), (n // 2, n - n // 2))
    assert splits_over_rows(data) is splits
    assert not splits_over_rows(data.rechunk({1: -1}))  # one row chunk: nothing to split


def test_an_array_in_one_row_chunk_keeps_the_merged_path_bit_for_bit():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 50, 8)).astype(np.float32)
    da = xr.DataArray(dsa.from_array(x, chunks=(3, 50, 8)), dims=("step", "a", "b"))
    assert not splits_over_rows(da.data)
    s = spectra(da, center=True)
    np.testing.assert_array_equal(s.values, singular_values(x, center=True))
    assert whole_blocks(s.data, [(50, 8)])  # the control: one task reads the whole matrix


class _Run:
    def __init__(self, weights, activations):
        self.weights, self.activations = weights, activations


def test_dimensionality_of_row_chunked_arrays_equals_one_block_and_unsharded_bits():
    rng = np.random.default_rng(6)
    acts = rng.standard_normal((20, 48, 5)).astype(np.float32)
    w = rng.standard_normal((20, 3, 30)).astype(np.float32)
    steps = {"step": 5 * np.arange(20)}
    blocked = _Run(
        xr.Dataset({"fc.weight": (("step", "o", "i"), row_blocked(w, (2, 1), steps=4))}, steps),
        xr.Dataset({"fc": (("step", "s", "f"), row_blocked(acts, (24, 24), steps=4))}, steps),
    )
    one = _Run(blocked.weights.chunk({"o": -1}), blocked.activations.chunk({"s": -1}))
    a = dimensionality(blocked, twonn_stride=0)
    b = dimensionality(one, twonn_stride=0)
    assert not whole_blocks(a.dimensionality.data, [(48, 5), (3, 30)])
    assert whole_blocks(b.dimensionality.data, [(48, 5), (3, 30)])
    a, b = a.compute(), b.compute()
    np.testing.assert_allclose(a.dimensionality, b.dimensionality, rtol=1e-9)
    # the unsharded arrays' path is the merged one of old: each step's metrics of
    # singular_values, bit for bit
    for kind, x, center in (("weight", w, False), ("activation", acts, True)):
        s = singular_values(x, center=center)
        layer = "fc" if kind == "activation" else "fc.weight"
        got = b.dimensionality.sel(kind=kind, layer=layer)
        for metric in ("stable_rank", "effective_rank", "participation_ratio"):
            np.testing.assert_array_equal(
                got.sel(metric=metric).values, SPECTRAL_METRICS[metric](s)
            )


TRAIN = """
import sys, torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from dimlapse.capture import CaptureOptions, Recorder

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.set_num_threads(1)
torch.manual_seed(0)
# (24, 4) and (3, 24) weights, (40, 3) activations: long sides > 4x the short (Gram pieces
# smaller than the matrix); (40, 24) activations are merged. 3 rows over 2 ranks: 2 + 1
model = nn.Sequential(nn.Linear(4, 24), nn.Tanh(), nn.Linear(24, 3))
fully_shard(model[0])
fully_shard(model)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
probe = torch.randn(40, 4, generator=torch.Generator().manual_seed(9))
with Recorder(model, sys.argv[1], every=2, probe=probe,
              options=CaptureOptions(flush_every=2)) as rec:
    for step in range(1, 9):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(12, 4, generator=g), torch.randn(12, 3, generator=g)
        per = 12 // world
        loss = (model(x[rank * per:(rank + 1) * per]) - y[rank * per:(rank + 1) * per])
        loss = loss.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.step(loss)
print("rank", rank, rec.status, flush=True)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_a_sharded_store_analyses_over_its_shards_like_one_block(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    out = _torchrun(script, tmp_path / "fsdp.zarr", "fsdp", 2)
    assert out.returncode == 0, out.stderr[-3000:]
    run = open_run(tmp_path / "fsdp.zarr")
    assert run.status == "complete"
    split = {"0.weight": (24, 4), "2.weight": (3, 24), "2": (40, 3)}
    for name, shape in split.items():
        da = run.weights[name] if "weight" in name else run.activations[name]
        assert da.shape[1:] == shape and len(da.data.chunks[1]) == 2  # the ranks' blocks
    assert run.weights["2.weight"].data.chunks[1] == (2, 1)
    a = dimensionality(run, twonn_stride=0)
    assert not whole_blocks(a.dimensionality.data, list(split.values()))
    one = _Run(
        run.weights.chunk({d: -1 for d in run.weights.dims}),
        run.activations.chunk({d: -1 for d in run.activations.dims}),
    )
    b = dimensionality(one, twonn_stride=0)
    assert whole_blocks(b.dimensionality.data, list(split.values()))  # the control
    np.testing.assert_allclose(a.dimensionality.values, b.dimensionality.values, rtol=1e-9)
    full = dimensionality(run).compute()  # TwoNN merges rows (nearest neighbours): same bits
    xr.testing.assert_identical(full.twonn, dimensionality(one).twonn.compute())
