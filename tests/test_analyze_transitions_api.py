"""transitions: one entry point for ndarray, DataArray and Dataset; options, FDR, time scale."""

from dataclasses import FrozenInstanceError

import numpy as np
import pytest
import xarray as xr

from dimlapse.analyze import (
    DEFAULT_DETECTOR,
    Calibration,
    MeanShiftOptions,
    PeltOptions,
    ZScoreOptions,
    transitions,
)
from dimlapse.analyze._transitions import DETECTORS
from dimlapse.analyze._transitions._fdr import bh_adjust, hierarchical_fdr

NO_LADDER = Calibration(scales=())


def _step(n=400, tau=200, h=5.0, seed=0):
    x = np.random.default_rng(seed).standard_normal(n)
    x[tau:] += h
    return x


def test_registry_is_the_one_place_a_detector_is_described():
    assert set(DETECTORS) == {"zscore", "meanshift", "pelt"}
    assert DEFAULT_DETECTOR in DETECTORS
    for name, spec in DETECTORS.items():
        assert spec.name == name
        opts = spec.options()
        assert spec.min_length(opts) >= 2 and spec.n_surrogates >= 50
        with pytest.raises(FrozenInstanceError):
            opts.window = 3


def test_ndarray_dataarray_and_dataset_give_matching_shapes():
    x = _step()
    one = transitions(x, detectors="meanshift", calibration=NO_LADDER)
    assert one.significant.dims == ("transition",)
    assert one.n_significant.dims == () and str(one.detector.values) == "meanshift"
    assert one.step.values[one.significant.values].tolist() == [200]
    da = xr.DataArray(np.stack([x, _step(seed=1)]), dims=("layer", "step"))
    many = transitions(da, detectors=("meanshift", "zscore"), calibration=NO_LADDER)
    assert many.significant.dims == ("layer", "detector", "transition")
    assert many.p_series.dims == ("layer", "detector")
    ds = xr.Dataset({"a": da, "b": da * 2.0, "c": ("layer", [1.0, 2.0])})
    out = transitions(ds, detectors="pelt", calibration=NO_LADDER)
    assert out.n_candidates.dims == ("variable", "layer")
    assert out["variable"].values.tolist() == ["a", "b"]
    two_d = transitions(np.stack([x, x]), detectors="pelt", calibration=NO_LADDER)
    assert two_d.n_candidates.dims == ("dim_0",)


def test_a_single_series_is_the_same_inside_a_dataarray():
    x = _step(seed=11)
    one = transitions(x, detectors="meanshift", calibration=NO_LADDER)
    many = transitions(
        xr.DataArray(x[None], dims=("layer", "step")), detectors="meanshift", calibration=NO_LADDER
    )
    xr.testing.assert_identical(one, many.isel(layer=0, drop=True))


def test_options_are_typed_and_matched_to_their_detector():
    x = _step(seed=2)
    ds = transitions(
        x,
        detectors=("zscore", "pelt"),
        options=(ZScoreOptions(threshold=2.5), PeltOptions(pen_scale=3.0)),
        calibration=NO_LADDER,
    )
    assert ds.attrs["zscore_threshold"] == 2.5 and ds.attrs["pelt_pen_scale"] == 3.0
    assert ds.attrs["pelt_window"] == PeltOptions().window  # defaults recorded too
    by_name = transitions(
        x,
        detectors="zscore",
        options={"zscore": ZScoreOptions(threshold=2.5)},
        calibration=NO_LADDER,
    )
    zs = ds.sel(detector="zscore")
    np.testing.assert_array_equal(by_name.p_value, zs.p_value[: by_name.sizes["transition"]])
    assert by_name.attrs["zscore_threshold"] == 2.5
    with pytest.raises(ValueError, match="options of the chosen detectors"):
        transitions(x, detectors="pelt", options=ZScoreOptions())


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ZScoreOptions(window=1), "`window`"),
        (lambda: ZScoreOptions(min_periods=60), "`min_periods` <= `window`"),
        (lambda: MeanShiftOptions(threshold=0), "`threshold`"),
        (lambda: PeltOptions(model="cosine"), "`model`"),
        (lambda: PeltOptions(direction="sideways"), "`direction`"),
        (lambda: Calibration(trend_window=2), "`trend_window`"),
        (lambda: Calibration(trend_degree=3), "`trend_degree`"),
        (lambda: Calibration(noise="pink"), "`noise`"),
        (lambda: Calibration(scales=(0.5, -1.0)), "`scales`"),
    ],
)
def test_invalid_options_name_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_invalid_inputs_name_the_argument():
    with pytest.raises(ValueError, match="`detectors`"):
        transitions(np.zeros(100), detectors="cusum")
    with pytest.raises(ValueError, match="`detectors`"):
        transitions(np.zeros(100), detectors=())
    with pytest.raises(ValueError, match="`alpha`"):
        transitions(np.zeros(100), alpha=1.5)
    with pytest.raises(ValueError, match="`steps`"):
        transitions(np.zeros(3), steps=np.array([0, 2, 1]))
    with pytest.raises(ValueError, match="'step' dimension"):
        transitions(xr.DataArray(np.zeros(5), dims="time"))
    with pytest.raises(ValueError, match="`calibration`"):
        transitions(np.zeros(100), calibration={"trend_window": 20})


