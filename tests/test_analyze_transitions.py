"""find_transitions / transitions: calibration on null and planted fixtures across many seeds."""

import numpy as np
import pytest
import xarray as xr

from dimlapse.analyze import find_transitions, transitions
from dimlapse.analyze._surrogates import ar1_noise
from dimlapse.analyze._transitions_core import bh_adjust, hierarchical_fdr
from dimlapse.analyze._transitions_tail import critical_score, fit_tail, gpd_pwm, tail_pvalues

ALPHA = 0.05


def _null(kind, rng, n):
    t = np.arange(n)
    if kind == "white":
        return rng.standard_normal(n)
    if kind == "ar09":  # unit marginal variance
        return ar1_noise(rng, 1, n, 0.9, np.sqrt(1 - 0.81))[0]
    if kind == "expdecay":  # loss-like: fastest at the start, edges included
        return 10 * np.exp(-t / (n / 8)) + rng.standard_normal(n)
    if kind == "expfast":
        return 20 * np.exp(-t / (n / 32)) + rng.standard_normal(n)
    raise ValueError(kind)


def _stack(rows):
    return xr.DataArray(np.array(rows), dims=("seed", "step"))


def _false_alarm_rate(kind, detector, seeds, n):
    rng = np.random.default_rng(1000 + seeds)
    da = _stack([_null(kind, rng, n) for _ in range(seeds)])
    ds = transitions(da, detectors=(detector,))
    # per series family-wise: any candidate with p <= alpha
    return float((ds.p_series.sel(detector=detector) <= ALPHA).mean())


def _planted_steps(rng, n, height, taus):
    x = rng.standard_normal(n) + 5 * np.exp(-np.arange(n) / (n / 8))
    for tau in taus:
        x[tau:] += height * rng.choice([-1.0, 1.0])
    return x


def _recall(detector, height, seeds, n, tol=3):
    rng = np.random.default_rng(2000 + int(height))
    taus = rng.integers(n // 5, 4 * n // 5, size=seeds)
    ds = transitions(
        _stack([_planted_steps(rng, n, height, [t]) for t in taus]), detectors=(detector,)
    )
    e = ds.sel(detector=detector)
    hits = 0
    for i, tau in enumerate(taus):
        found = e.step[i].values[(e.p_value[i] <= ALPHA).values]
        hits += bool(found.size and np.min(np.abs(found - tau)) <= tol)
    return hits / seeds


# -- null fixtures: silent --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["white", "ar09", "expdecay", "expfast"])
@pytest.mark.parametrize("detector", ["zscore", "meanshift"])
def test_false_alarm_rate_fast_detectors(kind, detector):
    # 20 seeds: at a true rate of 0.05, 4 or more alarms has probability 0.016
    assert _false_alarm_rate(kind, detector, 20, 800) <= 3 / 20


@pytest.mark.parametrize("kind", ["white", "ar09", "expdecay"])
def test_false_alarm_rate_pelt(kind):
    assert _false_alarm_rate(kind, "pelt", 12, 400) <= 2 / 12


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["white", "ar09", "expdecay", "expfast"])
@pytest.mark.parametrize("detector", ["zscore", "meanshift", "pelt"])
def test_false_alarm_rate_many_seeds(kind, detector):
    # 100 series of 1,600 samples: mean + 3 sd of Binomial(100, 0.05) is 11.5
    assert _false_alarm_rate(kind, detector, 100, 1600) <= 0.11


# -- planted level shifts: found where planted ------------------------------------------------


@pytest.mark.parametrize("detector", ["meanshift", "pelt"])
def test_recall_of_3_sd_level_shifts(detector):
    assert _recall(detector, 3.0, 12 if detector == "pelt" else 20, 800) >= 0.9


def test_recall_of_zscore_on_5_sd_level_shifts():
    # the study's rule is weak: max |z| of 1,600 white-noise samples is often above 4
    assert _recall("zscore", 5.0, 20, 800) >= 0.7


@pytest.mark.slow
@pytest.mark.parametrize("height", [3.0, 4.0, 5.0])
@pytest.mark.parametrize("detector", ["meanshift", "pelt"])
def test_recall_many_seeds(detector, height):
    assert _recall(detector, height, 100, 1600) >= 0.9


@pytest.mark.parametrize("detector", ["meanshift", "pelt"])
def test_multi_step_series_finds_every_step(detector):
    rng = np.random.default_rng(5)
    taus = [200, 420, 650]
    found_all = 0
    for _ in range(5):
        ds = find_transitions(_planted_steps(rng, 900, 4.0, taus), detector=detector)
        sig = ds.step.values[ds.significant.values]
        found_all += all(np.min(np.abs(sig - t)) <= 3 for t in taus)
        assert sig.size <= len(taus) + 1
    assert found_all >= 4


