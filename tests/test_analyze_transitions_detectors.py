"""Raw event detectors against direct loops, ruptures' reference PELT and planted events."""

import numpy as np
import pytest
import ruptures as rpt

from dimlapse.analyze import MeanShiftOptions, PeltOptions, ZScoreOptions
from dimlapse.analyze._transitions import DETECTORS
from dimlapse.analyze._transitions._detectors import (
    meanshift,
    meanshift_statistic,
    zscore,
    zscore_statistic,
)
from dimlapse.analyze._transitions._events import Events, runs
from dimlapse.analyze._transitions._noise import ar1_noise
from dimlapse.analyze._transitions._pelt import long_run_sd, pelt


def _zscore_loop(x, window, min_periods):
    """ndtracker's JumpDetector loop: trailing window, population std."""
    z = np.full(x.size, np.nan)
    for i in range(min_periods, x.size):
        w = x[max(0, i - window) : i]
        if np.std(w) > 1e-10:
            z[i] = (x[i] - np.mean(w)) / np.std(w)
    return z


def test_registry_names():
    assert set(DETECTORS) == {"zscore", "meanshift", "pelt"}


@pytest.mark.parametrize(("window", "min_periods"), [(50, 20), (10, 10), (7, 2)])
def test_zscore_statistic_matches_direct_loop(window, min_periods):
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal(300)) + 100.0  # offset: tests the centring
    z = zscore_statistic(x, window=window, min_periods=min_periods)[0]
    np.testing.assert_allclose(z, _zscore_loop(x, window, min_periods), rtol=1e-9, atol=1e-9)


def test_zscore_exceedances_match_ndtracker():
    ndt_jump = pytest.importorskip("ndt.core.jump_detector")
    rng = np.random.default_rng(5)
    x = rng.standard_normal(600)
    ref = ndt_jump.JumpDetector(window_size=50, z_threshold=2.0, min_samples=20)
    steps = [j.step for j in ref.detect_jumps(list(x))]
    z = zscore_statistic(x, window=50, min_periods=20)[0]
    assert np.flatnonzero(np.abs(z) > 2.0).tolist() == steps


def test_zscore_constant_window_is_undefined_not_inf():
    x = np.r_[np.ones(60), 5.0, np.ones(10)]
    z = zscore_statistic(x, window=50, min_periods=20)[0]
    assert np.isnan(z[60])
    assert len(zscore(x, ZScoreOptions())) == 0


def test_runs_merges_consecutive_same_sign_exceedances():
    stat = np.array(
        [
            [0, 3, 4, 3, 0, -3, -5, 3, 0, np.nan],
            [3, 0, 0, 0, 0, 0, 0, 0, 0, 3],
        ],
        dtype=np.float64,
    )
    ev = runs(stat, 2.0, "both")
    got = list(
        zip(
            ev.row.tolist(),
            ev.start.tolist(),
            ev.stop.tolist(),
            ev.peak.tolist(),
            ev.score.tolist(),
            ev.sign.tolist(),
            strict=True,
        )
    )
    assert got == [
        (0, 1, 3, 2, 4.0, 1),
        (0, 5, 6, 6, 5.0, -1),
        (0, 7, 7, 7, 3.0, 1),
        (1, 0, 0, 0, 3.0, 1),
        (1, 9, 9, 9, 3.0, 1),  # a run never continues across rows
    ]
    up = runs(stat, 2.0, "up")
    assert (up.sign == 1).all() and len(up) == 4
    down = runs(stat, 2.0, "down")
    assert len(down) == 1 and down.score[0] == 5.0
    np.testing.assert_array_equal(ev.max_per_row(3), [5.0, 3.0, -np.inf])
    np.testing.assert_array_equal(ev.count_per_row(3), [3, 2, 0])


