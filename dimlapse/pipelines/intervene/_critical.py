"""``dimlapse intervene --kind deeplinear``: the deep-linear critical period over seeds.

Every (depth, deficit, seed) of :class:`Completion` is trained by :func:`train_completion`;
the results are ``deeplinear.csv`` (one row per run: depth, deficit_steps, seed, test_mse),
``deeplinear.json`` (the setup and the summary), ``deeplinear.png`` and ``report.md``. The
summary gives, per depth, the final test MSE per deficit (mean, sample sd, min and max over
seeds) and the *gap* MSE(deficit) - MSE(no deficit), paired by seed (same target, entries and
initialisation). The paper's reading: a gap at depth 3 that lasts, none at depth 1.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ._deeplinear import Completion, train_completion

DEPTHS, DEFICITS, SEEDS = (1, 3), (0, 20_000), 3
GAP_EFFECT, GAP_NONE = 0.1, 0.01  # the expected reading: depth 3 above, depth 1 below
FILES = ("deeplinear.csv", "deeplinear.json", "deeplinear.png", "report.md")


def run_critical_periods(
    setup: Completion,
    *,
    depths: Sequence[int] = DEPTHS,
    deficits: Sequence[int] = DEFICITS,
    seeds: Sequence[int] = tuple(range(SEEDS)),
    progress: bool = True,
    record_every: int = 100,
) -> list[dict[str, Any]]:
    """Train every (depth, deficit, seed); one dict per run, in that order.

    ``setup.seed`` is replaced by each seed. Each dict holds ``depth``, ``deficit_steps``,
    ``seed``, ``test_mse`` (final test MSE), ``steps`` and ``test_curve`` (recorded every
    ``record_every`` steps). BLAS runs on one thread: these are 100 x 100 products, where more
    threads only contend (measured 40x slower with two threads on a loaded two-core machine).
    """
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    if not depths or not deficits or not seeds:
        raise ValueError(
            f"Expected at least one depth, deficit and seed, got {depths!r}, {deficits!r}, "
            f"{seeds!r}"
        )
    jobs = [(d, t, s) for d in depths for t in deficits for s in seeds]
    total = sum(t + setup.continue_steps for _, t, _ in jobs)
    runs = []
    bar = tqdm(total=total, desc="deeplinear", unit="step", disable=not progress)
    with bar, threadpool_limits(1, user_api="blas"):
        for depth, deficit, seed in jobs:
            bar.set_postfix_str(f"depth {depth}, deficit {deficit}, seed {seed}")
            r = train_completion(
                replace(setup, seed=seed),
                depth=depth,
                deficit_steps=deficit,
                record_every=record_every,
                progress=bar,
            )
            runs.append(
                {
                    "depth": depth,
                    "deficit_steps": deficit,
                    "seed": seed,
                    "test_mse": float(r["test_loss"]),
                    "steps": np.asarray(r["steps"]).tolist(),
                    "test_curve": np.asarray(r["test_curve"]).tolist(),
                }
            )
    return runs


def _stats(values: Sequence[float]) -> dict[str, float | int]:
    v = np.asarray(values, dtype=np.float64)
    sd = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    return {"mean": float(v.mean()), "sd": sd, "min": float(v.min()), "max": float(v.max())}


def summarise_critical(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per depth and deficit: test MSE over seeds; per depth and deficit > 0: the paired gap.

    Returns ``{"mse": {depth: {deficit: stats}}, "gap": {depth: {deficit: stats}}}`` with
    stats ``mean``, ``sd`` (ddof 1; NaN for one seed), ``min``, ``max`` and ``n`` (seeds); the
    gap of a seed is its MSE after the deficit minus its MSE without one (needs deficit 0).
    """
    table: dict[int, dict[int, dict[int, float]]] = {}
    for r in runs:
        table.setdefault(r["depth"], {}).setdefault(r["deficit_steps"], {})[r["seed"]] = r[
            "test_mse"
        ]
    mse: dict[int, dict[int, Any]] = {}
    gap: dict[int, dict[int, Any]] = {}
    for depth, by_deficit in table.items():
        mse[depth] = {t: {**_stats(list(v.values())), "n": len(v)} for t, v in by_deficit.items()}
        base = by_deficit.get(0)
        if base is None:
            continue
        for t, v in by_deficit.items():
            paired = [v[s] - base[s] for s in v if t > 0 and s in base]
            if paired:
                gap.setdefault(depth, {})[t] = {**_stats(paired), "n": len(paired)}
    return {"mse": mse, "gap": gap}


def check_overwrite(out: Path, overwrite: bool) -> None:
    """Refuse to replace earlier deep-linear results in ``out`` unless ``overwrite``."""
    found = [f for f in FILES if (out / f).exists()]
    if found and not overwrite:
        raise FileExistsError(
            f"{out} already holds deep-linear results ({', '.join(found)}); pass --overwrite "
            "to replace them, or --results-dir to write elsewhere"
        )


def write_critical(
    runs: list[dict[str, Any]], setup: Completion, out: Path, *, overwrite: bool = False
) -> Path:
    """``deeplinear.csv``, ``deeplinear.json``, ``deeplinear.png`` and ``report.md`` in ``out``."""
    from ._report import deeplinear_figure, deeplinear_text

    check_overwrite(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise_critical(runs)
    with (out / "deeplinear.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["depth", "deficit_steps", "seed", "test_mse"])
        for r in runs:
            w.writerow([r["depth"], r["deficit_steps"], r["seed"], repr(r["test_mse"])])
    doc: dict[str, Any] = {"setup": {k: v for k, v in setup.to_dict().items() if k != "seed"}}
    doc["summary"] = summary
    doc["runs"] = [{k: r[k] for k in ("depth", "deficit_steps", "seed", "test_mse")} for r in runs]
    (out / "deeplinear.json").write_text(json.dumps(doc, indent=1))
    deeplinear_figure(runs, summary, out / "deeplinear.png")
    (out / "report.md").write_text(deeplinear_text(summary, setup))
    return out / "report.md"
