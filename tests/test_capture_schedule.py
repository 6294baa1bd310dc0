"""Capture schedules: which steps, their descriptions, their validation."""

import itertools
import math

import pytest

from dimlapse.capture import every_n, log_then_dense
from dimlapse.capture._schedule import as_schedule, describe_schedule


def test_every_n_steps():
    sched = every_n(5)
    assert [s for s in range(1, 31) if sched(s)] == [5, 10, 15, 20, 25, 30]
    assert sched.describe() == {"kind": "every_n", "n": 5}
    assert repr(sched) == "every_n(5)"
    assert as_schedule(5).describe() == sched.describe()


def test_log_then_dense_matches_definition():
    sched = log_then_dense(dense_every=10, log_until=200, points_per_decade=8)
    grid = {round(10 ** (i / 8)) for i in range(40)}
    expected = [s for s in range(1, 1001) if (s in grid if s < 200 else s % 10 == 0)]
    assert [s for s in range(1, 1001) if sched(s)] == expected
    early = [s for s in expected if s < 200]
    assert early[:4] == [1, 2, 3, 4]
    ratios = [b / a for a, b in itertools.pairwise(early[4:])]
    assert all(1.0 < r < 10 ** (2 / 8) for r in ratios)  # log-spaced
    assert sched.describe() == {
        "kind": "log_then_dense",
        "dense_every": 10,
        "log_until": 200,
        "points_per_decade": 8,
    }


def test_log_then_dense_count_of_early_points():
    sched = log_then_dense(dense_every=5, log_until=10_000, points_per_decade=20)
    early = sum(sched(s) for s in range(1, 10_000))
    # grid points 10**(i/20) below 1e4 are 80; rounding merges a few duplicates near 1
    assert 60 <= early <= 80
    assert math.isclose(sum(sched(s) for s in range(10_000, 20_000)), 2000)


def test_custom_callable_schedule_is_described():
    def odd(step):
        return step % 2 == 1

    assert as_schedule(odd) is odd
    assert describe_schedule(odd)["kind"] == "callable"


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: every_n(0), "Expected `n` to be a positive int, got 0"),
        (lambda: every_n(2.5), "Expected `n` to be a positive int, got 2.5"),
        (lambda: log_then_dense(dense_every=0), "Expected `dense_every`"),
        (lambda: log_then_dense(log_until=-3), "Expected `log_until`"),
        (lambda: log_then_dense(points_per_decade=True), "Expected `points_per_decade`"),
        (lambda: as_schedule(-1), "Expected `every` to be a positive int"),
        (lambda: as_schedule(None), "Expected `every` to be a positive int or a schedule"),
    ],
)
def test_schedule_validation(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()
