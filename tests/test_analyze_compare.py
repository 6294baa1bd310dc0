"""Activation-versus-weight comparison and transition timing on planted fixtures."""

import numpy as np
import pytest
import xarray as xr

from dimlapse.analyze.jobs._compare import comparison, lagged_xcorr, normalised
from dimlapse.analyze.jobs._timing import timing, transition_counts

STEPS = np.arange(0, 2000, 5)


def transitions_fixture(events, *, n_null=None):
    """A transitions Dataset (kind, layer, metric, detector, transition) from event lists.

    `events[(kind, layer)]` is a list of (step, significant); NaN pads shorter series, as
    dimlapse.analyze.transitions does.
    """
    kinds, layers = ["activation", "weight"], ["fc1", "fc2"]
    width = max(1, *(len(v) for v in events.values()))
    step = np.full((2, 2, 1, 1, width), np.nan)
    sig = np.zeros((2, 2, 1, 1, width), dtype=bool)
    for (kind, layer), evs in events.items():
        for t, (s, flag) in enumerate(evs):
            step[kinds.index(kind), layers.index(layer), 0, 0, t] = s
            sig[kinds.index(kind), layers.index(layer), 0, 0, t] = flag
    dims = ("kind", "layer", "metric", "detector", "transition")
    ds = xr.Dataset(
        {"step": (dims, step), "significant": (dims, sig)},
        coords={"kind": kinds, "layer": layers, "metric": ["stable_rank"], "detector": ["zscore"]},
    )
    if n_null is not None:
        ds["n_null"] = (dims[:-1], np.full((2, 2, 1, 1), float(n_null)))
    return ds


def dim_fixture(act, weight):
    data = np.stack([act, weight])[:, :, :, None]  # (kind, layer, step, metric)
    return xr.DataArray(
        data,
        dims=("kind", "layer", "step", "metric"),
        coords={
            "kind": ["activation", "weight"],
            "layer": ["fc1", "fc2"][: data.shape[1]],
            "step": STEPS[: data.shape[2]],
            "metric": ["stable_rank"],
        },
    )


def test_timing_counts_and_shares_against_hand_count():
    events = {
        ("activation", "fc1"): [(100, True), (400, False), (1500, True), (1900, False)],
        ("activation", "fc2"): [(10, False)],
        ("weight", "fc1"): [],
        ("weight", "fc2"): [(1999, True)],
    }
    tr = transitions_fixture(events, n_null=7)
    ds = timing(tr, total_steps=2000, share=0.25)  # cutoff 500
    a1 = ds.sel(kind="activation", layer="fc1", metric="stable_rank", detector="zscore")
    assert (a1.n_raw.item(), a1.n_significant.item()) == (4, 2)
    assert (a1.n_raw_early.item(), a1.n_significant_early.item()) == (2, 1)
    assert a1.share_raw_early.item() == 0.5
    assert a1.share_significant_early.item() == 0.5
    assert a1.n_null.item() == 7
    w1 = ds.sel(kind="weight", layer="fc1", metric="stable_rank", detector="zscore")
    assert w1.n_raw.item() == 0
    assert np.isnan(w1.share_raw_early.item())
    assert ds.attrs["cutoff_step"] == 500.0


def test_counts_without_null_are_nan():
    tr = transitions_fixture({("activation", "fc1"): [(5, True)]})
    counts = transition_counts(tr)
    assert np.isnan(counts.n_null).all()
    assert counts.n_raw.sum().item() == 1


def test_timing_is_lazy_on_lazy_input():
    tr = transitions_fixture({("activation", "fc1"): [(5, True), (900, True)]}).chunk(layer=1)
    ds = timing(tr, total_steps=2000)
    assert ds.n_raw.chunks is not None
    assert ds.compute().n_raw_early.sum().item() == 1


