"""Sampling-frequency job on planted level shifts, subsampled to coarser intervals."""

import numpy as np
import pytest
import xarray as xr

from dimlapse.analyze import transitions
from dimlapse.analyze.jobs._sampling import _strides, sampling

EVERY = 5
STEPS = np.arange(0, 4001, EVERY)  # 801 captures
SHIFTS = (150, 300, 500, 700)  # sample indices of planted +6 sd level shifts
SHIFT_STEPS = np.array(SHIFTS) * EVERY


def planted(n_layers=2, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_layers):
        y = rng.normal(0, 1, STEPS.size)
        for k in SHIFTS:
            y[k:] += 6.0
        rows.append(y)
    return xr.DataArray(
        np.stack(rows),
        dims=("layer", "step"),
        coords={"layer": [f"l{i}" for i in range(n_layers)], "step": STEPS},
        attrs={"every": EVERY},
    )


@pytest.fixture(scope="module")
def result():
    return sampling(planted(), intervals=(1, 5, 10, 50, 100, 1000), detectors=("pelt",))


def test_strides_skip_round_and_deduplicate():
    assert _strides([1, 5, 10, 12, 25], 5) == [(5, 1, 5), (10, 2, 10), (25, 5, 25)]
    assert _strides([7, 10], 3) == [(7, 2, 6), (10, 3, 9)]


def test_intervals_and_sample_counts(result):
    assert result["interval"].values.tolist() == [5, 10, 50, 100, 1000]
    assert result["n_samples"].values.tolist() == [801, 401, 81, 41, 5]
    assert result.attrs["skipped_intervals"] == [1]
    # 5 samples is below min_samples: reported as NaN, not as zero transitions
    assert np.isnan(result["n_raw"].sel(interval=1000)).all()


def test_finest_interval_finds_the_planted_shifts(result):
    base = result.sel(interval=5, detector="pelt")
    # every shift; at most one more (each series' step-down tests what is left at alpha)
    n_sig = base["n_significant"].values
    assert ((n_sig >= len(SHIFTS)) & (n_sig <= len(SHIFTS) + 1)).all(), n_sig
    # at the finest interval every significant transition "finds" itself
    xr.testing.assert_equal(base["n_base_found"], base["n_significant"])


def test_coarse_sampling_loses_transitions(result):
    fine = result["n_base_found"].sel(interval=5, detector="pelt").sum().item()
    coarse = result["n_base_found"].sel(interval=100, detector="pelt").sum().item()
    assert coarse <= fine  # 6-sd shifts 40 samples apart stay findable at 41 samples
    sig_coarse = result["n_significant"].sel(interval=100, detector="pelt").sum().item()
    assert sig_coarse < result["n_significant"].sel(interval=5, detector="pelt").sum().item()


def test_counts_equal_a_direct_run_on_the_subsample(result):
    direct = transitions(planted().isel(step=slice(0, None, 2)), detectors=("pelt",))
    got = result.sel(interval=10)
    np.testing.assert_array_equal(got["n_raw"].values, direct["n_candidates"].values)
    np.testing.assert_array_equal(got["n_significant"].values, direct["n_significant"].values)
    np.testing.assert_allclose(got["n_null"].values, direct["n_null"].values)


def test_reusing_the_base_transitions_gives_the_same_result():
    da = planted(n_layers=1)
    base = transitions(da, detectors=("pelt",))
    a = sampling(da, intervals=(5, 50), detectors=("pelt",))
    b = sampling(da, intervals=(5, 50), detectors=("pelt",), base=base)
    xr.testing.assert_allclose(a, b)
    # a base computed on more series is restricted to the series being subsampled
    wide = transitions(planted(n_layers=2), detectors=("pelt",))
    c = sampling(da, intervals=(5, 50), detectors=("pelt",), base=wide)
    assert c["layer"].values.tolist() == ["l0"]


def test_every_inferred_from_step_spacing():
    da = planted(n_layers=1)
    da.attrs = {}
    ds = sampling(da, intervals=(2, 5, 100), detectors=("pelt",))
    assert ds.attrs["every"] == EVERY
    assert ds["interval"].values.tolist() == [5, 100]


def test_validation_messages():
    da = planted(n_layers=1)
    with pytest.raises(ValueError, match="`intervals` to include one >="):
        sampling(da, intervals=(1, 2))
    with pytest.raises(ValueError, match="`intervals` to be a non-empty list"):
        sampling(da, intervals=())
    with pytest.raises(ValueError, match="`intervals` to be an int"):
        sampling(da, intervals=(5, -10))
    with pytest.raises(ValueError, match="`min_samples` to be an int"):
        sampling(da, min_samples=1)
