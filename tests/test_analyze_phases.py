"""Phase segmentation against planted piecewise-linear trajectories."""

import numpy as np
import pytest
import xarray as xr

from dimlapse.analyze.jobs._phases import TREND_CODES, phases, segmented_fit, smooth

STEPS = np.arange(0, 8001, 5)  # the study's schedule: 1,601 captures


def planted(knots_x, knots_y, *, noise=0.2, seed=0, steps=STEPS):
    rng = np.random.default_rng(seed)
    return np.interp(steps, knots_x, knots_y) + rng.normal(0, noise, steps.size)


def trajectories(rows, *, steps=STEPS):
    return xr.DataArray(
        np.stack(rows),
        dims=("layer", "step"),
        coords={"layer": [f"fc{i}" for i in range(len(rows))], "step": steps},
    )


@pytest.mark.parametrize("seed", range(5))
def test_study_shape_recovers_planted_boundaries(seed):
    # collapse 0-300, expansion 300-5000, stabilisation 5000-8000 (the study's claim)
    y = planted([0, 300, 5000, 8000], [20, 5, 40, 40.5], seed=seed)
    ds = phases(trajectories([y]))
    window_steps = ds.attrs["window"] * 5
    start = ds.phase_start.sel(layer="fc0")
    end = ds.phase_end.sel(layer="fc0")
    assert start.sel(phase="collapse") == 0
    assert abs(end.sel(phase="collapse") - 300) <= window_steps / 2
    assert abs(start.sel(phase="expansion") - 300) <= window_steps / 2
    assert abs(end.sel(phase="expansion") - 5000) <= window_steps / 2
    assert abs(start.sel(phase="stabilisation") - 5000) <= window_steps / 2
    assert end.sel(phase="stabilisation") == 8000
    assert ds.segment_trend.sel(layer="fc0").values.tolist() == [-1, 1, 0]
    assert ds.r_squared.item() > 0.99


def test_exact_breakpoints_without_noise_or_smoothing():
    # discontinuous segments are recovered exactly by the segmented fit
    x = np.arange(300, dtype=float)
    y = np.where(x < 100, 50 - 0.3 * x, np.where(x < 220, 10 + 0.5 * (x - 100), 100.0))
    i, j = segmented_fit(x, y, min_size=3, max_candidates=1000)
    assert (i, j) == (100, 220)
    # the coarse grid plus refinement finds the same split
    assert segmented_fit(x, y, min_size=3, max_candidates=20) == (100, 220)


def test_slopes_match_polyfit_per_segment():
    y = planted([0, 2000, 8000], [10, 30, 30], noise=0.0)
    ds = phases(trajectories([y]), window=1)
    bp = ds.breakpoint_step.values[0]
    seg0 = STEPS < bp[0]
    expected = np.polyfit(STEPS[seg0], y[seg0], 1)[0]
    np.testing.assert_allclose(ds.segment_slope.values[0, 0], expected, rtol=1e-9)


def test_merges_adjacent_segments_of_one_class():
    # one rise then a plateau: two of the three segments rise, and they merge into one phase
    y = planted([0, 6000, 8000], [0, 60, 60], noise=0.05)
    ds = phases(trajectories([y]))
    assert np.isnan(ds.phase_start.sel(phase="collapse")).all()
    assert ds.phase_start.sel(phase="expansion").item() == 0
    assert abs(ds.phase_end.sel(phase="expansion").item() - 6000) <= 100
    codes = ds.segment_trend.values[0]
    assert set(codes.tolist()) == {TREND_CODES["expansion"], TREND_CODES["stabilisation"]}


def test_flat_noise_is_all_stabilisation():
    rng = np.random.default_rng(1)
    ds = phases(trajectories([10 + rng.normal(0, 1, STEPS.size)]), tolerance=0.3)
    assert ds.segment_trend.values.tolist() == [[0, 0, 0]]
    assert ds.phase_start.sel(phase="stabilisation").item() == 0
    assert ds.phase_end.sel(phase="stabilisation").item() == 8000


def test_nan_and_short_series_give_nan_not_errors():
    y = planted([0, 300, 5000, 8000], [20, 5, 40, 40.5])
    y[100:140] = np.nan
    short = np.full(STEPS.size, np.nan)
    short[:5] = 1.0
    ds = phases(trajectories([y, short]))
    assert np.isfinite(ds.breakpoint_step.values[0]).all()
    assert np.isnan(ds.breakpoint_step.values[1]).all()
    assert np.isnan(ds.r_squared.values[1])


def test_smooth_is_a_centred_nan_aware_mean():
    y = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    np.testing.assert_allclose(smooth(y, 3), [1.5, 1.5, 3.0, 4.5, 4.5])


def test_lazy_matches_eager_and_stays_lazy():
    rows = [planted([0, 300, 5000, 8000], [20, 5, 40, 40.5], seed=s) for s in range(3)]
    da = trajectories(rows)
    eager = phases(da)
    lazy = phases(da.chunk(layer=1, step=64))
    assert lazy.phase_start.chunks is not None
    xr.testing.assert_allclose(lazy.compute(), eager)


def test_attrs_record_method_and_parameters():
    ds = phases(trajectories([planted([0, 8000], [0, 1])]), window=5, tolerance=0.2)
    assert "segmented linear" in ds.attrs["method"]
    assert (ds.attrs["window"], ds.attrs["tolerance"]) == (5, 0.2)
    for name in ds.data_vars:
        assert {"long_name", "units"} <= set(ds[name].attrs)


def test_validation_messages():
    da = trajectories([planted([0, 8000], [0, 1])])
    with pytest.raises(ValueError, match="`tolerance` to be a float"):
        phases(da, tolerance=1.5)
    with pytest.raises(ValueError, match="`window` to be an int"):
        phases(da, window=0)
    with pytest.raises(ValueError, match="'step' dimension"):
        phases(da.rename(step="time"))
    with pytest.raises(ValueError, match="'dimensionality' variable"):
        phases(xr.Dataset({"other": da}))
    with pytest.raises(TypeError, match="DataArray or Dataset"):
        phases(np.zeros(10))
