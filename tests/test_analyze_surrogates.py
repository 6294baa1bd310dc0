"""Null surrogates: smoother, robust AR(1) fit, AR(1) paths, block shuffle."""

import numpy as np
import pytest

from dimlapse.analyze._surrogates import (
    ar1_noise,
    block_shuffle,
    fit_ar1,
    robust_sd,
    smoother_matrix,
    surrogates,
)


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
    trend, y, info = surrogates(x, n_surrogates=64, trend_window=tw, rng=rng, noise=noise)
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
