"""episodes: notable events that coincide across series, with planted episodes."""

import numpy as np
import pytest
import xarray as xr

from dimlapse.analyze import Calibration, transitions
from dimlapse.analyze._transitions import episodes

NO_LADDER = Calibration(scales=())


@pytest.fixture(scope="module")
def planted():
    """(kind 2, layer 3) series on steps every 5: a shared spike-like shift at step 1000 in all
    six, a shift at 1500 in two activation layers only, and a lone shift at 600 in one."""
    rng = np.random.default_rng(14)
    steps = np.arange(0, 2000, 5)
    x = 8.0 + 0.02 * rng.standard_normal((2, 3, steps.size))
    x[..., steps >= 1000 + rng.integers(0, 3)] += 1.0
    x[1, :2, steps >= 1500] -= 0.8
    x[0, 2, steps >= 600] += 0.6
    da = xr.DataArray(
        x, dims=("kind", "layer", "step"),
        coords={"kind": ["weight", "activation"], "layer": ["l0", "l1", "l2"], "step": steps},
    )  # fmt: skip
    return transitions(da, detectors=("meanshift", "pelt"), calibration=NO_LADDER)


def test_planted_episodes_are_found_with_their_series(planted):
    ep, labelled = episodes(planted, context={"loss spike": [(990, 1010)], "lr": [(3000, 3100)]})
    assert ep.attrs["detector"] == "pelt"
    assert ep.attrs["window"] == 25.0  # 5 capture intervals of 5 steps
    assert ep.sizes["episode"] == 3
    order = np.argsort(ep.step.values)
    np.testing.assert_allclose(ep.step.values[order], [600, 1000, 1500], atol=10)
    assert ep.n_series.values[order].tolist() == [1, 6, 2]
    assert ep.n_layers.values[order].tolist() == [1, 3, 2]
    assert ep.kinds.values[order].tolist() == ["weight", "activation,weight", "activation"]
    assert ep.context.values[order].tolist() == ["", "loss spike", ""]
    # every notable pelt event carries its episode; the other detector none
    lab = labelled.episode.sel(detector="pelt")
    note = planted.notable.sel(detector="pelt")
    assert bool(((lab >= 0) == note).all())
    assert bool((labelled.episode.sel(detector="meanshift") == -1).all())
    assert int((lab == ep.episode.values[order][1]).sum()) == 6


def test_min_series_and_window(planted):
    ep, labelled = episodes(planted, min_series=2)
    assert sorted(ep.n_series.values.tolist()) == [2, 6]
    assert int((labelled.episode >= 0).sum()) == 8
    two, _ = episodes(planted, window=600.0)  # 600 and 1000 within 600 steps; 1500 not
    assert sorted(two.n_series.values.tolist()) == [2, 6]
    wide, _ = episodes(planted, window=1000.0)
    assert wide.sizes["episode"] == 1 and wide.n_series.item() == 6


def test_a_single_detector_result_and_no_events():
    x = np.random.default_rng(0).standard_normal((2, 300))
    tr = transitions(x, detectors="meanshift", calibration=NO_LADDER)
    ep, labelled = episodes(tr)
    assert ep.sizes["episode"] == 0
    assert labelled.episode.dims == tr.notable.dims
    assert bool((labelled.episode == -1).all())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"context": [(1, 2)]}, "`context`"),
        ({"context": {"spike": [(5, 1)]}}, "start <= end"),
        ({"context": {"spike": 3}}, "context"),
        ({"window": -1.0}, "`window`"),
        ({"detector": "zscore"}, "`detector`"),
        ({"min_series": 0}, "`min_series`"),
    ],
)
def test_invalid_arguments_name_themselves(planted, kwargs, match):
    with pytest.raises(ValueError, match=match):
        episodes(planted, **kwargs)
    with pytest.raises(ValueError, match="`trans`"):
        episodes(xr.Dataset())
