"""Gram-trick spectra against a full SVD, eagerly and through Dask."""

import threading

import dask
import dask.array as dsa
import numpy as np
import pytest
import xarray as xr
from gram_bounds import gram_abs_error
from threadpoolctl import threadpool_info

from dimlapse.analyze import (
    SPECTRAL_METRICS,
    DegenerateSpectrumWarning,
    blas_single_thread,
    singular_values,
    spectra,
)
from dimlapse.analyze._dimensionality import numerical_rank_rtol


def svd(x, *, center):
    x = np.asarray(x, dtype=np.float64)
    if center:
        x = x - x.mean(axis=-2, keepdims=True)
    return np.linalg.svd(x, compute_uv=False)


@pytest.mark.parametrize("shape", [(40, 12), (12, 40), (3, 25, 25), (2, 3, 64, 9)])
@pytest.mark.parametrize("center", [True, False])
def test_matches_full_svd(shape, center):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * rng.exponential(size=shape[-1])  # uneven columns
    s = singular_values(x, center=center)
    assert s.shape == (*shape[:-2], min(shape[-2:]))
    assert s.dtype == np.float64
    ref = svd(x, center=center)
    if center and shape[-2] <= shape[-1]:
        # centring n rows removes one direction: the last value is rounding noise in both
        assert (s[..., -1] <= 1e-7 * s[..., 0]).all()
        s, ref = s[..., :-1], ref[..., :-1]
    # relative error ~ eps * (s_1 / s_i)**2: 3e-9 on the smallest value of (25, 25)
    bound = gram_abs_error(ref, *shape[-2:])
    assert (np.abs(s - ref) <= bound).all(), np.max(np.abs(s - ref) / bound)
    assert (bound[..., 0] < 1e-13 * ref[..., 0]).all()  # the bound is tight at the top
    assert (np.diff(s, axis=-1) <= 0).all()


@pytest.mark.parametrize("name", sorted(SPECTRAL_METRICS))
@pytest.mark.parametrize("shape", [(64, 20), (20, 64)])
def test_metrics_from_gram_match_metrics_from_svd(name, shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, *shape)) @ np.diag(0.7 ** np.arange(shape[1]))
    f = SPECTRAL_METRICS[name]
    kw = {"rtol": numerical_rank_rtol(*shape, x.dtype)} if name == "numerical_rank" else {}
    # (20, 64) centred has rank 19: its last value is rounding noise, ~1e-8 s_1 from the
    # Gram against ~1e-16 s_1 from the SVD, which moves entropy metrics by ~1e-8
    np.testing.assert_allclose(
        f(singular_values(x, center=True), **kw), f(svd(x, center=True), **kw), rtol=1e-7
    )


def test_float64_gram_on_steep_float32_spectrum():
    # a float32 Gram lost up to 4 % effective rank on such spectra (docs/storage-notes.md)
    rng = np.random.default_rng(2)
    q1, _ = np.linalg.qr(rng.standard_normal((256, 64)))
    q2, _ = np.linalg.qr(rng.standard_normal((64, 64)))
    x = ((q1 * 0.8 ** np.arange(64)) @ q2.T).astype(np.float32)  # (256, 64)
    er = SPECTRAL_METRICS["effective_rank"]
    np.testing.assert_allclose(
        er(singular_values(x, center=False)), er(svd(x, center=False)), rtol=1e-6
    )


def test_centering_subtracts_the_sample_mean():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 8)) + 100.0  # big common offset
    np.testing.assert_allclose(
        singular_values(x, center=True), svd(x - x.mean(axis=0), center=False), rtol=1e-9
    )
    assert singular_values(x, center=False)[0] > 100 * np.sqrt(30) * np.sqrt(8) * 0.9


@pytest.mark.parametrize("shape", [(50, 20), (20, 50)])
def test_rank_deficient_tail_is_below_the_gram_resolution(shape):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((shape[0], 3)) @ rng.standard_normal((3, shape[1]))
    s = singular_values(x, center=False)
    r = min(shape)
    assert (s[3:] <= np.sqrt(r * np.finfo(float).eps) * s[0]).all()
    assert (s[:3] > 1e-3 * s[0]).all()
    rtol = numerical_rank_rtol(*shape, np.dtype(np.float64))
    assert SPECTRAL_METRICS["numerical_rank"](s, rtol=rtol) == np.linalg.matrix_rank(x) == 3


def test_resolves_the_float32_rounding_tail():
    # stored float32 activations of a rank-12 map: the rounding tail (~1e-7 relative) is
    # resolved by the float64 Gram, so entropy metrics match the SVD's
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((300, 12)) @ rng.standard_normal((12, 64))).astype(np.float32)
    s, ref = singular_values(x, center=True), svd(x, center=True)
    er = SPECTRAL_METRICS["effective_rank"]
    np.testing.assert_allclose(er(s), er(ref), rtol=1e-7)
    assert numerical_rank_rtol(300, 64, x.dtype) > 1e3 * ref[12] / ref[0]
    rtol = numerical_rank_rtol(300, 64, x.dtype)
    assert SPECTRAL_METRICS["numerical_rank"](s, rtol=rtol) == 12


