"""The null: smoother, event excision, robust AR(1) fit, AR(1) paths, block shuffle."""

import numpy as np
import pytest

from dimlapse.analyze._transitions._noise import (
    ar1_noise,
    block_shuffle,
    event_component,
    excise_events,
    fit_ar1,
    low_quantile_sd,
    low_quantile_sds_masked,
    robust_sd,
)
from dimlapse.analyze._transitions._smoother import smoother_matrix
from dimlapse.analyze._transitions._surrogates import surrogates
from dimlapse.pipelines.bench._families import ar1


@pytest.mark.parametrize("degree", [0, 1, 2])
@pytest.mark.parametrize("n", [2, 7, 60, 400])
def test_smoother_reproduces_polynomials_up_to_its_degree(degree, n):
    w = smoother_matrix(n, 40, degree)
    t = np.arange(n, dtype=np.float64)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-9)  # constants, edges included
    if n > degree + 1:
        for p in range(1, degree + 1):
            poly = (t / n) ** p
            np.testing.assert_allclose(w @ poly, poly, atol=1e-8)


def test_smoother_smears_a_step_over_about_trend_window_samples():
    n, tw = 600, 80
    step = (np.arange(n) >= 300).astype(np.float64)
    for degree in (1, 2):
        s = smoother_matrix(n, tw, degree) @ step
        lo, hi = np.flatnonzero(s > 0.05)[0], np.flatnonzero(s < 0.95)[-1]
        assert 0.5 * tw <= hi - lo <= 1.2 * tw
        assert abs(s[300] - 0.5) < 0.05  # centred on the step


@pytest.mark.parametrize("degree", [1, 2])
@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_fit_ar1_recovers_planted_parameters_on_a_trend(phi, degree):
    rng = np.random.default_rng(7)
    n, tw = 1600, 100
    w = smoother_matrix(n, tw, degree)
    trend = 10 * np.exp(-np.arange(n) / 200)
    est = []
    for _ in range(15):
        x = trend + ar1_noise(rng, 1, n, phi, 1.0)[0]
        est.append(fit_ar1(x - w @ x, tw, degree))
    phi_hat, sigma_hat = np.mean(est, axis=0)
    assert abs(phi_hat - phi) < 0.06
    assert abs(sigma_hat - 1.0) < 0.06


def test_fit_ar1_ignores_a_planted_step():
    rng = np.random.default_rng(3)
    n, tw = 1600, 100
    w = smoother_matrix(n, tw, 2)
    x = ar1_noise(rng, 1, n, 0.5, 1.0)[0]
    x[800:] += 5.0
    phi_hat, sigma_hat = fit_ar1(x - w @ x, tw, 2)
    assert abs(phi_hat - 0.5) < 0.1
    assert abs(sigma_hat - 1.0) < 0.15


def test_fit_ar1_of_a_constant_residual_is_zero():
    assert fit_ar1(np.zeros(50), 20, 2) == (0.0, 0.0)


def test_ar1_noise_moments_match_closed_form():
    rng = np.random.default_rng(0)
    phi, sigma = 0.8, 2.0
    e = ar1_noise(rng, 4000, 60, phi, sigma)
    var = sigma**2 / (1 - phi**2)
    # stationary from the first sample on: the variance of every column is sigma^2 / (1-phi^2)
    np.testing.assert_allclose(e[:, 0].var(), var, rtol=0.08)
    np.testing.assert_allclose(e[:, -1].var(), var, rtol=0.08)
    lag1 = np.mean(e[:, 1:] * e[:, :-1]) / np.mean(e * e)
    assert abs(lag1 - phi) < 0.02


def test_block_shuffle_keeps_the_values():
    rng = np.random.default_rng(1)
    r = rng.standard_normal(103)
    out = block_shuffle(rng, r, 5, 10)
    assert out.shape == (5, 103)
    for row in out:
        np.testing.assert_array_equal(np.sort(row), np.sort(r))
    assert not np.array_equal(out[0], r)


def test_robust_sd_gaussian_and_quantised_fallback():
    rng = np.random.default_rng(2)
    assert abs(float(robust_sd(rng.standard_normal(20000))) - 1.0) < 0.03
    q = np.zeros(100)
    q[::10] = 1.0  # MAD is 0: falls back to the classical sd
    assert float(robust_sd(q)) == pytest.approx(np.std(q))


@pytest.mark.parametrize("noise", ["ar1", "block"])
def test_surrogates_share_trend_and_residual_scale(noise):
    rng = np.random.default_rng(4)
    n, tw = 800, 100
    t = np.arange(n)
    x = 8 * np.exp(-t / 100) + ar1_noise(rng, 1, n, 0.7, 0.5)[0]
    trend, y, info = surrogates(x, n_surrogates=64, trend_window=tw, rng=rng, noise=noise, degree=1)
    w = smoother_matrix(n, tw, 1)
    np.testing.assert_allclose(trend, w @ x)
    assert y.shape == (64, n)
    r_obs = np.std(x - trend)
    r_sur = np.std(y - trend, axis=1).mean()
    assert abs(r_sur / r_obs - 1.0) < 0.15

    # lag-1 autocorrelation of the surrogate residual matches the observed one
    def lag1(v):
        v = v - v.mean(axis=-1, keepdims=True)
        return (v[..., 1:] * v[..., :-1]).sum(-1) / (v * v).sum(-1)

    assert abs(lag1(y - trend).mean() - lag1(x - trend)) < 0.08
    assert ("noise_phi" in info) == (noise == "ar1")