def test_meanshift_statistic_matches_direct_loop():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(200) + 3.0
    w = 12
    d = np.full(x.size, np.nan)
    for t in range(w, x.size - w + 1):
        d[t] = x[t : t + w].mean() - x[t - w : t].mean()
    dev = np.abs(d - np.nanmedian(d))
    d /= np.nanquantile(dev, 0.25) / 0.31863936  # lower-quartile scale of the centred d
    np.testing.assert_allclose(meanshift_statistic(x, window=w)[0], d, rtol=1e-9, atol=1e-12)
    assert np.isnan(meanshift_statistic(x[:20], window=w)).all()


def test_meanshift_standardised_scale_on_white_noise():
    rng = np.random.default_rng(2)
    d = meanshift_statistic(rng.standard_normal((20, 2000)), window=25)
    # the lower-quartile scale of a Gaussian d is its sd, so the sd of d is about 1
    assert abs(np.nanstd(d) - 1.0) < 0.1


@pytest.mark.parametrize("detector", ["zscore", "meanshift", "pelt"])
def test_planted_step_is_one_event_at_the_step(detector):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(600)
    x[350:] += 6.0
    spec = DETECTORS[detector]
    ev = spec.detect(x, spec.options())
    best = int(np.argmax(ev.score))
    assert abs(int(ev.peak[best]) - 350) <= 2
    assert ev.sign[best] == 1
    after = (ev.stop >= 350) & (ev.start <= 375) & (ev.sign == 1)
    assert after.sum() == 1  # one event, not a run of exceedances


def test_pelt_l2_matches_ruptures_reference_pelt():
    # KernelCPD(kernel="linear") is ruptures' C PELT; Pelt(model="l2") the Python reference
    rng = np.random.default_rng(4)
    x = rng.standard_normal(160)
    x[50:] += 3.0
    x[110:] -= 4.0
    pen = 2 * np.log(x.size)
    ref = rpt.Pelt(model="l2", min_size=5, jump=1).fit(x).predict(pen=pen)[:-1]
    ev = pelt(x, PeltOptions(penalty=pen, merge_gap=0))
    assert ev.start.tolist() == ref == [50, 110]
    assert ev.sign.tolist() == [1, -1]


def test_pelt_merges_a_ramp_into_one_event():
    rng = np.random.default_rng(5)
    t = np.arange(400)
    x = np.clip((t - 200) / 20, 0, 1) * 10 + 0.3 * rng.standard_normal(t.size)
    ev = pelt(x, PeltOptions())
    assert len(ev) == 1
    assert 195 <= ev.start[0] and ev.stop[0] <= 225


@pytest.mark.parametrize("gap", [10, 25, 90])
def test_pelt_keeps_the_steps_of_a_staircase_apart(gap):
    # a plateau between two same-sign steps is not a ramp, however short: each step is an
    # event (merge_gap only bounds the ramps that may merge)
    rng = np.random.default_rng(gap)
    taus = 100 + gap * np.arange(5)
    x = rng.standard_normal(200 + 5 * gap)
    for tau in taus:
        x[tau:] += 6.0
    ev = pelt(x, PeltOptions(merge_gap=max(gap, 20)))
    assert ev.start.tolist() == ev.stop.tolist()  # no merged group
    assert all(np.min(np.abs(ev.start - t)) <= 1 for t in taus)


def _sigmoids(t, centres, widths, heights):
    """Sum of logistic rises, shape (t.size,): a noiseless staircase of smooth steps."""
    z = (t[:, None] - np.asarray(centres)) / np.asarray(widths)
    return (np.asarray(heights) / (1.0 + np.exp(-z))).sum(axis=1)


def _events_on(ev, centres, reach=25):
    """Index of the event spanning each centre (-1: none), one event per centre at most."""
    out = []
    for c in centres:
        hit = np.flatnonzero((ev.start - reach <= c) & (ev.stop + reach >= c))
        out.append(int(hit[0]) if hit.size == 1 else -1)
    return out


