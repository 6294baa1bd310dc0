"""``make study``: several recipes over several seeds, one comparison report.

Each (model, seed) run is trained and captured like ``make capture``, analysed by
:func:`dimlapse.analyze.analyze_run` (stable rank only, to keep it short), and reduced to one
number per claim of the study (the numbers behind its report's claims table), plus the
expansion dynamics of the first 10 % of training and the formation times. Per architecture,
each number is given as the mean over seeds with a 95 % bootstrap percentile interval
(seeds resampled with replacement, :func:`scipy.stats.bootstrap`): it stays inside the range
the quantity can take (a share in [0, 1], a count >= 0), which a Student-t interval over three
seeds did not. With few seeds it is narrow rather than conservative: for n <= 3 it is the
seeds' range, which holds the median of the seeds' distribution with probability
``1 - 2**(1 - n)`` (75 % for three); the report says so below ``MIN_SEEDS``. Seeds where a
number is undefined (NaN) are left out and the count says how many remain.

Earlier study runs and results are kept: ``reuse`` keeps complete, analysed runs of the same
recipe; ``overwrite`` replaces the rest; with neither, any earlier one is an error before
anything trains.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from dimlapse import RESULTS_DIR, RUNS_DIR

from ..zoo import MODELS, Recipe
from ._claims import CLAIMS

DEFAULT_STEPS, DEFAULT_SEEDS, EARLY = 300, 3, 0.1  # about 120 CPU-s per run, see README
STUDY_MODELS = ("mlp", "cnn", "resnet", "transformer", "vit")  # each on its default data
# below these, the report says it is not enough to conclude: the range of 5 seeds holds their
# median with probability 94 %; 50 snapshots is the analysis' own floor for a meaningful run
MIN_SEEDS, MIN_SNAPSHOTS = 5, 50
REPORT_FILES = ("study.md", "study.png", "study.json")


def mean_ci(
    values: Sequence[float], *, level: float = 0.95, n_resamples: int = 9999, seed: int = 0
) -> tuple[float, float, float, int]:
    """Mean of the finite ``values`` and its bootstrap percentile interval: (mean, lo, hi, n).

    The interval holds the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the means
    of ``n_resamples`` resamples with replacement (seeded by ``seed``), so it lies within
    ``[min, max]`` of the values and respects any range they share. One finite value gives an
    unbounded interval (NaN ends); none gives all NaN; equal values give a zero-width one.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return np.nan, np.nan, np.nan, 0
    mean = float(v.mean())
    if n == 1:
        return mean, np.nan, np.nan, 1
    if np.ptp(v) == 0:
        return mean, mean, mean, n
    ci = stats.bootstrap(
        (v,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return mean, float(ci.low), float(ci.high), n


def early_dynamics(sr: Any, total: float, *, share: float = EARLY) -> dict[str, float]:
    """Expansion in the first ``share`` of training from activation stable rank (layer, step).

    ``early_change``: mean over layers of ``(SR(t) - SR(0)) / SR(0)`` at the last capture step
    ``t <= share * total``; ``early_min_at``: mean over layers of the step of the minimum within
    that span, as a share of training.
    """
    steps = sr["step"].values
    keep = steps <= share * total
    block = np.asarray(sr.values, dtype=np.float64)[:, keep]  # (layer, early step)
    ok = np.isfinite(block).all(1) & (block[:, 0] > 0)
    if not ok.any() or keep.sum() < 2:
        return {"early_change": np.nan, "early_min_at": np.nan}
    block = block[ok]
    change = (block[:, -1] - block[:, 0]) / block[:, 0]
    at = steps[keep][np.argmin(block, axis=1)] / total
    return {"early_change": float(change.mean()), "early_min_at": float(at.mean())}


def run_values(tree: Any, total: float) -> dict[str, float]:
    """One run's number per claim, from its analysis DataTree."""
    from dimlapse.analyze.report import claims_table

    _, numbers = claims_table(tree)

    def n(key: str) -> float:  # a number the report no longer gives is NaN, not an error
        value = numbers.get(key, np.nan)
        return float(value) if value is not None else np.nan

    keys = ("a_sig", "w_sig", "early_sig", "loss_raw_abs", "loss_diff_abs", "grad_raw_abs")
    out = {k: n(k) for k in keys}
    out["phase_order_share"] = n("same") / n("n_layers") if n("n_layers") else np.nan
    out["raw_over_null"] = n("a_raw") / n("a_null") if n("a_null") else np.nan
    dim = tree["dimensionality"]["dimensionality"]
    sr = dim.sel(kind="activation", metric="stable_rank")
    out.update(early_dynamics(sr, total))
    if "formation" in tree.children:
        ft = tree["formation"]["formation_step"]
        for f, key in ((0.5, "formation_50"), (0.9, "formation_90")):
            vals = ft.sel(fraction=f).values
            out[key] = float(np.nanmean(vals) / total) if np.isfinite(vals).any() else np.nan
    return out


def _reusable(store: str, analysis: Path, recipe: Recipe) -> bool:
    """A complete run of the same recipe, already analysed (``reuse``: skip it)."""
    from dimlapse.analyze import open_run

    if not (Path(store).exists() and (analysis / "analysis.zarr").exists()):
        return False
    try:
        run = open_run(store)
    except (ValueError, FileNotFoundError):  # damaged, or not a run: not reusable
        return False
    return run.status == "complete" and run.attrs.get("config") == recipe.to_dict()


def _paths(model: str, seed: int, dirs: dict[str, str]) -> tuple[str, Path]:
    """The run store and analysis folder of one (model, seed)."""
    name = f"study-{model}-s{seed}"
    return str(Path(dirs["runs"]) / f"{name}.zarr"), Path(dirs["results"]) / name


def check_earlier(
    jobs: Sequence[tuple[str, int]],
    recipes: dict[tuple[str, int], Recipe],
    dirs: dict[str, str],
    *,
    overwrite: bool,
    reuse: bool,
) -> None:
    """Refuse, before anything trains, to replace earlier study runs or results unasked.

    With ``reuse``, an earlier run must be complete, analysed and of the same recipe (it is
    kept); any other earlier run or result needs ``overwrite``. The report files themselves
    are rebuilt under either option.
    """
    if overwrite:
        return
    earlier: list[str] = []
    for m, s in jobs:
        store, analysis = _paths(m, s, dirs)
        if not (Path(store).exists() or analysis.exists()):
            continue
        if reuse and _reusable(store, analysis, recipes[(m, s)]):
            continue
        earlier.append(store if Path(store).exists() else str(analysis))
    if not reuse:
        out = Path(dirs["results"])
        earlier += [str(out / f) for f in REPORT_FILES if (out / f).exists()]
    if earlier:
        shown = ", ".join(earlier[:3]) + (
            f" and {len(earlier) - 3} more" if len(earlier) > 3 else ""
        )
        what = "not reusable (incomplete, unanalysed or another recipe)" if reuse else "kept"
        raise FileExistsError(
            f"Earlier study runs or results exist and are {what}: {shown}; pass --overwrite "
            "to replace them"
            + ("" if reuse else ", --reuse to keep finished runs of the same recipe")
            + ", or --runs-dir / --results-dir to write elsewhere"
        )


def _one(
    model: str,
    seed: int,
    steps: int,
    every: int | None,
    dirs: dict[str, str],
    data: str | None,
    reuse: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Train, capture and analyse one (model, seed); its claim numbers and trajectory."""
    import xarray as xr

    from dimlapse.analyze import analyze_run, open_run

    from ..training import train

    recipe = Recipe.default(model, data=data, steps=steps, seed=seed, every=every)
    store, analysis = _paths(model, seed, dirs)
    if reuse and _reusable(store, analysis, recipe):
        tree = xr.open_datatree(analysis / "analysis.zarr", engine="zarr")
    else:  # bars for both long phases: training (steps) and the analysis (jobs)
        train(
            recipe,
            store,
            overwrite=overwrite,
            progress=progress,
            cache_dir=dirs["cache"],
            capture_log="none",  # the study reports its runs itself
        )
        tree = analyze_run(
            store, analysis, metrics=["stable_rank"], n_boot=200, progress=progress, figures=False
        )
    values = run_values(tree, float(recipe.steps))
    acc = open_run(store).scalars["test_accuracy"].values
    values["final_accuracy"] = float(acc[np.isfinite(acc)][-1])  # the last capture step
    sr: Any = tree["dimensionality"]["dimensionality"].sel(kind="activation", metric="stable_rank")
    early = np.asarray(sr["step"].values) <= EARLY * recipe.steps
    curve = np.nanmean(sr.values[:, early] / sr.values[:, :1], axis=0)  # mean over layers
    return {
        "model": model,
        "seed": seed,
        "data": recipe.data,
        "values": values,
        "early_steps": sr["step"].values[early].tolist(),
        "early_curve": curve.tolist(),
    }


def summarise(runs: list[dict]) -> dict[str, dict[str, list[float]]]:
    """claim -> model -> [mean, lo, hi, n] over that model's seeds."""
    models = list(dict.fromkeys(r["model"] for r in runs))
    return {
        claim: {
            m: list(mean_ci([r["values"].get(claim, np.nan) for r in runs if r["model"] == m]))
            for m in models
        }
        for claim in CLAIMS
    }


def run_study(
    models: Sequence[str] = STUDY_MODELS,
    *,
    seeds: int = DEFAULT_SEEDS,
    steps: int = DEFAULT_STEPS,
    every: int | None = None,
    data: str | None = None,
    scheduler: str | None = None,
    runs_dir: str = RUNS_DIR,
    results_dir: str = RESULTS_DIR,
    cache_dir: str = "data/cache",
    progress: bool = True,
    reuse: bool = False,
    overwrite: bool = False,
) -> Path:
    """Run every (model, seed), write ``<results_dir>/study/{study.md, study.png, study.json}``.

    ``scheduler``: None runs one after another here; a ``dask.distributed`` address runs each
    (model, seed) as one task on that cluster (the workers need this package and the paths).
    ``reuse``: keep a run whose store is complete with the same recipe and already analysed.
    ``overwrite``: replace earlier runs and results. With neither, earlier study runs or
    results are a FileExistsError raised before anything trains (:func:`check_earlier`).
    """
    from ._report import write_study

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"Expected `seeds` to be a positive int, got {seeds!r}")
    for m in models:
        Recipe.default(m, data=data, steps=steps, every=every)  # validates names and sizes up front
    dirs = {"runs": runs_dir, "results": str(Path(results_dir) / "study"), "cache": cache_dir}
    jobs = [(m, s) for m in models for s in range(seeds)]
    recipes = {
        (m, s): Recipe.default(m, data=data, steps=steps, seed=s, every=every) for m, s in jobs
    }
    check_runnable(steps, recipes[jobs[0]].every)
    check_earlier(jobs, recipes, dirs, overwrite=overwrite, reuse=reuse)
    if scheduler:
        from distributed import Client

        with Client(scheduler) as client:
            futures = [
                client.submit(_one, m, s, steps, every, dirs, data, reuse, overwrite, pure=False)
                for m, s in jobs
            ]
            runs = client.gather(futures)
    else:
        from tqdm.auto import tqdm

        runs = []
        bar = tqdm(jobs, desc="study", unit="run", disable=not progress)
        for m, s in bar:
            bar.set_postfix_str(f"{m} seed {s}")
            runs.append(_one(m, s, steps, every, dirs, data, reuse, overwrite, progress))
    out = Path(dirs["results"])
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs)
    snapshots = steps // (every or recipes[jobs[0]].every)
    meta = {"models": list(models), "seeds": seeds, "steps": steps, "every": every, "data": data}
    meta["warnings"] = caveats(seeds, snapshots)
    (out / "study.json").write_text(
        json.dumps({"study": meta, "runs": runs, "summary": summary}, indent=1)
    )
    write_study(runs, summary, meta, out)
    return out


def check_runnable(steps: int, every: int) -> None:
    """ValueError before any training when a run would hold too few snapshots to analyse."""
    from dimlapse.analyze.jobs import MIN_SAMPLES

    snapshots = steps // every + 1  # steps 0, every, 2 every, ... up to steps
    if snapshots < MIN_SAMPLES:
        raise ValueError(
            f"Expected `steps` / `every` to give at least {MIN_SAMPLES} snapshots per run (the "
            f"analysis needs them), got steps={steps}, every={every}: {snapshots}. Use "
            f"--steps {MIN_SAMPLES * every} or more (about {MIN_SNAPSHOTS * every} to conclude)"
        )


def caveats(seeds: int, snapshots: int) -> list[str]:
    """Why a study's numbers are not enough to conclude (empty when they may be)."""
    out = []
    if seeds < MIN_SEEDS:
        out.append(
            f"{seeds} seed(s) per architecture: not enough to conclude. With fewer than "
            f"{MIN_SEEDS} seeds the intervals are the seeds' range or narrower and hold the "
            "true mean far less often than 95 % (run with --seeds 5 or more)."
        )
    if snapshots < MIN_SNAPSHOTS:
        out.append(
            f"{snapshots} snapshots per run: a short run, not enough to conclude (the analysis "
            f"needs about {MIN_SNAPSHOTS}; raise --steps or lower --every)."
        )
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``dimlapse study``."""
    p.add_argument(
        "--models",
        default=",".join(STUDY_MODELS),
        help=f"comma-separated, from {', '.join(MODELS)}",
    )
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="seeds 0..N-1")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="steps per run")
    p.add_argument("--every", type=int, help="capture interval (default: the recipe's, 5)")
    p.add_argument("--scheduler", help="dask.distributed scheduler address (default: here)")
    p.add_argument("--runs-dir", default=RUNS_DIR, help="where the study's run stores go")
    p.add_argument(
        "--results-dir", default=RESULTS_DIR, help="the report goes to <results-dir>/study/"
    )
    p.add_argument("--cache-dir", default="data/cache", help="dataset cache")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="keep earlier runs that are complete, analysed and of the same recipe",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace earlier study runs and results"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    """``study``: run the study and print where its report is."""
    from ..cli import CLIError

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        out = run_study(
            models,
            seeds=args.seeds,
            steps=args.steps,
            every=args.every,
            scheduler=args.scheduler,
            runs_dir=args.runs_dir,
            results_dir=args.results_dir,
            cache_dir=args.cache_dir,
            progress=not args.no_progress,
            reuse=args.reuse,
            overwrite=args.overwrite,
        )
    except (ValueError, FileExistsError) as e:
        raise CLIError(str(e)) from e
    print(f"study: wrote {out}/study.md, {out}/study.png, {out}/study.json")
    for line in json.loads((out / "study.json").read_text())["study"]["warnings"]:
        print(f"warning: {line}")
    return 0
