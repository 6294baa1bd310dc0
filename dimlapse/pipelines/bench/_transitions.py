"""Calibration and power of ``dimlapse.analyze.transitions``, per family and detector.

Run ``dimlapse bench transitions [--seeds 40] [--n 400] [--time]`` (``make bench-transitions``).
For every family of ``_families.py`` (beside this file) and every registered detector it
prints, with significance at ``p <= 0.05`` within each series:

- null families (white, AR(1) 0.9, decay + AR(1) 0.5): the share of series with any
  significant candidate (the family-wise false-alarm rate, nominal 0.05);
- event families (staircases of 3-6 steps of 3-10 sd with gaps of 10-40 samples on white and
  AR(1) 0.5 noise, a ramp of 10-30 samples, a step inside a linear trend): recall (planted
  events with a significant event overlapping them, 3 samples of slack) and false events per
  series (significant events overlapping none);
- ``--time``: wall time of ``transitions`` on 54 series x every detector.

Significance is the one ``transitions`` reports: over the default time-scale ladder
(Bonferroni over its rungs), events below the series' resolution never counted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import xarray as xr

from dimlapse.analyze import ALL_DETECTORS, Calibration, transitions

from ._families import (
    EVENT_FAMILIES,
    NULL_FAMILIES,
    family_rates,
    null_series,
)

ALPHA = 0.05


def family_table(seeds: int, n: int, detectors: tuple[str, ...]) -> dict[str, dict[str, tuple]]:
    """``{family: {detector: (recall, false events per series, share of series with one)}}``."""
    out: dict[str, dict[str, tuple]] = {}
    for family in NULL_FAMILIES + EVENT_FAMILIES:
        t0 = time.perf_counter()
        out[family] = family_rates(family, seeds, n=n, detectors=detectors, alpha=ALPHA)
        for d, (recall, false, series) in out[family].items():
            print(
                f"  {family:14s} {d:9s} recall {recall:5.2f}  false events/series "
                f"{false:5.2f}  series with a false event {series:5.2f}",
                flush=True,
            )
        print(f"  ({family}: {time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def markdown(table: dict[str, dict[str, tuple]], detectors: tuple[str, ...]) -> str:
    """The README table: recall / false events per series (nulls: share of series flagged)."""
    lines = [
        "| family | " + " | ".join(detectors) + " |",
        "| --- |" + " --- |" * len(detectors),
    ]
    for family, row in table.items():
        if family in NULL_FAMILIES:
            cells = [f"{row[d][2]:.2f}" for d in detectors]
        else:
            cells = [f"{row[d][0]:.2f} / {row[d][1]:.2f}" for d in detectors]
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wall_time(n: int, detectors: tuple[str, ...]) -> None:
    rng = np.random.default_rng(0)
    rows = [null_series(NULL_FAMILIES[i % 3], rng, n) for i in range(54)]
    da = xr.DataArray(np.array(rows), dims=("series", "step"))
    for label, cal in (("no ladder", Calibration(scales=())), ("default ladder", None)):
        t = time.perf_counter()
        transitions(da, detectors=detectors, calibration=cal)
        print(f"wall time, 54 series x {len(detectors)} detectors, n={n}, {label}: "
              f"{time.perf_counter() - t:.1f} s")  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``dimlapse bench transitions``."""
    p.add_argument("--seeds", type=int, default=40, help="series per family")
    p.add_argument("--n", type=int, default=400, help="samples per series")
    p.add_argument("--detectors", default=",".join(ALL_DETECTORS), help="comma-separated")
    p.add_argument("--time", action="store_true", help="also time 54 series")


def main(a: argparse.Namespace) -> int:
    """Print the family table (null rates, recall, false events) and optionally wall times."""
    detectors = tuple(a.detectors.split(","))
    print(f"families ({a.seeds} seeds of {a.n} samples), significance at p <= {ALPHA}:")
    table = family_table(a.seeds, a.n, detectors)
    print("\nnulls: share of series flagged; events: recall / false events per series")
    print(markdown(table, detectors))
    if a.time:
        wall_time(1600, detectors)
    return 0
