"""Calibration and speed of ``dimlapse.analyze.transitions``: false alarms, recall, FDR, wall time.

Run ``python -m dimlapse.pipelines._bench_transitions [--seeds 40] [--n 1600] [--families 5]``.
Prints, per detector:

- the family-wise false-alarm rate (share of null series with any candidate at p <= 0.05) and
  the share of null series with p <= 0.01 and p <= 0.001, on white noise, AR(1) phi = 0.9 and
  an exponential decay plus noise (``--seeds`` series each);
- recall of a planted 3 and 5 SD level shift (significant within 3 samples of it);
- one 5 SD step among 54 series (a third white, a third AR(1) 0.9, a third decaying): how often
  BH at 0.05 flags it and how many of the 53 null series it flags (``--families`` seeds);
- wall time of ``transitions`` on 54 series x 3 detectors of ``--n`` samples, cold (first call,
  starting the worker pool) and warm.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import xarray as xr

from dimlapse.analyze import transitions
from dimlapse.analyze._surrogates import ar1_noise

DETECTORS = ("zscore", "meanshift", "pelt")
KINDS = ("white", "ar09", "expdecay")


def null_series(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """One null trajectory with unit marginal noise sd."""
    t = np.arange(n)
    if kind == "white":
        return rng.standard_normal(n)
    if kind == "ar09":
        return ar1_noise(rng, 1, n, 0.9, np.sqrt(1 - 0.81))[0]
    return 10 * np.exp(-t / (n / 8)) + rng.standard_normal(n)


def _stack(rows: list[np.ndarray]) -> xr.DataArray:
    return xr.DataArray(np.array(rows), dims=("series", "step"))


def false_alarms(seeds: int, n: int) -> None:
    print(f"null series ({seeds} per kind, n={n}): share with p_series <= 0.05 / 0.01 / 0.001")
    for kind in KINDS:
        rng = np.random.default_rng(1000)
        ds = transitions(_stack([null_series(kind, rng, n) for _ in range(seeds)]))
        for d in DETECTORS:
            p = ds.p_series.sel(detector=d).values
            print(
                f"  {kind:9s} {d:9s} {np.mean(p <= 0.05):.3f} / {np.mean(p <= 0.01):.3f} / "
                f"{np.mean(p <= 0.001):.3f}"
            )


def recall(seeds: int, n: int) -> None:
    print(f"planted level shift on a decaying trend ({seeds} series, n={n}): recall (p <= 0.05)")
    for height in (3.0, 5.0):
        rng = np.random.default_rng(2000 + int(height))
        taus = rng.integers(n // 5, 4 * n // 5, size=seeds)
        rows = []
        for tau in taus:
            x = rng.standard_normal(n) + 5 * np.exp(-np.arange(n) / (n / 8))
            x[tau:] += height * rng.choice([-1.0, 1.0])
            rows.append(x)
        ds = transitions(_stack(rows))
        for d in DETECTORS:
            e = ds.sel(detector=d)
            hits = 0
            for i, tau in enumerate(taus):
                found = e.step[i].values[(e.p_value[i] <= 0.05).values]
                hits += bool(found.size and np.min(np.abs(found - tau)) <= 3)
            print(f"  {height:.0f} SD {d:9s} {hits / seeds:.3f}")


def planted_family(families: int, n: int) -> None:
    print(f"one 5 SD step among 54 series, BH at 0.05 ({families} seeds, n={n})")
    found = {d: 0 for d in DETECTORS}
    false = {d: 0 for d in DETECTORS}
    for seed in range(families):
        rng = np.random.default_rng(100 + seed)
        rows = [null_series(KINDS[i % 3], rng, n) for i in range(54)]
        k = int(rng.choice([i for i in range(54) if i % 3 != 1]))  # unit-sd white or decay
        tau = int(rng.integers(n // 5, 4 * n // 5))
        rows[k][tau:] += 5.0 * rng.choice([-1.0, 1.0])
        ds = transitions(_stack(rows))
        for d in DETECTORS:
            e = ds.sel(detector=d)
            steps = e.step[k].values[e.significant[k].values]
            found[d] += bool(steps.size and np.min(np.abs(steps - tau)) <= 3)
            ns = e.n_significant.values
            false[d] += int((ns > 0).sum() - (ns[k] > 0))
    for d in DETECTORS:
        print(
            f"  {d:9s} planted step found {found[d]}/{families}, null series flagged "
            f"{false[d]}/{53 * families}"
        )


def wall_time(n: int) -> None:
    rng = np.random.default_rng(0)
    da = _stack([null_series(KINDS[i % 3], rng, n) for i in range(54)])
    for label in ("cold (starts the pool)", "warm"):
        t = time.perf_counter()
        transitions(da, detectors=DETECTORS)
        dt = time.perf_counter() - t
        print(f"wall time, 54 series x 3 detectors, n={n}, {label}: {dt:.1f} s")
    t = time.perf_counter()
    transitions(da, detectors=DETECTORS, workers=1)
    print(f"wall time, same, workers=1 (serial): {time.perf_counter() - t:.1f} s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--n", type=int, default=1600)
    ap.add_argument("--families", type=int, default=5)
    ap.add_argument("--only", choices=("time", "null", "recall", "family"), default=None)
    a = ap.parse_args(argv)
    if a.only in (None, "time"):
        wall_time(a.n)
    if a.only in (None, "null"):
        false_alarms(a.seeds, a.n)
    if a.only in (None, "recall"):
        recall(a.seeds, a.n)
    if a.only in (None, "family"):
        planted_family(a.families, a.n)


if __name__ == "__main__":
    main()