def test_nan_samples_are_dropped_and_steps_kept():
    x = _step(n=500, tau=300, h=5.0, seed=12)
    x[[10, 50, 51, 400]] = np.nan
    ds = transitions(x, steps=np.arange(500) * 10, detectors="meanshift", calibration=NO_LADDER)
    assert ds.step.values[ds.significant.values].tolist() == [3000]


def test_all_nan_and_short_series_are_untested():
    da = xr.DataArray(np.stack([np.full(300, np.nan), _step(300, 150)]), dims=("s", "step"))
    ds = transitions(da, detectors="zscore", calibration=NO_LADDER)
    assert ds.tested.values.tolist() == [False, True]
    assert np.isnan(ds.n_candidates.values[0])
    short = transitions(np.arange(10.0), detectors="meanshift", calibration=NO_LADDER)
    assert short.sizes["transition"] == 0 and not bool(short.tested)


def test_seeded_and_deterministic():
    x = np.random.default_rng(1).standard_normal(300)
    a = transitions(x, detectors="zscore", calibration=Calibration(seed=1, scales=()))
    again = transitions(x, detectors="zscore", calibration=Calibration(seed=1, scales=()))
    xr.testing.assert_identical(a, again)
    b = transitions(x, detectors="zscore", calibration=Calibration(seed=2, scales=()))
    assert not np.array_equal(a.p_value, b.p_value)


def test_bh_adjust_against_hand_computation():
    p = np.array([0.01, 0.04, 0.03, 0.20, 0.005])
    np.testing.assert_allclose(bh_adjust(p), [0.025, 0.05, 0.05, 0.2, 0.025])
    _, sel, level = hierarchical_fdr(p, 0.05)
    assert sel.tolist() == [True, True, True, False, True]
    assert level == pytest.approx(0.05 * 4 / 5)
    assert bh_adjust(np.array([])).size == 0


def test_transitions_applies_hierarchical_fdr_across_series():
    rng = np.random.default_rng(9)
    rows = [rng.standard_normal(500) for _ in range(6)]
    for r in rows[3:]:
        r[250:] += 6.0
    da = xr.DataArray(
        np.array(rows).reshape(2, 3, 500),
        dims=("kind", "layer", "step"),
        coords={"kind": ["activation", "weight"], "step": np.arange(500) * 5},
    )
    ds = transitions(da, detectors=("meanshift", "zscore"), calibration=NO_LADDER)
    for d in ("meanshift", "zscore"):
        e = ds.sel(detector=d)
        q, sel, level = hierarchical_fdr(e.p_series.values.ravel(), 0.05)
        np.testing.assert_allclose(e.q_series.values.ravel(), q)
        expect = sel.reshape(2, 3, 1) & (e.p_value.values <= level)
        np.testing.assert_array_equal(e.significant.values, expect)
    ms = ds.sel(detector="meanshift")
    assert ms.n_significant.sel(kind="weight").values.tolist() == [1, 1, 1]


def test_scale_tells_a_sharp_jump_from_a_slow_rise():
    # a 1-sample jump and a 60-sample ramp of the same height: the jump is abrupt even against
    # a trend smooth over a quarter of trend_window, the ramp only against wider trends
    rng = np.random.default_rng(30)
    t = np.arange(800)
    x = rng.standard_normal(800)
    x[200:] += 8.0
    x += 8.0 * np.clip((t - 500) / 60, 0, 1)
    ds = transitions(x, detectors="meanshift", calibration=Calibration(scales=(0.25, 2.0, 4.0)))
    jump = ds.where(abs(ds.step - 200) <= 3, drop=True)
    ramp = ds.where(abs(ds.step - 530) <= 15, drop=True)
    assert jump.sizes["transition"] == 1 and ramp.sizes["transition"] == 1
    assert jump.scale.item() <= 25  # significant at trend_window / 4 = 12 (or 25)
    assert ramp.scale.item() >= 100  # not before trend_window * 2
    assert ds.attrs["scale_ladder_factors"] == [1.0, 0.25, 2.0, 4.0]


def test_workers_do_not_change_the_result():
    rng = np.random.default_rng(41)
    da = xr.DataArray(np.stack([rng.standard_normal(400) for _ in range(4)]), dims=("s", "step"))
    one = transitions(da, detectors=("meanshift", "pelt"), workers=1, calibration=NO_LADDER)
    two = transitions(da, detectors=("meanshift", "pelt"), workers=2, calibration=NO_LADDER)
    xr.testing.assert_identical(one, two)
    with pytest.raises(ValueError, match="`workers`"):
        transitions(da, workers=0)