@pytest.mark.parametrize("noise", [0.0, 1e-3])
def test_pelt_splits_smooth_rises_at_the_plateau_between_them(noise):
    # noiseless (or nearly) smooth rises: PELT cuts the whole curve into min_size segments of
    # one sign, which the ramp merge would join into one event; the col between two humps of
    # jumps splits them: one event per rise, peaked on it, the tallest and the smallest alike
    # (the flat ends of the plateaus may leave single low-scored change points: calibration's
    # business, not the grouping's)
    t = np.arange(900.0)
    centres = [150, 280, 450]  # 130-170 samples apart, 8-20 wide: the plateaus are short
    x = _sigmoids(t, centres, [8, 12, 20], [10.0, 3.0, 1.0])
    x += noise * np.random.default_rng(1).standard_normal(t.size)
    ev = pelt(x, PeltOptions())
    idx = _events_on(ev, centres)
    assert -1 not in idx and len(set(idx)) == 3, (ev.start, ev.stop, ev.peak)
    assert np.all(np.abs(ev.peak[idx] - centres) <= 25), ev.peak


def test_pelt_keeps_one_smooth_rise_one_event():
    # one sigmoid has one hump of jumps: its tails are not rises of their own
    t = np.arange(600.0)
    ev = pelt(_sigmoids(t, [300], [20], [5.0]), PeltOptions())
    (i,) = _events_on(ev, [300])
    assert i >= 0 and abs(ev.peak[i] - 300) <= 25
    assert ev.start[i] <= 300 - 40 and ev.stop[i] >= 300 + 40  # both flanks of the rise
    assert ev.score[i] == ev.score.max()


@pytest.mark.parametrize("seed", range(10))
def test_pelt_noisy_ramps_are_not_split_into_humps(seed):
    # segment jumps of a noisy ramp scatter by their standard errors: no col is deep enough
    t = np.arange(400.0)
    x = np.clip((t - 200) / 20, 0, 1) * 10 + 0.3 * np.random.default_rng(seed).standard_normal(400)
    ev = pelt(x, PeltOptions())
    on_ramp = (ev.stop >= 200) & (ev.start <= 220)
    assert on_ramp.sum() == 1, (ev.start, ev.stop)


def test_pelt_constant_series_has_no_events():
    assert len(pelt(np.ones(100), PeltOptions())) == 0


def test_long_run_sd_closed_form():
    rng = np.random.default_rng(6)
    white = [long_run_sd(rng.standard_normal(4000), 25) for _ in range(20)]
    assert abs(np.mean(white) - 1.0) < 0.06
    phi = 0.5  # long-run sd of AR(1) = sigma / (1 - phi)
    ar = [long_run_sd(ar1_noise(rng, 1, 4000, phi, 1.0)[0], 25) for _ in range(20)]
    assert abs(np.mean(ar) - 1 / (1 - phi)) < 0.15


def test_raw_zscore_rule_fires_about_88_times_on_white_noise():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((20, 1600))
    # strictly consecutive exceedances (merge_gap=0): the study's count, about 88
    exact = zscore(x, ZScoreOptions(threshold=2.0, merge_gap=0)).count_per_row(20).mean()
    assert 80 <= exact <= 95
    # expected exceedances: P(|z| > 2) with z ~ sqrt(1 + 1/w) t_{w-1} scaled, w = 50
    from scipy import stats

    p = 2 * stats.t.sf(2.0 / np.sqrt((1 + 1 / 50) * 50 / 49), df=49)
    assert abs(exact - p * (1600 - 20)) < 8
    # default merges exceedances <= 3 samples apart of the same sign: a few fewer events
    merged = zscore(x, ZScoreOptions(threshold=2.0)).count_per_row(20).mean()
    assert 70 <= merged < exact


def test_detectors_accept_batches():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 300))
    pairs = ((zscore, ZScoreOptions()), (meanshift, MeanShiftOptions()), (pelt, PeltOptions()))
    for fn, opts in pairs:
        ev = fn(x, opts)
        assert isinstance(ev, Events)
        one = fn(x[1], opts)
        np.testing.assert_array_equal(ev.score[ev.row == 1], one.score)
