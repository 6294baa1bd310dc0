"""Spectral metrics against closed forms, bounds and degenerate spectra."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dimlapse.analyze import SPECTRAL_METRICS, DegenerateSpectrumWarning
from dimlapse.analyze._metrics import (
    effective_rank,
    energy_rank,
    epsilon_rank,
    nuclear_norm_ratio,
    numerical_rank,
    participation_ratio,
    rankme,
    stable_rank,
)

REQUIRED = {
    "stable_rank",
    "participation_ratio",
    "effective_rank",
    "rankme",
    "energy_rank_90",
    "energy_rank_99",
    "nuclear_norm_ratio",
    "numerical_rank",
    "epsilon_rank",
}
SCALE_FREE = sorted(set(SPECTRAL_METRICS) - {"epsilon_rank"})  # epsilon-rank is absolute


def test_registry_has_the_required_metrics():
    assert REQUIRED <= set(SPECTRAL_METRICS)


@pytest.mark.parametrize("k", [1, 2, 7, 100])
def test_flat_spectrum_closed_form(k):
    s = np.ones(k)
    for name in ["stable_rank", "participation_ratio", "effective_rank", "nuclear_norm_ratio"]:
        np.testing.assert_allclose(SPECTRAL_METRICS[name](s), k, rtol=1e-12, err_msg=name)
    assert SPECTRAL_METRICS["numerical_rank"](s) == k
    assert SPECTRAL_METRICS["energy_rank_90"](s) == math.ceil(0.9 * k - 1e-9)
    assert SPECTRAL_METRICS["energy_rank_99"](s) == math.ceil(0.99 * k - 1e-9)
    # p_i = 1/k + eps: H = -k (1/k + eps) log(1/k + eps)
    p = 1 / k + 1e-7
    np.testing.assert_allclose(rankme(s), math.exp(-k * p * math.log(p)), rtol=1e-12)


@pytest.mark.parametrize(("r", "k"), [(0.5, 10), (0.9, 50), (0.99, 200)])
def test_geometric_spectrum_closed_form(r, k):
    s = r ** np.arange(k)
    geo = lambda q, m: (1 - q**m) / (1 - q)  # noqa: E731  sum_{i<m} q**i
    np.testing.assert_allclose(stable_rank(s), geo(r**2, k), rtol=1e-12)
    np.testing.assert_allclose(participation_ratio(s), geo(r**2, k) ** 2 / geo(r**4, k), rtol=1e-12)
    np.testing.assert_allclose(nuclear_norm_ratio(s), geo(r, k), rtol=1e-12)
    # p_i = c r**i: H = -log c - log(r) * sum_i i p_i, sum_i i r**i in closed form
    c = 1 / geo(r, k)
    mean_i = c * r * (1 - k * r ** (k - 1) + (k - 1) * r**k) / (1 - r) ** 2
    np.testing.assert_allclose(effective_rank(s), math.exp(-math.log(c) - math.log(r) * mean_i))
    # energy: fewest m with 1 - r**(2m) >= f (1 - r**(2k))
    for f in (0.9, 0.99):
        m = math.ceil(math.log(1 - f * (1 - r ** (2 * k))) / math.log(r**2) - 1e-9)
        assert energy_rank(s, fraction=f) == m


def test_single_spike_is_rank_one():
    s = np.array([3.0, 0.0, 0.0, 0.0])
    for name in REQUIRED - {"epsilon_rank", "rankme"}:
        assert SPECTRAL_METRICS[name](s) == 1.0, name
    np.testing.assert_allclose(rankme(s), 1.0, rtol=1e-5)


def test_energy_rank_thresholds():
    s = np.sqrt([0.5, 0.3, 0.2])
    assert energy_rank(s, fraction=0.5) == 1
    assert energy_rank(s, fraction=0.8) == 2
    assert energy_rank(s, fraction=0.81) == 3
    assert SPECTRAL_METRICS["energy_rank_90"](s) == 3


def test_numerical_rank_tolerance():
    s = np.array([1.0, 1e-3, 1e-9, 1e-15, 0.0])
    assert numerical_rank(s) == 3  # default rtol = 5 eps ~ 1.1e-15
    assert numerical_rank(s, rtol=1e-6) == 2
    assert numerical_rank(s, rtol=1e-12) == 3
    assert numerical_rank(s * 1e6, rtol=1e-6) == 2  # relative to s_1


def test_epsilon_rank_counts_gram_eigenvalues():
    s = np.sqrt([10.0, 1.0, 0.1, 0.001])
    assert epsilon_rank(s) == 3  # s**2 > 1e-3
    assert epsilon_rank(s, epsilon=0.5) == 2
    assert epsilon_rank(s, epsilon=0.5, n_samples=10) == 1  # s**2 / 10 > 0.5


@pytest.mark.parametrize("name", sorted(SPECTRAL_METRICS))
def test_vectorised_over_leading_axes(name):
    rng = np.random.default_rng(1)
    s = -np.sort(-rng.exponential(size=(2, 3, 6)), axis=-1)
    out = SPECTRAL_METRICS[name](s)
    assert out.shape == (2, 3)
    assert out.dtype == np.float64
    loop = np.array([[SPECTRAL_METRICS[name](s[i, j]) for j in range(3)] for i in range(2)])
    np.testing.assert_allclose(out, loop, rtol=1e-13)


@pytest.mark.parametrize("name", SCALE_FREE)
def test_scale_invariant(name):
    s = np.array([5.0, 3.0, 1.0, 0.2, 0.01])
    f = SPECTRAL_METRICS[name]
    for scale in (1e-150, 1e-6, 1e8, 1e150):  # no overflow in s**4 either
        np.testing.assert_allclose(f(s * scale), f(s), rtol=1e-12, err_msg=f"{scale}")


@pytest.mark.parametrize("name", sorted(SPECTRAL_METRICS))
def test_degenerate_spectra_warn_and_stay_defined(name):
    f = SPECTRAL_METRICS[name]
    counts = name in {"energy_rank_90", "energy_rank_99", "numerical_rank", "epsilon_rank"}
    s = np.array([[3.0, 1.0, 0.0], [0.0, 0.0, 0.0], [np.nan, 1.0, 0.0]])
    with pytest.warns(DegenerateSpectrumWarning, match="1 spectra hold NaN.*1 are all zero"):
        out = f(s)
    assert np.isfinite(out[0]) and out[0] >= 1
    assert (out[1] == 0) if counts else np.isnan(out[1])  # dead layer
    assert np.isnan(out[2])  # NaN input
    with pytest.warns(DegenerateSpectrumWarning, match="all zero or empty"):
        empty = f(np.zeros((4, 0)))
    assert empty.shape == (4,)
    assert (empty == 0).all() if counts else np.isnan(empty).all()


@pytest.mark.parametrize("name", sorted(SPECTRAL_METRICS))
def test_healthy_spectra_do_not_warn(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SPECTRAL_METRICS[name](np.array([[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))


def test_scalar_spectrum_is_rejected():
    with pytest.raises(ValueError, match="Expected `s` to have a trailing rank axis"):
        stable_rank(np.float64(1.0))


spectra_st = arrays(
    np.float64,
    st.integers(1, 40),
    elements=st.floats(0, 1e6, allow_nan=False, allow_subnormal=False),
).filter(lambda a: a.max() > 1e-100)


@settings(max_examples=200, deadline=None)
@given(spectra_st)
def test_bounds_hold_for_any_spectrum(raw):
    s = np.sort(raw)[::-1]
    k = s.size
    tol = 1e-9
    for name in ("participation_ratio", "stable_rank", "effective_rank", "nuclear_norm_ratio"):
        v = SPECTRAL_METRICS[name](s)
        assert 1 - tol <= v <= k * (1 + tol), (name, v)
    # zero components add nothing: PR and energy ranks are bounded by the nonzero count
    nonzero = (s > 0).sum()
    assert participation_ratio(s) <= nonzero * (1 + tol)
    assert stable_rank(s) <= nuclear_norm_ratio(s) ** 2 * (1 + tol)
    e90, e99 = SPECTRAL_METRICS["energy_rank_90"](s), SPECTRAL_METRICS["energy_rank_99"](s)
    assert 1 <= e90 <= e99 <= nonzero
    assert energy_rank(s, fraction=0.5) <= e90
    assert 1 <= numerical_rank(s) <= k
