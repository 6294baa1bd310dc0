"""Sequential rung p-values against all B surrogates: the same ladder answer, fewer rows scored."""

import numpy as np
import pytest

from dimlapse.analyze._transitions._sequential import rung_pvalues
from dimlapse.analyze._transitions._tail import fit_tail, tail_pvalues


class _Rung:
    """A rung whose surrogate maxima are fixed numbers, one per row; counts the rows scored."""

    def __init__(self, observed: np.ndarray, maxima: np.ndarray) -> None:
        self.observed, self.maxima, self.rows = observed, maxima, 0

    def __call__(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = rows[:, 0].astype(np.int64)  # each row carries its index
        self.rows += idx.size
        return self.observed.copy(), self.maxima[idx]


def _full(observed, maxima):
    return tail_pvalues(observed, maxima, fit_tail(maxima))[0]


def _ladder_answer(p: np.ndarray, rungs: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """What the result reports from a rung: min(1, L p) and whether L p <= level."""
    return np.minimum(1.0, rungs * p), rungs * p <= level


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("rungs", [2, 5])
def test_same_ladder_answer_as_all_surrogates(seed, rungs):
    rng = np.random.default_rng(seed)
    b = 50
    maxima = rng.gumbel(3.0, 0.5, b)
    maxima[rng.random(b) < 0.1] = -np.inf  # surrogates without an event
    k = int(rng.integers(0, 6))
    observed = rng.normal(2.5, 1.0, k)
    if seed % 3 == 0 and k:
        observed[0] = 8.0  # far beyond the null: must be scored on all B
    if seed % 4 == 0 and k:
        observed[-1] = -np.inf  # blocked candidate
    rung = _Rung(observed, maxima)
    y = np.arange(b, dtype=np.float64)[:, None] * np.ones((1, 3))
    got = rung_pvalues(rung, y, rungs=rungs, sequential=True)
    want = _full(observed, maxima)
    for level in (0.05, 0.05 / 54, 0.01):
        mine, full = _ladder_answer(got, rungs, level), _ladder_answer(want, rungs, level)
        for g, w in zip(mine, full, strict=True):
            np.testing.assert_array_equal(g, w)
    if rung.rows < b:  # stopped early: lower bounds at or above 1 / rungs
        assert np.all(got <= want + 1e-12) and np.all(got >= 1.0 / rungs)
    else:
        np.testing.assert_array_equal(got, want)  # all rows: exactly the one-batch p-values
    if k and observed[0] == 8.0:
        assert rung.rows == b


def test_noise_level_candidates_stop_early_and_off_scores_all():
    rng = np.random.default_rng(0)
    maxima = rng.gumbel(3.0, 0.5, 50)
    observed = np.array([1.0, 1.5, -np.inf])  # below nearly every surrogate maximum
    y = np.arange(50, dtype=np.float64)[:, None]
    rung = _Rung(observed, maxima)
    rung_pvalues(rung, y, rungs=5, sequential=True)
    assert rung.rows == 10
    off = _Rung(observed, maxima)
    p = rung_pvalues(off, y, rungs=5, sequential=False)
    assert off.rows == 50
    np.testing.assert_array_equal(p, _full(observed, maxima))
