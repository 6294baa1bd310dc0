"""Capture schedules: which optimizer steps get a snapshot.

A schedule is any callable ``step -> bool``. The two shipped here also describe themselves
(``describe()`` returns a JSON-able dict) so the run store records exactly what was used.
Step 0 (the initial state) is always captured by the Recorder, whatever the schedule says.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Schedule = Callable[[int], bool]


class every_n:
    """Capture every ``n``-th optimizer step (steps n, 2n, 3n, ...).

    Parameters
    ----------
    n : int
        Positive capture interval.

    Examples
    --------
    >>> sched = every_n(5)
    >>> [s for s in range(1, 21) if sched(s)]
    [5, 10, 15, 20]
    """

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"Expected `n` to be a positive int, got {n!r}")
        self.n = n

    def __call__(self, step: int) -> bool:
        return step % self.n == 0

    def describe(self) -> dict[str, Any]:
        """JSON description stored in the run's ``schedule`` attr."""
        return {"kind": "every_n", "n": self.n}

    def __repr__(self) -> str:
        return f"every_n({self.n})"


class log_then_dense:
    """Log-spaced captures early in training, then every ``dense_every`` steps.

    Before ``log_until`` a step is captured when it lies on the geometric grid
    ``round(10 ** (i / points_per_decade))``, i = 0, 1, ...; from ``log_until`` on, every
    ``dense_every``-th step is captured.

    Parameters
    ----------
    dense_every : int
        Interval of the dense phase.
    log_until : int
        First step of the dense phase.
    points_per_decade : int
        Density of the log-spaced grid (grid points per factor of 10 in step).

    Examples
    --------
    >>> sched = log_then_dense(dense_every=50, log_until=100, points_per_decade=4)
    >>> [s for s in range(1, 301) if sched(s)]
    [1, 2, 3, 6, 10, 18, 32, 56, 100, 150, 200, 250, 300]
    """

    def __init__(
        self, dense_every: int = 5, log_until: int = 1000, *, points_per_decade: int = 20
    ) -> None:
        for name, value in (
            ("dense_every", dense_every),
            ("log_until", log_until),
            ("points_per_decade", points_per_decade),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected `{name}` to be a positive int, got {value!r}")
        self.dense_every = dense_every
        self.log_until = log_until
        self.points_per_decade = points_per_decade
        n_points = math.ceil(points_per_decade * math.log10(max(log_until, 1))) + 1
        grid = {round(10 ** (i / points_per_decade)) for i in range(n_points + 1)}
        self._grid = frozenset(s for s in grid if s < log_until)

    def __call__(self, step: int) -> bool:
        if step < self.log_until:
            return step in self._grid
        return step % self.dense_every == 0

    def describe(self) -> dict[str, Any]:
        """JSON description stored in the run's ``schedule`` attr."""
        return {
            "kind": "log_then_dense",
            "dense_every": self.dense_every,
            "log_until": self.log_until,
            "points_per_decade": self.points_per_decade,
        }

    def __repr__(self) -> str:
        return (
            f"log_then_dense(dense_every={self.dense_every}, log_until={self.log_until}, "
            f"points_per_decade={self.points_per_decade})"
        )


def as_schedule(every: int | Schedule) -> Schedule:
    """Validate ``every`` and return a schedule callable."""
    if isinstance(every, bool):
        raise ValueError(f"Expected `every` to be a positive int or a schedule, got {every!r}")
    if isinstance(every, int):
        if every < 1:
            raise ValueError(
                f"Expected `every` to be a positive int or a schedule callable(step) -> bool, "
                f"got {every!r}"
            )
        return every_n(every)
    if callable(every):
        return every
    raise ValueError(
        f"Expected `every` to be a positive int or a schedule callable(step) -> bool "
        f"(e.g. every_n(5), log_then_dense()), got {every!r}"
    )


def describe_schedule(schedule: Schedule) -> dict[str, Any]:
    """JSON description of any schedule (custom callables are described by their repr)."""
    describe = getattr(schedule, "describe", None)
    if callable(describe):
        return dict(describe())
    return {"kind": "callable", "repr": repr(schedule)}


def typical_interval(schedule: Schedule) -> int:
    """Steps between captures in the steady state; sizes the scalar chunks."""
    if isinstance(schedule, every_n):
        return schedule.n
    if isinstance(schedule, log_then_dense):
        return schedule.dense_every
    return 5
