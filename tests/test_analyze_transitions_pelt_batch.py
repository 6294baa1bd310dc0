"""PELT's batched helpers against one-row-at-a-time and textbook answers.

A series and its surrogates are scored in one batch; the noise scale and the ramp test must give
each row what it would get alone (the calibration's p-values compare the two).
"""

import numpy as np
import pytest

from dimlapse.analyze import PeltOptions
from dimlapse.analyze._transitions._noise import ar1_noise
from dimlapse.analyze._transitions._pelt import _first_argmax, _ramp_like, long_run_sds, pelt


def _batch(seed: int, rows: int, n: int) -> np.ndarray:
    """AR(1) noise over steps, ramps and plateaus (ties: some rows rounded), (rows, n)."""
    rng = np.random.default_rng(seed)
    x = ar1_noise(rng, rows, n, 0.5, 1.0)
    t = np.arange(n)
    for r in range(rows):
        for _ in range(int(rng.integers(0, 5))):
            c, w, h = rng.integers(0, n), rng.integers(1, 100), rng.normal(0, 4)
            x[r] += h * np.clip((t - c) / w, 0, 1)
    x[::4] = np.round(x[::4])  # flat stretches: the rms fallback of the scale
    x[1::5, : n // 2] = 3.0  # half constant
    return x + 100.0


@pytest.mark.parametrize("n", [3, 40, 120, 1601])
def test_long_run_sds_equals_each_row_alone(n):
    x = _batch(0, 24, n)
    alone = np.array([long_run_sds(row[None, :], 15)[0] for row in x])
    np.testing.assert_array_equal(long_run_sds(x, 15), alone)  # bit for bit


def test_long_run_sds_closed_form_white_noise():
    x = np.random.default_rng(1).standard_normal((20, 4000))
    assert abs(long_run_sds(x, 25).mean() - 1.0) < 0.06


def test_pelt_batch_equals_each_row_alone():
    x = _batch(2, 30, 800)
    for opts in (PeltOptions(), PeltOptions(model="rbf"), PeltOptions(merge_gap=40)):
        whole = pelt(x, opts)
        for r in range(x.shape[0]):
            one = pelt(x[r : r + 1], opts)
            mine = whole.row == r
            np.testing.assert_array_equal(whole.start[mine], one.start)
            np.testing.assert_array_equal(whole.peak[mine], one.peak)
            np.testing.assert_array_equal(whole.score[mine], one.score)


def test_ramp_like_matches_least_squares_slopes():
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.standard_normal(400)) + 50.0
    cps = np.sort(rng.choice(np.arange(5, 395), 60, replace=False))
    bounds = np.concatenate([[0], cps, [x.size]])
    c = np.concatenate([[0.0], np.cumsum(x)])
    todo = rng.random(cps.size - 1) < 0.7
    got = _ramp_like(x, c, cps, bounds, 15, todo)
    # the slope the neighbours imply, and each segment's own least-squares slope (np.polyfit)
    a, b = cps[:-1], cps[1:]
    lo, hi = np.maximum(a - 15, bounds[:-3]), np.minimum(b + 15, bounds[3:])
    g = ((c[hi] - c[b]) / (hi - b) - (c[a] - c[lo]) / (a - lo)) / ((b + hi - lo - a) / 2.0)
    for i in range(a.size):
        seg = x[a[i] : b[i]]
        slope = np.polyfit(np.arange(seg.size), seg, 1)[0] if seg.size > 1 else 0.0
        want = bool(todo[i] and slope * g[i] > 0.5 * g[i] * g[i])
        assert got[i] == want, i
    assert got.any() and not got.all()  # both answers occur


def test_first_argmax_is_argmax_per_group():
    rng = np.random.default_rng(4)
    v = rng.integers(0, 5, 200).astype(float)  # many ties: the first maximum wins
    first = np.concatenate([[0], np.sort(rng.choice(np.arange(1, 200), 30, replace=False))])
    ends = np.append(first[1:], v.size)
    want = [f + int(np.argmax(v[f:e])) for f, e in zip(first, ends, strict=True)]
    np.testing.assert_array_equal(_first_argmax(v, first), want)
