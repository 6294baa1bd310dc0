"""transitions: resolution, effect and notability (nothing below what stored data can show)."""

import numpy as np
import pytest
import xarray as xr

from dimlapse.analyze import Calibration, transitions
from dimlapse.analyze._transitions import NOTABLE_RELATIVE
from dimlapse.analyze._transitions._resolution import F32_EPS, RESOLUTION_EPS, effects

DETECTORS = ("meanshift", "pelt")
NO_LADDER = Calibration(scales=())
SEEDS = 10


def _ulp_flips(rng, n=400, v=7.3):
    """A float32 value whose stored copies differ by single-ulp flips: no change at all."""
    x = np.full(n, np.float32(v))
    flip = rng.random(n) < 0.5
    x[flip] = np.nextafter(x[flip], np.float32(np.inf))
    return x.astype(np.float64)


def _lr_drift(rng, n=400, v=11.0):
    """A layer trained at lr 1e-9: a drift of 2e-8 relative under float32-level rounding."""
    t = np.arange(n)
    x = v * (1.0 + 2e-8 * t / n)
    return x + v * F32_EPS * 0.5 * rng.uniform(-1, 1, n)


def _nano_steps(rng, n=400, v=5.0):
    """A constant series with steps of 1e-9 at random places (the seed tool's "jumps")."""
    x = np.full(n, v)
    for tau in rng.choice(np.arange(50, n - 50), size=6, replace=False):
        x[tau:] += 1e-9
    return x


@pytest.mark.parametrize("make", [_ulp_flips, _lr_drift, _nano_steps])
def test_float_precision_nulls_have_no_significant_event(make):
    # on main: up to 6 of 10 such series flagged (meanshift), 3 of 10 (PELT)
    rng = np.random.default_rng(140)
    x = np.stack([make(rng) for _ in range(SEEDS)])
    ds = transitions(x, detectors=DETECTORS)
    assert int(ds.significant.sum()) == 0
    assert int(ds.notable.sum()) == 0
    assert np.all(np.abs(ds.effect.values[np.isfinite(ds.effect.values)]) < 1e-5)


def test_a_series_below_its_resolution_is_constant_and_untested():
    rng = np.random.default_rng(1)
    x = np.stack([_ulp_flips(rng), _nano_steps(rng), rng.standard_normal(400)])
    ds = transitions(x, detectors="pelt", calibration=NO_LADDER)
    assert ds.constant.values.tolist() == [True, True, False]
    assert ds.tested.values.tolist() == [False, False, True]
    assert ds.p_series.isnull().values.tolist() == [True, True, False]  # not in the family
    level = np.abs(x).max(axis=1)
    np.testing.assert_allclose(ds.resolution.values, RESOLUTION_EPS * F32_EPS * level)
    np.testing.assert_allclose(ds.level.values, np.median(np.abs(x), axis=1))
    assert "float32" in ds.attrs["resolution_definition"]


def test_noise_floor_raises_the_resolution_and_hides_smaller_events():
    rng = np.random.default_rng(2)
    x = 10.0 + 0.01 * rng.standard_normal(400)
    x[200:] += 0.1  # 10 noise sd, significant
    floor = xr.DataArray([0.0, 0.5], dims="floor")
    da = xr.DataArray(np.stack([x, x]), dims=("floor", "step"))
    ds = transitions(da, detectors="pelt", calibration=NO_LADDER, noise_floor=floor)
    np.testing.assert_allclose(ds.resolution.values - ds.resolution.values[0], [0.0, 0.5])
    assert ds.significant.sum("transition").values.tolist() == [1, 0]
    assert ds.constant.values.tolist() == [False, True]  # range 0.15 < 0.5


def test_effect_is_the_planted_level_change():
    # two steps on a level of 20: +2 at 150 and -6 at 300 (noise sd 0.1)
    rng = np.random.default_rng(3)
    x = 20.0 + 0.1 * rng.standard_normal(450)
    x[150:] += 2.0
    x[300:] -= 6.0
    ds = transitions(x, detectors="pelt", calibration=NO_LADDER)
    sig = ds.significant.values
    np.testing.assert_allclose(ds.effect.values[sig], [2.0, -6.0], atol=0.15)
    level = np.median(np.abs(x))
    np.testing.assert_allclose(ds.relative_effect.values[sig], ds.effect.values[sig] / level)
    assert ds.sign.values[sig].tolist() == [1.0, -1.0]


def test_effects_window_stops_at_neighbouring_events():
    x = np.concatenate([np.zeros(30), np.ones(4), 3 * np.ones(30)])
    # events at 30 (0 -> 1) and 34 (1 -> 3): each sees only the plateau between them
    np.testing.assert_allclose(effects(x, np.array([30, 34]), np.array([30, 34])), [1.0, 2.0])


def test_notable_needs_a_large_enough_relative_effect():
    # both steps are many noise sd; only the second moves the level by more than 2 %
    rng = np.random.default_rng(4)
    x = 10.0 + 0.005 * rng.standard_normal(400)
    x[130:] += 0.05  # 0.5 % of the level
    x[270:] += 1.0  # 10 %
    ds = transitions(x, detectors="pelt", calibration=NO_LADDER)
    sig, note = ds.significant.values, ds.notable.values
    assert sig.sum() == 2
    assert ds.step.values[note].tolist() == [270.0]
    assert ds.attrs["notable_relative_effect"] == NOTABLE_RELATIVE
    stricter = transitions(x, detectors="pelt", calibration=NO_LADDER, notable=0.2)
    assert int(stricter.notable.sum()) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise_floor": -1.0}, "`noise_floor`"),
        ({"noise_floor": [1.0, 2.0, 3.0]}, "`noise_floor`"),
        ({"notable": -0.1}, "`notable`"),
        ({"progress": 3}, "`progress`"),
    ],
)
def test_invalid_resolution_options_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        transitions(np.zeros((2, 50)), **kwargs)


def test_progress_counts_the_series_finished():
    calls = []
    x = np.random.default_rng(5).standard_normal((3, 120))
    transitions(x, detectors="meanshift", calibration=NO_LADDER, progress=calls.append)
    assert calls == [1, 2, 3]
