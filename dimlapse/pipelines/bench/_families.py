"""Synthetic series with known events: the fixtures that measure calibration and power.

Null families (no event; the share of series with any significant candidate is the false-alarm
rate): ``white`` (unit white noise), ``ar09`` (AR(1), phi 0.9, unit marginal sd) and
``decay_ar`` (a loss-like exponential decay of 10 sd plus AR(1) noise, phi 0.5).

Event families (``events`` lists each planted event as ``(first moved sample, first sample at
the new level)``; heights in noise sd):

- ``staircase``: 3-6 steps of 3-10 sd (random signs, all in one direction per series), gaps of
  10-40 samples, white noise;
- ``staircase_ar``: the same on AR(1) noise, phi 0.5, unit marginal sd;
- ``ramp``: one linear ramp of 10-30 samples and 6-10 sd, white noise;
- ``step_in_trend``: one step of 3-10 sd inside a linear trend of 10-30 sd over the series,
  white noise.
"""

from __future__ import annotations

import numpy as np

NULL_FAMILIES = ("white", "ar09", "decay_ar")
EVENT_FAMILIES = ("staircase", "staircase_ar", "ramp", "step_in_trend")


def ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """Stationary AR(1) with unit marginal sd, shape (n,)."""
    z = rng.standard_normal(n)
    e = np.empty(n)
    e[0] = z[0]
    s = np.sqrt(1.0 - phi * phi)
    for t in range(1, n):
        e[t] = phi * e[t - 1] + s * z[t]
    return e


def null_series(family: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """One null series of ``family`` (``NULL_FAMILIES``), shape (n,)."""
    if family == "white":
        return rng.standard_normal(n)
    if family == "ar09":
        return ar1(rng, n, 0.9)
    if family == "decay_ar":
        return 10.0 * np.exp(-np.arange(n) / (n / 8)) + ar1(rng, n, 0.5)
    raise ValueError(f"Expected `family` to be one of {NULL_FAMILIES}, got {family!r}")


def event_series(
    family: str, rng: np.random.Generator, n: int
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """One series of ``family`` (``EVENT_FAMILIES``) and its planted events, ``n >= 300``."""
    if family in ("staircase", "staircase_ar"):
        k = int(rng.integers(3, 7))
        gaps = rng.integers(10, 41, size=k - 1)
        start = int(rng.integers(n // 8, n - int(gaps.sum()) - n // 8))
        taus = start + np.concatenate([[0], np.cumsum(gaps)])
        sign = rng.choice([-1.0, 1.0])
        x = rng.standard_normal(n) if family == "staircase" else ar1(rng, n, 0.5)
        for tau, h in zip(taus, rng.uniform(3.0, 10.0, size=k), strict=True):
            x[tau:] += sign * h
        return x, [(int(t), int(t)) for t in taus]
    if family == "ramp":
        length = int(rng.integers(10, 31))
        a = int(rng.integers(n // 4, 3 * n // 4 - length))
        t = np.arange(n)
        h = rng.uniform(6.0, 10.0) * rng.choice([-1.0, 1.0])
        x = h * np.clip((t - a + 1) / (length + 1), 0.0, 1.0) + rng.standard_normal(n)
        return x, [(a, a + length)]
    if family == "step_in_trend":
        tau = int(rng.integers(n // 4, 3 * n // 4))
        slope = rng.uniform(10.0, 30.0) * rng.choice([-1.0, 1.0]) / n
        x = slope * np.arange(n) + rng.standard_normal(n)
        x[tau:] += rng.uniform(3.0, 10.0) * rng.choice([-1.0, 1.0])
        return x, [(tau, tau)]
    raise ValueError(f"Expected `family` to be one of {EVENT_FAMILIES}, got {family!r}")


def match(
    found: list[tuple[float, float]], events: list[tuple[int, int]], tol: int = 3
) -> tuple[int, int]:
    """``(planted events hit, found events hitting none)``; a found event ``(onset, end)`` hits
    a planted ``(a, b)`` when the intervals overlap after widening by ``tol`` samples."""
    hit = [any(o <= b + tol and e >= a - tol for o, e in found) for a, b in events]
    false = [not any(o <= b + tol and e >= a - tol for a, b in events) for o, e in found]
    return int(sum(hit)), int(sum(false))


def family_rates(
    family: str,
    seeds: int,
    *,
    n: int = 400,
    detectors: tuple[str, ...] | None = None,
    seed: int = 7,
    alpha: float = 0.05,
    ladder: bool = True,
) -> dict[str, tuple[float, float, float]]:
    """Per detector: (recall of planted events, false events per series, share of series with
    a false event) on ``seeds`` series of ``family``, significance at ``p <= alpha`` within
    each series (``p_value`` is over the time-scale ladder; ``ladder=False``: the base trend
    window only), counting only events the data resolve. ``detectors`` None: all."""
    from dimlapse.analyze import ALL_DETECTORS, Calibration, transitions

    names = ALL_DETECTORS if detectors is None else tuple(detectors)
    rng = np.random.default_rng(seed)
    if family in NULL_FAMILIES:
        pairs: list[tuple[np.ndarray, list[tuple[int, int]]]] = [
            (null_series(family, rng, n), []) for _ in range(seeds)
        ]
    else:
        pairs = [event_series(family, rng, n) for _ in range(seeds)]
    x = np.array([s for s, _ in pairs])  # (seeds, n)
    ds = transitions(x, detectors=names, calibration=None if ladder else Calibration(scales=()))
    out = {}
    for d in names:
        e = ds.sel(detector=d)
        hit = planted = false = series = 0
        for i, (_, events) in enumerate(pairs):
            ok = ((e.p_value[i] <= alpha) & (abs(e.effect[i]) >= e.resolution[i])).values
            onset = e.onset[i].values[ok]
            h, f = match(list(zip(onset, onset + e.duration[i].values[ok], strict=True)), events)
            hit, planted, false, series = (
                hit + h,
                planted + len(events),
                false + f,
                series + (f > 0),
            )
        out[d] = (hit / planted if planted else float("nan"), false / seeds, series / seeds)
    return out
