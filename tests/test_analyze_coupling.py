"""Coupling job: Spearman rho against scipy, block bootstrap, alignment, random walks."""

import numpy as np
import pytest
import scipy.stats
import xarray as xr

from dimlapse.analyze.jobs._coupling import (
    align_scalars,
    block_counts,
    coupling,
    spearman_interval,
    tie_ranks,
    weighted_spearman,
)

CAPTURE = np.arange(0, 2001, 5)  # capture steps 0, 5, ..., 2000
OPT = np.arange(1, 2001)  # optimizer steps 1..2000 (rec.step after optimizer.step)


def scalars(loss, grad_norm=None):
    data = {"loss": ("step", loss)}
    if grad_norm is not None:
        data["grad_norm"] = ("step", grad_norm)
    return xr.Dataset(data, coords={"step": OPT})


def traj(rows):
    return xr.DataArray(
        np.atleast_2d(rows), dims=("layer", "step"), coords={"step": CAPTURE}
    ).assign_coords(layer=[f"l{i}" for i in range(np.atleast_2d(rows).shape[0])])


def test_alignment_is_the_mean_over_each_capture_interval():
    values = np.arange(1, 21, dtype=float)  # scalar at optimizer steps 1..20
    got = align_scalars(np.arange(1, 21), values, np.array([0, 5, 10, 20]))
    expected = [np.nan, np.mean([1, 2, 3, 4, 5]), np.mean([6, 7, 8, 9, 10]), np.mean(range(11, 21))]
    np.testing.assert_allclose(got, expected)


def test_alignment_skips_nan_scalars():
    values = np.array([1.0, np.nan, 3.0, np.nan, np.nan])
    got = align_scalars(np.arange(1, 6), values, np.array([3, 5]))
    np.testing.assert_allclose(got, [2.0, np.nan])


@pytest.mark.parametrize("ties", [False, True])
def test_resample_spearman_matches_scipy_on_expanded_resamples(ties):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, 40).astype(float) if ties else rng.normal(size=40)
    y = rng.normal(size=40) + 0.5 * x
    counts = block_counts(40, 5, 30, rng)
    got = weighted_spearman(x, y, counts)
    expected = [scipy.stats.spearmanr(np.repeat(x, c), np.repeat(y, c)).statistic for c in counts.T]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    ranks = tie_ranks(x, counts)
    c = counts[:, 0]
    np.testing.assert_allclose(
        np.repeat(ranks[:, 0], c), scipy.stats.rankdata(np.repeat(x, c)), atol=1e-12
    )


def test_block_counts_are_moving_blocks_of_length_n():
    counts = block_counts(23, 5, 200, np.random.default_rng(0))
    assert counts.shape == (23, 200)
    assert (counts.sum(axis=0) == 23).all()
    assert counts.min() >= 0
    # with blocks of the full length every resample is the series itself
    np.testing.assert_array_equal(block_counts(10, 10, 3, np.random.default_rng(0)), 1)


def test_point_estimate_matches_scipy_and_interval_covers_it():
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.normal(size=300))
    y = -x + rng.normal(0, 3, 300)
    rho, low, high, n, block = spearman_interval(x, y, block=None, n_boot=500, level=0.95, seed=0)
    np.testing.assert_allclose(rho, scipy.stats.spearmanr(x, y).statistic, atol=1e-12)
    assert low <= rho <= high
    assert (n, block) == (300, round(300 ** (1 / 3)))


def test_planted_relation_with_loss_is_recovered():
    rng = np.random.default_rng(2)
    loss = np.exp(-OPT / 600) + rng.normal(0, 0.002, OPT.size)
    aligned = align_scalars(OPT, loss, CAPTURE.astype(float))
    dim_series = 10 - 5 * aligned + rng.normal(0, 0.1, CAPTURE.size)  # rho near -0.95
    ds = coupling(traj([dim_series]), scalars(loss, rng.random(OPT.size)))
    rho = ds.rho.sel(layer="l0", target="loss", transform="raw").item()
    expected = scipy.stats.spearmanr(dim_series[1:], aligned[1:]).statistic
    np.testing.assert_allclose(rho, expected, atol=1e-12)
    assert rho < -0.9
    lo = ds.rho_low.sel(layer="l0", target="loss", transform="raw").item()
    hi = ds.rho_high.sel(layer="l0", target="loss", transform="raw").item()
    assert -1 <= lo <= rho <= hi < -0.85
    assert ds.n_pairs.sel(layer="l0", target="loss", transform="raw").item() == CAPTURE.size - 1
    # the grad_norm column is independent noise: its raw interval covers 0
    g_lo = ds.rho_low.sel(layer="l0", target="grad_norm", transform="raw").item()
    g_hi = ds.rho_high.sel(layer="l0", target="grad_norm", transform="raw").item()
    assert g_lo < 0 < g_hi


def test_independent_random_walks_correlate_raw_but_not_differenced():
    # trending series correlate trivially: this is why differenced rho is reported
    raw, diff = [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        loss = np.repeat(np.cumsum(rng.normal(size=CAPTURE.size)), 5)[: OPT.size]
        walk = np.cumsum(rng.normal(size=CAPTURE.size))
        ds = coupling(traj([walk]), scalars(loss), targets=("loss",), n_boot=100)
        raw.append(ds.rho.sel(transform="raw").item())
        diff.append(ds.rho.sel(transform="diff").item())
    assert np.median(np.abs(raw)) > 0.3
    assert np.max(np.abs(diff)) < 0.2
    assert np.median(np.abs(diff)) < 0.06


def test_lazy_equals_eager_and_nan_rows():
    rng = np.random.default_rng(4)
    rows = rng.normal(size=(3, CAPTURE.size))
    rows[2] = np.nan  # a dead trajectory
    sc = scalars(rng.normal(size=OPT.size), rng.normal(size=OPT.size))
    eager = coupling(traj(rows), sc, n_boot=50)
    lazy = coupling(traj(rows).chunk(layer=1), sc, n_boot=50)
    assert lazy.rho.chunks is not None
    xr.testing.assert_allclose(lazy.compute(), eager)
    assert np.isnan(eager.rho.sel(layer="l2")).all()
    assert (eager.n_pairs.sel(layer="l2") == 0).all()


def test_missing_target_is_nan_and_recorded():
    ds = coupling(traj([np.arange(CAPTURE.size, dtype=float)]), scalars(np.ones(OPT.size)))
    assert np.isnan(ds.rho.sel(target="grad_norm")).all()
    assert ds.attrs["missing_targets"] == ["grad_norm"]
    assert "every" in ds.attrs["alignment"]


def test_validation_messages():
    da = traj([np.zeros(CAPTURE.size)])
    sc = scalars(np.ones(OPT.size))
    with pytest.raises(TypeError, match=r"`scalars` to be an xr\.Dataset"):
        coupling(da, {"loss": 1})
    with pytest.raises(ValueError, match="`block_length` to be an int"):
        coupling(da, sc, block_length=0)
    with pytest.raises(ValueError, match="`n_boot` to be an int >= 10"):
        coupling(da, sc, n_boot=5)
    with pytest.raises(ValueError, match="`level` to be a float"):
        coupling(da, sc, level=95)
    with pytest.raises(ValueError, match="`targets` to be a non-empty tuple"):
        coupling(da, sc, targets="loss")
