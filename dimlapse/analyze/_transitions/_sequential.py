"""A rung of the scale ladder decided with as few surrogates as its answer needs.

Besag and Clifford (1991), "Sequential Monte Carlo p-values", Biometrika 78:301-304: draw
surrogates a batch at a time and stop once the p-value is decided. Here "decided" is exact for
everything the result reports. At a rung of an ``L``-rung ladder a candidate's p-value enters the
result only through ``min(1, L * min_j p_j)`` (its p-value over the ladder) and through
``L * p_j <= level`` (its scale; ``level <= alpha < 1``), so once ``p_j >= 1 / L`` is certain its
exact value changes neither. It is certain when at least ``h = max(MIN_EXCEED, (1 + B) / L - 1)``
of the surrogate maxima seen so far reach the candidate's score: the count over all ``B`` can
only grow, at ``MIN_EXCEED`` or more exceedances the p-value is the empirical
``(1 + #) / (1 + B)`` (never the fitted tail, ``_tail``), and that is then at least ``1 / L``.
When every candidate of the series is decided, the rung stops and reports the lower bound
``(1 + #seen) / (1 + B)`` (>= ``1 / L``); otherwise all ``B`` surrogates are scored and the
p-values (tail included) are exactly those of one batch of ``B``.

Only detectors whose events on a row do not depend on the other rows of the batch
(``DetectorSpec.rowwise``) are scored in batches: their maxima over ``B`` surrogates are then
the same numbers, bit for bit, whichever batches they came in. Noise-level candidates (most of
them) are decided within one or two batches; a rung holding a candidate that may be
significant there always scores all ``B``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._tail import MIN_EXCEED, fit_tail, tail_pvalues

BATCH = 10  # surrogates scored between two checks (MIN_EXCEED exceedances need at least 10)


def rung_pvalues(
    scores: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    y: np.ndarray,
    *,
    rungs: int,
    sequential: bool,
    batch: int = BATCH,
) -> np.ndarray:
    """p-values (k,) of a rung's candidates against the surrogates ``y`` (B, n).

    ``scores(rows)`` returns the observed candidates' scores (k,) and the largest event score
    of each surrogate row of ``rows`` (r, n) (``_calibrate._rung_scores``). With
    ``sequential`` the rows are scored ``batch`` at a time and the rung stops once every
    candidate is decided (module docstring); entries decided early are lower bounds, at least
    ``1 / rungs``.
    """
    b = y.shape[0]
    if not sequential or b <= batch or rungs < 2:
        score, null_max = scores(y)
        return tail_pvalues(score, null_max, fit_tail(null_max))[0]
    need = max(MIN_EXCEED, int(np.ceil((1.0 + b) / rungs - 1.0 - 1e-9)))
    parts: list[np.ndarray] = []
    for start in range(0, b, batch):
        score, part = scores(y[start : start + batch])
        parts.append(part)
        seen = np.concatenate(parts)
        if seen.size == b:
            break
        ge = (seen[None, :] >= score[:, None]).sum(axis=1)  # (k,)
        if np.all(ge >= need):  # every candidate decided: p >= 1 / rungs, whatever is left
            return (1.0 + ge) / (1.0 + b)
    null_max = np.concatenate(parts)
    return tail_pvalues(score, null_max, fit_tail(null_max))[0]


def reuse_observed(detect: Callable, x: np.ndarray) -> Callable:
    """``detect`` that runs once on the observed series ``x`` (n,) per context.

    A rung scored in batches asks for the observed candidates with every batch; they are the
    same each time (the detector is deterministic), so the first answer is kept. Rows that are
    not ``x`` itself (surrogates) are always detected.
    """
    memo: dict[int, tuple[object, object]] = {}

    def detect_once(rows: np.ndarray, opts: object, ctx: object) -> object:
        if rows.shape[0] == 1 and np.shares_memory(rows, x):
            if id(ctx) not in memo:  # the context is kept with the answer: its id stays its own
                memo[id(ctx)] = (ctx, detect(rows, opts, ctx))
            return memo[id(ctx)][1]
        return detect(rows, opts, ctx)

    return detect_once