def test_dead_layer_is_all_zero_without_warning():
    s = singular_values(np.zeros((2, 16, 8)), center=True)
    np.testing.assert_array_equal(s, np.zeros((2, 8)))


def test_nan_matrix_gives_nan_spectrum_with_warning():
    x = np.ones((3, 10, 4)) * np.arange(4)
    x[1, 2, 3] = np.nan
    with pytest.warns(DegenerateSpectrumWarning, match="1 of 3 matrices hold NaN"):
        s = singular_values(x, center=False)
    assert np.isnan(s[1]).all()
    assert np.isfinite(s[[0, 2]]).all()


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (2, 0, 0)])
def test_empty(shape):
    assert singular_values(np.zeros(shape), center=True).shape == (*shape[:-2], 0)


def test_one_by_one_and_tiny_probe():
    np.testing.assert_allclose(singular_values(np.array([[-3.0]]), center=False), [3.0])
    np.testing.assert_allclose(singular_values(np.array([[-3.0]]), center=True), [0.0])
    # n = 2 centred rows span one direction: s_1 = |x_1 - x_2| / sqrt(2)
    x = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    s = singular_values(x, center=True)
    np.testing.assert_allclose(s, [np.sqrt(8) / np.sqrt(2), 0.0], rtol=1e-12, atol=1e-7)


def test_one_dimensional_input_is_rejected():
    with pytest.raises(ValueError, match=r"Expected `x` with shape \(\.\.\., n, d\)"):
        singular_values(np.ones(3), center=True)


def _stack(steps=10, n=12, d=7, seed=5):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((steps, n, d)).astype(np.float32)
    return xr.DataArray(
        data, dims=("step", "fc1.sample", "fc1.feature"), coords={"step": 5 * np.arange(steps)}
    )


@pytest.mark.parametrize("center", [True, False])
def test_spectra_numpy_and_dask_agree(center):
    da = _stack()
    eager = spectra(da, center=center)
    lazy = spectra(da.chunk({"step": 3, "fc1.sample": 5}), center=center)
    assert isinstance(lazy.data, dsa.Array)
    assert lazy.chunks == ((3, 3, 3, 1), (7,))  # aligned with the step chunks
    assert lazy.dims == ("step", "component")
    np.testing.assert_array_equal(lazy["step"], da["step"])
    xr.testing.assert_allclose(eager, lazy.compute(), rtol=1e-12)
    ref = svd(da.values, center=center)
    np.testing.assert_allclose(eager.values[:, :6], ref[:, :6], rtol=1e-9)


def test_spectra_reshapes_conv_kernels():
    rng = np.random.default_rng(6)
    w = rng.standard_normal((4, 6, 3, 2, 2))  # (step, out, in, kh, kw)
    da = xr.DataArray(w, dims=("step", "o", "i", "h", "w")).chunk({"step": 2})
    s = spectra(da, center=False).compute()
    assert s.shape == (4, 6)
    np.testing.assert_allclose(s.values, svd(w.reshape(4, 6, 12), center=False), rtol=1e-9)


def test_spectra_rejects_non_matrices():
    with pytest.raises(ValueError, match=r"Expected `da` to be an xarray.DataArray"):
        spectra(xr.DataArray(np.ones((3, 4)), dims=("step", "x")), center=True)


def test_blas_pinned_around_compute_and_restored_after():
    def blas_threads():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    before = blas_threads()
    seen = []

    def probe(block):
        with blas_single_thread():  # nested inside the caller's pin: no set/restore here
            seen.extend(blas_threads())
            threading.Event().wait(0.01)
        return block

    arr = dsa.ones(8, chunks=1).map_blocks(probe, dtype=float, meta=np.empty(0))
    with blas_single_thread(), dask.config.set(scheduler="threads", num_workers=2):
        arr.compute()
    assert seen and set(seen) == {1}
    assert blas_threads() == before


def test_a_chunk_split_into_batches_gives_the_same_bits_as_one_matrix_at_a_time():
    # 40 matrices of 300 x 200 float64 (0.48 MB each) cross the 16 MB batch size, so the stack
    # is computed in batches; each matrix's spectrum is the one it gets on its own, NaN included
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 20, 300, 200)).astype(np.float32)
    x[1, 3, 5, 5] = np.nan
    with pytest.warns(DegenerateSpectrumWarning, match="1 of 40 matrices"):
        s = singular_values(x, center=True)
    assert s.shape == (2, 20, 200)
    assert np.isnan(s[1, 3]).all()
    for i, j in np.ndindex(2, 20):
        if (i, j) != (1, 3):
            np.testing.assert_array_equal(s[i, j], singular_values(x[i, j], center=True))
