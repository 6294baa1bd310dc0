"""Intervention windows: the deep-linear critical period and the disrupted training runs."""

import numpy as np
import pytest

from dimlapse.pipelines._deeplinear import Completion, critical_period_curve, train_completion


@pytest.mark.slow
def test_long_early_deficit_hurts_depth_three_not_depth_one():
    # Kleinman, Achille and Soatto (ICLR 2024): matrix completion with an early deficit
    setup = Completion()
    curve = critical_period_curve(setup, depths=(1, 3), deficits=(0, 2_000, 10_000))
    base1, short1, long1 = curve[1]
    base3, short3, long3 = curve[3]
    # depth 1: a convex problem, each entry alone; the deficit changes nothing that lasts
    np.testing.assert_allclose([short1, long1], base1, rtol=1e-3)
    # depth 3 recovers the target without a deficit or after a short one ...
    assert base3 < 0.05 and short3 < 0.05
    # ... and a long deficit leaves a lasting error many times the baseline
    assert long3 > 10 * base3


def test_small_completion_shows_the_critical_period():
    # 100 deficit entries are fewer than the 2 * (60 - 2) = 116 degrees of freedom of the target
    setup = Completion(n=30, rank=2, n_observed=260, n_deficit=100, continue_steps=8_000)
    base, short, late = (
        train_completion(setup, depth=3, deficit_steps=t)["test_loss"] for t in (0, 1_000, 6_000)
    )
    assert base < 0.01 and short < 0.01
    assert late > 10 * base
    d1 = [train_completion(setup, depth=1, deficit_steps=t)["test_loss"] for t in (0, 6_000)]
    np.testing.assert_allclose(d1[1], d1[0], rtol=1e-3)
    assert d1[0] > 0.3  # depth 1 never completes the matrix: unobserved entries stay at init


def test_completion_validation():
    with pytest.raises(ValueError, match="n_deficit <= n_observed"):
        Completion(n_observed=10, n_deficit=20)
    with pytest.raises(ValueError, match="`depth` to be a positive int"):
        train_completion(Completion(), depth=0, deficit_steps=0)