def test_ramp_and_sigmoid_are_one_event_with_onset_and_duration():
    rng = np.random.default_rng(6)
    t = np.arange(800)
    ramp = np.clip((t - 400) / 40, 0, 1) * 8 + rng.standard_normal(t.size)
    # (the study's z-score rule has too little power here: its null max |z| is about 4.6)
    for det in ("meanshift", "pelt"):
        # a 40-sample ramp is abrupt against a 200-sample trend scale (not against 50)
        ds = find_transitions(ramp, detector=det, trend_window=200)
        sig = ds.where(ds.significant, drop=True)
        assert sig.sizes["transition"] == 1, det
        assert abs(int(sig.onset.item()) - 400) <= 6, det
        assert abs(int(sig.duration.item()) - 40) <= 10, det
        assert abs(int(sig.step.item()) - 420) <= 6, det
    sigmoid = 8 / (1 + np.exp(-(t - 500) / 4)) + rng.standard_normal(t.size)
    ds = find_transitions(sigmoid, detector="meanshift")
    sig = ds.where(ds.significant, drop=True)
    assert sig.sizes["transition"] == 1
    assert abs(int(sig.step.item()) - 500) <= 3
    assert 5 <= int(sig.duration.item()) <= 40


def test_study_zscore_raw_count_versus_calibrated():
    raw, null, sig = [], [], []
    for seed in range(4):
        x = np.random.default_rng(seed).standard_normal(1600)
        ds = find_transitions(x, detector="zscore", merge_gap=0)
        raw.append(ds.attrs["n_candidates"])
        null.append(ds.attrs["n_null"])
        sig.append(ds.attrs["n_significant"])
    assert 80 <= np.mean(raw) <= 95  # the study's ~88 "jumps" on pure noise
    assert abs(np.mean(raw) - np.mean(null)) < 8  # the null count says so
    assert sum(sig) <= 1


# -- FDR across series ------------------------------------------------------------------------


def test_bh_adjust_against_hand_computation():
    p = np.array([0.01, 0.04, 0.03, 0.20, 0.005])
    # sorted: 0.005, 0.01, 0.03, 0.04, 0.2 -> m p / i: 0.025, 0.025, 0.05, 0.05, 0.2
    np.testing.assert_allclose(bh_adjust(p), [0.025, 0.05, 0.05, 0.2, 0.025])
    _, sel, level = hierarchical_fdr(p, 0.05)
    assert sel.tolist() == [True, True, True, False, True]
    assert level == pytest.approx(0.05 * 4 / 5)
    assert bh_adjust(np.array([])).size == 0


def test_transitions_applies_hierarchical_fdr_across_series():
    rng = np.random.default_rng(9)
    rows = [rng.standard_normal(500) for _ in range(6)]
    for r in rows[:3]:
        r[250:] += 5.0
    da = xr.DataArray(
        np.array(rows).reshape(2, 3, 500),
        dims=("kind", "layer", "step"),
        coords={"kind": ["weight", "activation"], "step": np.arange(500) * 5},
    )
    ds = transitions(da, detectors=("meanshift", "zscore"))
    assert ds.significant.dims == ("kind", "layer", "detector", "transition")
    assert ds.n_null.dims == ("kind", "layer", "detector")
    for d in ("meanshift", "zscore"):
        e = ds.sel(detector=d)
        p_series = e.p_series.values.ravel()
        q = bh_adjust(p_series)
        np.testing.assert_allclose(e.q_series.values.ravel(), q)
        m, r = p_series.size, int((q <= ALPHA).sum())
        expect = (q <= ALPHA).reshape(2, 3, 1) & (e.p_value.values <= ALPHA * r / m)
        np.testing.assert_array_equal(e.significant.values, expect)
    ms = ds.sel(detector="meanshift")
    assert ms.n_significant.sel(kind="weight").values.tolist() == [1, 1, 1]
    step = ms.step.where(ms.significant).sel(kind="weight").max("transition")
    np.testing.assert_allclose(step, 1250, atol=5)  # sample 250 (+-1) at every = 5


def test_transitions_single_series_equals_find_transitions():
    x = np.random.default_rng(11).standard_normal(400)
    x[200:] += 4
    one = find_transitions(x, detector="meanshift", seed=3)
    many = transitions(
        xr.DataArray(x[None], dims=("layer", "step")), detectors=("meanshift",), seed=3
    ).isel(layer=0, detector=0)
    np.testing.assert_allclose(many.p_value.values[: one.sizes["transition"]], one.p_value)
    np.testing.assert_array_equal(
        many.significant.values[: one.sizes["transition"]], one.significant
    )


# -- NaN, short, empty, validation ------------------------------------------------------------