def test_timing_validation():
    tr = transitions_fixture({("activation", "fc1"): [(5, True)]})
    with pytest.raises(ValueError, match="`total_steps` > `start_step`"):
        timing(tr, total_steps=0)
    with pytest.raises(ValueError, match="`share` to be a float"):
        timing(tr, total_steps=100, share=1.0)
    with pytest.raises(ValueError, match="'transition' dimension"):
        timing(tr.drop_vars("significant"), total_steps=100)
    with pytest.raises(TypeError, match=r"`trans` to be the xr\.Dataset"):
        timing({"step": 1}, total_steps=100)
    with pytest.raises(TypeError, match="positional argument"):
        timing(tr, 100)  # options are keyword-only


def test_lagged_xcorr_matches_numpy_corrcoef():
    rng = np.random.default_rng(0)
    a, w = rng.normal(size=200), rng.normal(size=200)
    got = lagged_xcorr(a, w, 5)
    for k, lag in enumerate(range(-5, 6)):
        if lag >= 0:
            expected = np.corrcoef(a[lag:], w[: 200 - lag])[0, 1]
        else:
            expected = np.corrcoef(a[:lag], w[-lag:])[0, 1]
        np.testing.assert_allclose(got[k], expected, atol=1e-12)


def test_planted_lag_is_found():
    rng = np.random.default_rng(1)
    n = STEPS.size
    w = np.cumsum(rng.normal(size=(2, n)), axis=1)
    dw = np.diff(w, axis=1)
    lagged = np.concatenate([np.zeros((2, 3)), dw[:, :-3]], axis=1)  # activation follows by 3
    act = np.concatenate([np.zeros((2, 1)), np.cumsum(2 * lagged, axis=1)], axis=1)
    act += rng.normal(0, 0.3, act.shape)
    ds = comparison(dim_fixture(act, w))
    np.testing.assert_array_equal(ds.peak_lag.values, 3)
    np.testing.assert_array_equal(ds.peak_lag_steps.values, 15)
    assert (ds.peak_xcorr > 0.8).all()


def test_independent_spaces_have_small_xcorr():
    rng = np.random.default_rng(2)
    walks = np.cumsum(rng.normal(size=(2, 2, STEPS.size)), axis=-1)
    ds = comparison(dim_fixture(walks[0], walks[1]))
    assert (np.abs(ds.xcorr) < 0.25).all()


def test_normalised_is_min_max_and_constant_gives_nan():
    da = xr.DataArray([[2.0, 4.0, 3.0], [1.0, 1.0, 1.0]], dims=("layer", "step"))
    np.testing.assert_allclose(normalised(da).values[0], [0, 1, 0.5])
    assert np.isnan(normalised(da).values[1]).all()


def test_counts_per_space_and_totals():
    events = {
        ("activation", "fc1"): [(100, True), (400, True), (1500, False)],
        ("activation", "fc2"): [(10, True)],
        ("weight", "fc2"): [(300, False)],
    }
    rng = np.random.default_rng(3)
    walks = np.cumsum(rng.normal(size=(2, 2, STEPS.size)), axis=-1)
    ds = comparison(
        dim_fixture(walks[0], walks[1]), transitions=transitions_fixture(events, n_null=2)
    )
    tot = ds.sel(metric="stable_rank", detector="zscore")
    assert tot.n_raw_total.sel(kind="activation").item() == 4
    assert tot.n_significant_total.sel(kind="activation").item() == 3
    assert tot.n_raw_total.sel(kind="weight").item() == 1
    assert tot.n_null_total.sel(kind="weight").item() == 4


def test_lazy_matches_eager_and_one_space_only():
    rng = np.random.default_rng(4)
    walks = np.cumsum(rng.normal(size=(2, 2, STEPS.size)), axis=-1)
    da = dim_fixture(walks[0], walks[1])
    xr.testing.assert_allclose(comparison(da.chunk(layer=1)).compute(), comparison(da))
    only = comparison(da.sel(kind=["activation"]))
    assert "xcorr" not in only
    assert only.attrs["kinds_present"] == ["activation"]


def test_compare_validation():
    da = dim_fixture(np.zeros((2, 20)), np.zeros((2, 20)))
    with pytest.raises(ValueError, match="'kind' dimension"):
        comparison(da.sel(kind="activation"))
    with pytest.raises(ValueError, match="`max_lag` to be an int"):
        comparison(da, max_lag=0)
