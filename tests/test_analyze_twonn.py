"""TwoNN intrinsic dimension against planted ground truth."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from dimlapse.analyze import DegenerateSpectrumWarning, twonn
from dimlapse.analyze._twonn import two_nearest_distances


def embed(points, ambient, rng):
    """Map (n, d) points isometrically into R^ambient with a random orthonormal frame."""
    q, _ = np.linalg.qr(rng.standard_normal((ambient, points.shape[1])))
    return points @ q.T + rng.standard_normal(ambient)  # plus an offset


@pytest.mark.parametrize("d", [1, 2, 3, 5, 8])
def test_gaussian_on_linear_subspace(d):
    rng = np.random.default_rng(d)
    x = embed(rng.standard_normal((2000, d)), 40, rng)
    assert twonn(x) == pytest.approx(d, rel=0.12)


@pytest.mark.parametrize("d", [2, 4, 6])
def test_uniform_cube_embedded(d):
    rng = np.random.default_rng(10 + d)
    x = embed(rng.uniform(size=(2000, d)), 100, rng)
    assert twonn(x) == pytest.approx(d, rel=0.15)


def test_curved_manifold_swiss_roll_is_two_dimensional():
    rng = np.random.default_rng(7)
    t = 1.5 * np.pi * (1 + 2 * rng.uniform(size=3000))
    h = 20 * rng.uniform(size=3000)
    x = np.stack([t * np.cos(t), h, t * np.sin(t)], axis=1)
    assert twonn(x) == pytest.approx(2, rel=0.12)


def test_duplicates_are_dropped():
    rng = np.random.default_rng(8)
    x = embed(rng.standard_normal((1000, 3)), 20, rng)
    with_dups = np.concatenate([x, x[:500], x[:10]])[rng.permutation(1510)]
    assert twonn(with_dups) == twonn(x)
    assert np.isfinite(twonn(with_dups))


def test_neighbour_distances_match_a_kd_tree():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1500, 6)) * 1e3 + 1e5  # large offset: cancellation-prone
    r1, r2 = two_nearest_distances(x)
    dist, _ = cKDTree(x).query(x, k=3)
    np.testing.assert_allclose(r1, dist[:, 1], rtol=1e-10)
    np.testing.assert_allclose(r2, dist[:, 2], rtol=1e-10)


def test_discard_fraction_zero_still_fits():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2000, 4))
    assert twonn(x, discard_fraction=0.0) == pytest.approx(4, rel=0.15)


def test_nan_input_warns_and_returns_nan():
    x = np.ones((10, 3))
    x[2, 1] = np.nan
    with pytest.warns(DegenerateSpectrumWarning, match="NaN/Inf"):
        assert np.isnan(twonn(x))


@pytest.mark.parametrize("n_distinct", [0, 1, 2])
def test_too_few_distinct_points(n_distinct):
    x = np.repeat(np.eye(3)[:n_distinct], 5, axis=0).reshape(-1, 3)
    with pytest.warns(DegenerateSpectrumWarning, match=f"{n_distinct} distinct points"):
        assert np.isnan(twonn(x))


def test_lattice_ties_leave_nothing_to_fit():
    # evenly spaced on a circle, every point has two equidistant neighbours: all ties
    angle = 2 * np.pi * np.arange(8) / 8
    x = np.round(np.stack([np.cos(angle), np.sin(angle)], axis=1), 12)
    with pytest.warns(DegenerateSpectrumWarning, match="usable ratios"):
        assert np.isnan(twonn(x))


def test_validation():
    with pytest.raises(ValueError, match=r"Expected `x` with shape \(n, d\)"):
        twonn(np.ones(5))
    with pytest.raises(ValueError, match=r"Expected `discard_fraction` in \[0, 1\)"):
        twonn(np.ones((5, 2)), discard_fraction=1.0)