def test_nan_samples_are_dropped_and_steps_kept():
    rng = np.random.default_rng(12)
    x = rng.standard_normal(500)
    x[300:] += 5
    x[[10, 50, 120, 299]] = np.nan
    steps = np.arange(500) * 10
    ds = find_transitions(x, steps=steps, detector="meanshift")
    assert ds.step.values[ds.significant.values].tolist() == [3000]
    assert ds.attrs["n_samples"] == 496


def test_all_nan_and_short_series_give_no_transitions():
    ds = find_transitions(np.full(100, np.nan))
    assert ds.sizes["transition"] == 0 and ds.attrs["tested"] is False
    assert "NaN" in ds.attrs["note"]
    short = find_transitions(np.arange(10.0), detector="meanshift")
    assert short.sizes["transition"] == 0 and "needs 50" in short.attrs["note"]
    empty = find_transitions([])
    assert empty.sizes["transition"] == 0
    da = xr.DataArray(
        np.vstack([np.full(300, np.nan), np.random.default_rng(0).standard_normal(300)]),
        dims=("layer", "step"),
    )
    ds = transitions(da, detectors=("zscore",))
    assert ds.tested.values[:, 0].tolist() == [False, True]
    assert np.isnan(ds.n_candidates.values[0, 0])


def test_attrs_record_every_parameter_and_the_null_count():
    ds = find_transitions(np.random.default_rng(0).standard_normal(300), threshold=2.5)
    for k in (
        "detector",
        "alpha",
        "window",
        "threshold",
        "direction",
        "trend_window",
        "trend_degree",
        "noise",
        "n_surrogates",
        "seed",
        "n_candidates",
        "n_null",
        "p_value_resolution",
        "noise_phi",
        "noise_sigma",
    ):
        assert k in ds.attrs, k
    assert ds.attrs["threshold"] == 2.5
    assert ds.attrs["n_candidates"] == ds.sizes["transition"]


def test_seeded_and_deterministic():
    x = np.random.default_rng(1).standard_normal(300)
    a = find_transitions(x, seed=1)
    xr.testing.assert_identical(a, find_transitions(x, seed=1))
    assert not np.array_equal(a.p_value, find_transitions(x, seed=2).p_value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"detector": "cusum"}, "`detector`"),
        ({"alpha": 1.5}, "`alpha`"),
        ({"window": 1}, "`window`"),
        ({"threshold": -1}, "`threshold`"),
        ({"direction": "sideways"}, "`direction`"),
        ({"trend_window": 2}, "`trend_window`"),
        ({"n_surrogates": 0}, "`n_surrogates`"),
        ({"noise": "pink"}, "`noise`"),
        ({"bogus": 1}, "Unknown parameter `bogus`"),
        ({"min_periods": 60}, "`min_periods` <= `window`"),
        ({"detector": "pelt", "model": "l1"}, "`model`"),
        ({"steps": np.arange(5)}, "`steps`"),
    ],
)
def test_invalid_parameters_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        find_transitions(np.zeros(100), **kwargs)


def test_invalid_values_and_dataarray():
    with pytest.raises(ValueError, match="`values` to be 1-D"):
        find_transitions(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="`steps` to be strictly increasing"):
        find_transitions(np.zeros(3), steps=np.array([0, 2, 1]))
    with pytest.raises(ValueError, match="'step' dimension"):
        transitions(xr.DataArray(np.zeros(5), dims="time"))
    with pytest.raises(ValueError, match="`detectors`"):
        transitions(xr.DataArray(np.zeros(5), dims="step"), detectors=())


# -- fitted tail below the Monte-Carlo resolution ---------------------------------------------


def test_gpd_pwm_recovers_planted_parameters():
    from scipy import stats

    rng = np.random.default_rng(20)
    for xi, sigma in [(0.0, 1.0), (0.2, 0.5), (0.4, 2.0)]:
        y = stats.genpareto.rvs(xi, scale=sigma, size=20000, random_state=rng)
        s_hat, xi_hat = gpd_pwm(y)
        assert abs(xi_hat - xi) < 0.05 and abs(s_hat / sigma - 1) < 0.05, (xi, sigma)


def test_tail_p_matches_a_large_monte_carlo_where_the_count_cannot_resolve():
    # maxima of Gumbel surrogates: the tail fitted to 200 of them against the exact survival
    from scipy import stats

    rng = np.random.default_rng(21)
    scores = stats.gumbel_r.isf([1e-2, 1e-3, 1e-4])
    ratios = []
    for _ in range(40):
        tail = fit_tail(stats.gumbel_r.rvs(size=200, random_state=rng))
        ratios.append(tail.sf(scores) / stats.gumbel_r.sf(scores))
    ratio = np.exp(np.mean(np.log(ratios), axis=0))  # geometric mean over fits
    assert np.all(ratio > 0.7) and np.all(ratio < 2.0), ratio  # unbiased to slightly heavy
    # the inverse is consistent
    assert tail.sf(np.array([tail.isf(1e-3)]))[0] == pytest.approx(1e-3)


