"""Events: what every detector returns, one entry per contiguous excursion of a statistic."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Events:
    """Events found in a (rows, n) batch; every field is a (k,) array (``margin`` an int).

    ``start``/``stop`` bound the samples where the detector fired (inclusive), ``peak`` is the
    sample of the largest score, ``margin`` how far before ``start`` the change itself may lie.
    """

    row: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    peak: np.ndarray
    score: np.ndarray
    sign: np.ndarray
    margin: int = 0

    def __len__(self) -> int:
        return int(self.row.size)

    def max_per_row(self, rows: int) -> np.ndarray:
        """Largest event score of each row, -inf where a row has no event. Shape (rows,)."""
        out = np.full(rows, -np.inf)
        np.maximum.at(out, self.row, self.score)
        return out

    def count_per_row(self, rows: int) -> np.ndarray:
        """Number of events in each row. Shape (rows,)."""
        return np.bincount(self.row, minlength=rows)


def empty_events(margin: int) -> Events:
    z = np.zeros(0, dtype=np.int64)
    return Events(z, z, z, z, np.zeros(0), z, margin)


def concat_events(parts: list[Events], margin: int) -> Events:
    if not parts:
        return empty_events(margin)
    fields = {
        f: np.concatenate([getattr(p, f) for p in parts])
        for f in ("row", "start", "stop", "peak", "score", "sign")
    }
    order = np.lexsort((fields["start"], fields["row"]))
    return Events(**{f: v[order] for f, v in fields.items()}, margin=margin)


def runs(
    stat: np.ndarray, threshold: float, direction: str, margin: int = 0, merge_gap: int = 0
) -> Events:
    """Events = maximal runs of same-sign samples with ``|stat| > threshold``.

    ``stat`` is (rows, n); NaN never exceeds. Exceedances at most ``merge_gap`` non-exceeding
    samples apart belong to one run (0: strictly consecutive). Score = peak ``|stat|`` in the run.
    """
    n = stat.shape[1]
    parts = []
    signs = {"both": (1, -1), "up": (1,), "down": (-1,)}[direction]
    with np.errstate(invalid="ignore"):
        for sign in signs:
            val = (sign * stat).ravel()
            pos = np.flatnonzero(val > threshold)  # sorted flat indices
            if pos.size == 0:
                continue
            new = np.ones(pos.size, dtype=bool)
            new[1:] = (np.diff(pos) > merge_gap + 1) | (pos[1:] // n != pos[:-1] // n)
            first = np.flatnonzero(new)
            last = np.append(first[1:], pos.size) - 1
            run_id = np.cumsum(new) - 1
            v = val[pos]
            order = np.lexsort((-v, run_id))  # groups keep their order; max first in each
            peak = pos[order[first]]
            parts.append(
                Events(
                    row=pos[first] // n,
                    start=pos[first] % n,
                    stop=pos[last] % n,
                    peak=peak % n,
                    score=v[order[first]],
                    sign=np.full(first.size, sign, dtype=np.int64),
                )
            )
    return concat_events(parts, margin)