def _staircase(rng, n=600, heights=(10.0, 10.0, 10.0, 10.0, 10.0), gap=25, phi=0.0):
    taus = n // 3 + gap * np.arange(len(heights))
    x = ar1(rng, n, phi) if phi else rng.standard_normal(n)
    for tau, h in zip(taus, heights, strict=True):
        x[tau:] += h
    return x, taus


def test_excise_events_leaves_null_series_alone():
    rng = np.random.default_rng(10)
    n, tw = 800, 50
    w = smoother_matrix(n, tw, 2)
    touched = 0
    for phi in (0.0, 0.5, 0.9):
        for _ in range(20):
            x = ar1(rng, n, phi) + 10 * np.exp(-np.arange(n) / 100)
            clean, marked = excise_events(x, trend_window=tw)
            touched += bool(marked.any())
            assert marked.mean() < 0.03
            a = fit_ar1(x - w @ x, tw, 2)
            b = fit_ar1(clean - w @ clean, tw, 2, excised=marked)
            np.testing.assert_allclose(a, b, atol=0.03)
    # an exceedance of 5 robust sd is rare on noise; the odd one sits where a loss-like decay
    # bends fastest (the first samples), and costs the fit nothing
    assert touched <= 3


def test_excise_events_removes_each_step_of_a_staircase():
    rng = np.random.default_rng(11)
    x, taus = _staircase(rng)
    clean, marked = excise_events(x, trend_window=50)
    # the jump x[tau] - x[tau - 1] is increment tau - 1
    assert set(taus - 1) <= set(np.flatnonzero(marked))
    assert marked.sum() <= 3 * taus.size
    assert np.ptp(clean) < 8  # no staircase left: white noise of unit sd


def test_fit_ar1_on_a_staircase_describes_the_noise_only_after_excision():
    rng = np.random.default_rng(12)
    n, tw = 600, 50
    w = smoother_matrix(n, tw, 2)
    plain, excised = [], []
    for _ in range(10):
        x, _ = _staircase(rng, n=n, phi=0.5)
        plain.append(fit_ar1(x - w @ x, tw, 2))
        clean, marked = excise_events(x, trend_window=tw)
        excised.append(fit_ar1(clean - w @ clean, tw, 2, excised=marked))
    sigma = np.sqrt(1 - 0.25)  # innovation sd of unit-variance AR(1) 0.5
    phi_hat, sigma_hat = np.mean(excised, axis=0)
    assert abs(phi_hat - 0.5) < 0.1
    assert abs(sigma_hat / sigma - 1.0) < 0.15
    assert np.mean(plain, axis=0)[0] > phi_hat + 0.15  # the staircase taken for persistence


def test_event_component_is_the_sharp_staircase():
    x = np.zeros(300)
    x[100:] += 4.0
    x[130:] += 2.0
    known = np.zeros(299, dtype=bool)
    known[[99, 129]] = True
    ev = event_component(x + 0.01 * np.arange(300), known, 50)
    np.testing.assert_allclose(ev, x, atol=1e-9)


def test_low_quantile_sd_survives_a_majority_of_events():
    rng = np.random.default_rng(13)
    d = rng.standard_normal((4, 4000))
    np.testing.assert_allclose(low_quantile_sd(d), 1.0, atol=0.06)
    d[:, :2000] += rng.choice([-8.0, 8.0], size=(4, 2000))  # half of it events
    # the lower quartile of the deviations is the clean half's median: 0.674 / 0.319 = 2.1
    assert np.all(low_quantile_sd(d) < 2.4)
    assert np.all(robust_sd(d) > 4.0)  # a MAD breaks down


@pytest.mark.parametrize("m", [1, 2, 3, 4, 7, 60, 1501])
def test_low_quantile_sds_masked_equals_row_by_row_bit_for_bit(m):
    # the second algorithm is numpy's own median and quantile on each row's kept values
    rng = np.random.default_rng(m)
    d = rng.standard_normal((40, m)) * rng.choice([1e-9, 1.0, 1e6], size=(40, 1))
    d[:5] = np.round(d[:5])  # ties and zeros
    d[5] = 3.0  # a constant row: the quantile is 0, the rms fallback answers
    keep = rng.random((40, m)) < rng.uniform(0.2, 1.0, size=(40, 1))
    keep[:, 0] = True  # every row keeps a value
    keep[6] = True  # and one row keeps them all
    want = np.array([low_quantile_sd(d[r, keep[r]][None, :])[0] for r in range(40)])
    got = low_quantile_sds_masked(d, keep)
    assert np.array_equal(got, want)


def test_planted_surrogates_carry_the_known_events_sharp():
    rng = np.random.default_rng(14)
    x, taus = _staircase(rng, n=400, heights=(6.0, 6.0), gap=30)
    known = np.zeros(399, dtype=bool)
    known[taus - 1] = True
    _, y, _ = surrogates(x, n_surrogates=400, trend_window=50, rng=rng, known=known, plant=True)
    jumps = y[:, taus] - y[:, taus - 1]  # (surrogate, step)
    sharp = event_component(x, known, 50)
    np.testing.assert_allclose(jumps.mean(axis=0), sharp[taus] - sharp[taus - 1], atol=0.3)
    _, y0, _ = surrogates(x, n_surrogates=400, trend_window=50, rng=rng)
    assert np.all(np.abs((y0[:, taus] - y0[:, taus - 1]).mean(axis=0)) < 1.5)  # smeared