def test_tail_pvalues_keep_the_count_in_the_bulk_and_fit_beyond_it():
    m = np.arange(200, dtype=np.float64)  # maxima 0..199
    tail = fit_tail(m)
    p, from_tail = tail_pvalues(np.array([100.0, 195.0, 400.0]), m, tail)
    assert p[0] == pytest.approx(101 / 201) and not from_tail[0]  # 100 maxima reach it
    assert from_tail[1:].all() and p[2] < 1 / 201 and p[1] > p[2]
    # censored (no-event) surrogates: too few finite maxima for a fit, the count stays
    few = np.r_[np.full(190, -np.inf), np.arange(10.0)]
    assert not fit_tail(few).fitted
    p, from_tail = tail_pvalues(np.array([50.0]), few, fit_tail(few))
    assert p[0] == pytest.approx(1 / 201) and not from_tail.any()
    crit = critical_score(m, tail, 0.001)
    assert tail_pvalues(np.array([crit + 1e-6]), m, tail)[0][0] <= 0.001


def _null_pvalues(kinds, n_series, n, seed, detectors):
    rng = np.random.default_rng(seed)
    rows = [_null(kinds[i % len(kinds)], rng, n) for i in range(n_series)]
    return transitions(_stack(rows), detectors=detectors).p_series


def test_null_series_p_values_are_not_below_nominal():
    # 60 null series of 800 samples: a uniform p puts Binomial(60, 0.05) <= 8 (99 %) below 0.05
    # and Binomial(60, 0.01) <= 3 below 0.01
    p = _null_pvalues(["white", "ar09", "expdecay"], 60, 800, 30, ("zscore", "meanshift"))
    for d in ("zscore", "meanshift"):
        v = p.sel(detector=d).values
        assert (v <= 0.05).sum() <= 8 and (v <= 0.01).sum() <= 3, (d, np.sort(v)[:5])


def _planted_family(seed, n, detectors, m=54):
    rng = np.random.default_rng(seed)
    kinds = ["white", "ar09", "expdecay"]
    rows = [_null(kinds[i % 3], rng, n) for i in range(m)]
    k = int(rng.choice([i for i in range(m) if i % 3 != 1]))  # white or decay: unit-sd noise
    tau = int(rng.integers(n // 5, 4 * n // 5))
    rows[k][tau:] += 5.0 * rng.choice([-1.0, 1.0])
    return transitions(_stack(rows), detectors=detectors), k, tau


def _planted_outcome(ds, detector, k, tau):
    e = ds.sel(detector=detector)
    found = e.step[k].values[e.significant[k].values]
    hit = bool(found.size and np.min(np.abs(found - tau)) <= 3)
    others = int((e.n_significant.values > 0).sum() - (e.n_significant.values[k] > 0))
    return hit, others


@pytest.mark.parametrize("detector", ["meanshift", "pelt"])
def test_one_planted_step_among_54_series_survives_fdr(detector):
    # the count alone cannot reach alpha / 54 < 1 / 201: only the fitted tail makes this work
    ds, k, tau = _planted_family(40, 800, (detector,))
    assert _planted_outcome(ds, detector, k, tau) == (True, 0)
    assert ds.sel(detector=detector).p_series.values[k] < ALPHA / 54


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_one_planted_step_among_54_series_many_seeds(seed):
    ds, k, tau = _planted_family(100 + seed, 1600, ("meanshift", "pelt"))
    for d in ("meanshift", "pelt"):
        assert _planted_outcome(ds, d, k, tau) == (True, 0), d


@pytest.mark.slow
def test_null_series_p_values_are_uniform_many_series():
    p = _null_pvalues(["white", "ar09", "expdecay"], 300, 1600, 31, ("zscore", "meanshift"))
    for d in ("zscore", "meanshift"):
        v = p.sel(detector=d).values  # Binomial(300, .05): mean 15, +3 sd = 26
        assert (v <= 0.05).sum() <= 26 and (v <= 0.01).sum() <= 8, d


def test_workers_do_not_change_the_result():
    rng = np.random.default_rng(41)
    da = _stack([rng.standard_normal(400) for _ in range(4)])
    one = transitions(da, detectors=("meanshift", "pelt"), workers=1)
    two = transitions(da, detectors=("meanshift", "pelt"), workers=2)
    xr.testing.assert_identical(one, two)
    with pytest.raises(ValueError, match="`workers`"):
        transitions(da, workers=0)
