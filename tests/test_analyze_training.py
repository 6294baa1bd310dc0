"""Spikes of training scalars: planted ground truth at both time scales of ``find_spikes``."""

import numpy as np
import pytest

from dimlapse.analyze.jobs._training import find_spikes


def _minibatch_loss(rng, n=8000, noise=0.5):
    """A decaying loss with mini-batch noise wide on the log scale, shape (n,)."""
    steps = np.arange(n, dtype=np.float64)
    return steps, np.exp(-steps / 2500 + noise * rng.standard_normal(n))


@pytest.mark.parametrize("seed", range(5))
def test_a_sustained_tenfold_spike_is_found_where_the_short_rule_is_blind(seed):
    # a loss that rises tenfold for 300 steps under noise of sd 0.5 on the log scale: the
    # centred running median follows it and the point rule cannot reach 8 robust sds
    rng = np.random.default_rng(seed)
    steps, loss = _minibatch_loss(rng)
    spiky = loss.copy()
    spiky[6000:6300] *= 10.0
    found = find_spikes(steps, spiky)
    assert len(found) == 1, found
    a, b, ratio = found[0]
    assert 5990 <= a <= 6030 and 6270 <= b <= 6310, found
    assert 5 <= ratio <= 20
    assert find_spikes(steps, spiky, min_ratio=np.inf) == []  # short rule alone: missed


@pytest.mark.parametrize("seed", range(5))
def test_noisy_decay_and_an_early_rise_are_not_spikes(seed):
    rng = np.random.default_rng(seed)
    steps, loss = _minibatch_loss(rng)
    assert find_spikes(steps, loss) == []
    # a gradient norm that climbs 3x over the first 100 steps, then stays: not a spike
    grad = np.minimum(0.5 + steps / 50, 1.5) * np.exp(0.3 * rng.standard_normal(steps.size))
    assert find_spikes(steps, grad) == []
    # a slow rise (2x over the whole run) is a trend, not a spike
    assert find_spikes(steps, np.exp(steps / 11500) * loss / loss.mean()) == []


def test_doubling_for_a_while_is_below_the_default_ratio():
    rng = np.random.default_rng(9)
    steps, loss = _minibatch_loss(rng, noise=0.05)
    bump = loss.copy()
    bump[4000:4300] *= 1.5
    assert find_spikes(steps, bump) == []  # beyond 8 sds, but under min_ratio = 2
    assert len(find_spikes(steps, bump, min_ratio=1.3)) == 1
