"""``make intervene``: train the baseline and the disrupted runs, then report lasting effects.

The lasting effect of a window is measured at the end of training against the baseline (same
recipe and seed): held-out accuracy overall and per class, and each activation layer's stable
rank averaged over the last 10 % of capture steps. The immediate effect (at the window's end)
is shown beside it. One seed: the yardstick for a "lasting" difference is the baseline's own
step-to-step spread of held-out accuracy over its last 10 % of capture steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from dimlapse import RESULTS_DIR, RUNS_DIR

from ..zoo import MODELS, Recipe
from ._windows import DEFAULT_STRENGTH, KINDS, Disruption, check_kind, parse_windows

TAIL = 0.1  # share of capture steps at the end that define "final"


def _trajectories(store: str, *, progress: bool = False) -> dict[str, Any]:
    """Held-out accuracy and activation stable rank per layer of one captured run.

    The stable rank needs one spectrum per (layer, snapshot): the longest phase after training
    (about 24 s for the default cnn run), hence its own bar.
    """
    from contextlib import nullcontext

    from dask.diagnostics import ProgressBar

    from dimlapse.analyze import dimensionality, open_run

    run = open_run(store)
    acc = run.scalars["test_accuracy"].compute()
    acc = acc.where(np.isfinite(acc), drop=True)
    dim = dimensionality(run, metrics=["stable_rank"], twonn_stride=0)["dimensionality"]
    sr = dim.sel(kind="activation", metric="stable_rank")  # (layer, step)
    if progress:
        print(f"  stable rank of {sr.sizes['layer']} layers x {sr.sizes['step']} snapshots")
    with ProgressBar(minimum=1.0) if progress else nullcontext():
        sr = sr.compute()
    return {
        "acc_step": acc["step"].values,
        "acc": acc.values,
        "sr_step": sr["step"].values,
        "sr": {str(k): sr.sel(layer=k).values for k in sr["layer"].values},
    }


def _tail_mean(values: np.ndarray) -> float:
    k = max(1, round(TAIL * len(values)))
    return float(np.nanmean(values[-k:]))


def run_interventions(
    model: str,
    windows: list[tuple[int, int]],
    kind: str,
    *,
    data: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    every: int | None = None,
    strength: float | None = None,
    layer: str | None = None,
    runs_dir: str = RUNS_DIR,
    results_dir: str = RESULTS_DIR,
    progress: bool = True,
    threads: int | None = None,
    cache_dir: str = "data/cache",
    probe_size: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Train baseline + one disrupted run per window; write report.md, figure and summary.json.

    Returns the results folder ``<results_dir>/intervene-<model>-<kind>/``. Earlier stores or
    results of the same model and kind are kept (FileExistsError) unless ``overwrite``.
    """
    from dimlapse.capture.store import update_attrs

    from ..training import train
    from ..zoo import load_dataset
    from ._report import write_report
    from ._windows import per_class_accuracy

    check_kind(kind)
    recipe = Recipe.default(
        model, data=data, steps=steps, seed=seed, every=every, probe_size=probe_size
    )
    for a, b in windows:
        if b > recipe.steps:
            raise ValueError(f"Window {a}-{b} ends after the run's {recipe.steps} steps")
    strength = DEFAULT_STRENGTH[kind] if strength is None else float(strength)
    dataset = load_dataset(recipe.data, cache_dir=cache_dir)
    n_classes = dataset.spec.n_classes
    if kind in ("input_noise", "blur") and not dataset.x_train.is_floating_point():
        raise ValueError(
            f"`kind` {kind!r} needs float inputs; {recipe.data!r} has {dataset.x_train.dtype} "
            "tokens: use label_noise, freeze or lr_spike"
        )
    base = f"intervene-{model}-{kind}"
    out = Path(results_dir) / base
    labels = ["baseline", *(f"w{a}-{b}" for a, b in windows)]
    stores = [Path(runs_dir) / f"{base}-{label}.zarr" for label in labels]
    earlier = [p for p in (*stores, out / "report.md", out / "summary.json") if p.exists()]
    if earlier and not overwrite:  # checked before any training, as capture does
        shown = ", ".join(str(p) for p in earlier[:3]) + (" ..." if len(earlier) > 3 else "")
        raise FileExistsError(
            f"Earlier intervention results exist ({shown}); pass --overwrite to replace them, "
            "or --runs-dir / --results-dir to write elsewhere"
        )
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    for window, label, path in zip([None, *windows], labels, stores, strict=True):
        store = str(path)
        hook = Disruption(kind, window, strength, layer, seed, n_classes)
        result = train(
            recipe,
            store,
            overwrite=overwrite,
            progress=progress,
            intervention=hook,
            threads=threads,
            cache_dir=cache_dir,
            capture_log="none",  # one line per run of its own, below
        )
        assert hook.model is not None  # set at every step
        if progress:
            print(f"{label}: trained in {result.seconds:.0f} s; held-out accuracy per class")
        per_class = per_class_accuracy(hook.model, dataset.x_test, dataset.y_test, n_classes)
        info = {"kind": kind, "window": list(window) if window else None, "strength": strength}
        info["layer"] = layer if kind == "freeze" else None
        update_attrs(store, {"intervention": info})
        runs.append(
            {
                "label": label,
                "window": window,
                "store": store,
                "final_accuracy": result.test_accuracy,
                "per_class": per_class,
                **_trajectories(store, progress=progress),
            }
        )
        if progress:
            print(f"{label}: held-out accuracy {result.test_accuracy:.3f}")
    summary = summarise(runs)
    meta = {"model": model, "data": recipe.data, "kind": kind, "strength": strength}
    meta.update(layer=layer, seed=seed, steps=recipe.steps, every=recipe.every)
    (out / "summary.json").write_text(json.dumps({"run": meta, "windows": summary}, indent=1))
    write_report(runs, summary, meta, out)
    return out


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per disrupted window: immediate and lasting effects relative to the baseline."""
    base = runs[0]
    tail = max(1, round(TAIL * len(base["acc"])))
    noise = float(np.std(np.diff(base["acc"][-tail - 1 :]))) if len(base["acc"]) > 2 else np.nan
    out = []
    for r in runs[1:]:
        end = r["window"][1]
        i = int(np.searchsorted(r["acc_step"], end))
        i = min(i, len(r["acc"]) - 1)
        j = min(int(np.searchsorted(base["acc_step"], end)), len(base["acc"]) - 1)
        dclass = np.array(r["per_class"]) - np.array(base["per_class"])
        dsr = {
            k: _tail_mean(v) - _tail_mean(base["sr"][k])
            for k, v in r["sr"].items()
            if k in base["sr"]
        }
        sr0 = {k: _tail_mean(v) for k, v in base["sr"].items()}
        out.append(
            {
                "window": r["label"],
                "immediate_accuracy_change": float(r["acc"][i] - base["acc"][j]),
                "final_accuracy": r["final_accuracy"],
                "final_accuracy_change": r["final_accuracy"] - base["final_accuracy"],
                "baseline_final_accuracy": base["final_accuracy"],
                "accuracy_noise": noise,
                "worst_class": int(np.nanargmin(dclass)),
                "worst_class_change": float(np.nanmin(dclass)),
                "per_class_change": [float(v) for v in dclass],
                "stable_rank_change": dsr,
                "stable_rank_relative_change": {
                    k: (v / sr0[k] if sr0[k] else np.nan) for k, v in dsr.items()
                },
            }
        )
    return out


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``dimlapse intervene``."""
    from ._critical import DEFICITS, DEPTHS, SEEDS
    from ._deeplinear import Completion

    dl = Completion()  # the published protocol's defaults
    p.add_argument(
        "--kind",
        default="blur",
        help=f"one of {', '.join(KINDS)} (disrupted training runs), or deeplinear (the "
        "deep-linear critical period of Kleinman, Achille and Soatto, ICLR 2024)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace earlier runs and results")
    p.add_argument("--results-dir", default=RESULTS_DIR, help="where the report goes")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or phase lines")
    g = p.add_argument_group("disrupted training runs (every --kind but deeplinear)")
    g.add_argument("--model", default="cnn", help=f"one of {', '.join(MODELS)}")
    g.add_argument(
        "--windows",
        default="0-1000,1000-2000,2000-3000",
        help="comma-separated START-END step windows (steps START < step <= END)",
    )
    g.add_argument("--data", help="dataset (default: the model's)")
    g.add_argument("--steps", type=int, help="optimizer steps (default: the model's recipe)")
    g.add_argument("--every", type=int, help="capture interval (default: the recipe's, 5)")
    g.add_argument(
        "--seed", type=int, default=0, help="seed of the baseline and every window (default 0)"
    )
    g.add_argument("--strength", type=float, help="disruption strength (default: per kind)")
    g.add_argument("--layer", help="module frozen by --kind freeze (default: the first)")
    g.add_argument("--runs-dir", default=RUNS_DIR, help="where the run stores go")
    g.add_argument("--threads", type=int, help="torch threads (default: cores - 1)")
    d = p.add_argument_group("deeplinear (matrix completion; defaults: the published protocol)")
    d.add_argument("--n", type=int, default=dl.n, help="target size n (n x n)")
    d.add_argument("--rank", type=int, default=dl.rank, help="rank of the final task's target")
    d.add_argument(
        "--deficit-rank",
        type=int,
        default=dl.deficit_rank,
        help="rank of the deficit task's target (task switch); 0: the deficit is fewer "
        "observations of the final target (--deficit-observed)",
    )
    d.add_argument("--observed", type=int, default=dl.n_observed, help="observed entries")
    d.add_argument(
        "--deficit-observed",
        type=int,
        help="entries seen during the deficit (default: all observed ones)",
    )
    d.add_argument(
        "--depths",
        type=_ints,
        default=",".join(map(str, DEPTHS)),
        help="comma-separated network depths",
    )
    d.add_argument("--init-scale", type=float, default=dl.init_scale, help="initial scale")
    d.add_argument("--lr", type=float, default=dl.lr, help="gradient-descent step size")
    d.add_argument(
        "--deficits",
        type=_ints,
        default=",".join(map(str, DEFICITS)),
        help="comma-separated deficit lengths in steps (include 0 for the gaps)",
    )
    d.add_argument(
        "--continue-steps",
        type=int,
        default=dl.continue_steps,
        help="steps on the final task after the deficit",
    )
    d.add_argument("--seeds", type=int, default=SEEDS, help="seeds 0..N-1")


def _deeplinear(args: argparse.Namespace) -> Path:
    from ._critical import check_overwrite, run_critical_periods, write_critical
    from ._deeplinear import Completion

    if isinstance(args.seeds, bool) or args.seeds < 1:
        raise ValueError(f"Expected `--seeds` to be a positive int, got {args.seeds!r}")
    for name in ("depths", "deficits"):
        values = getattr(args, name)
        low = 1 if name == "depths" else 0
        if not values or min(values) < low:
            raise ValueError(f"Expected `--{name}` as comma-separated ints >= {low}, got {values}")
    setup = Completion(
        n=args.n,
        rank=args.rank,
        n_observed=args.observed,
        deficit_rank=args.deficit_rank or None,
        n_deficit=args.deficit_observed,
        lr=args.lr,
        init_scale=args.init_scale,
        continue_steps=args.continue_steps,
    )
    out = Path(args.results_dir) / "intervene-deeplinear"
    check_overwrite(out, args.overwrite)  # before the minutes of training
    runs = run_critical_periods(
        setup,
        depths=args.depths,
        deficits=args.deficits,
        seeds=range(args.seeds),
        progress=not args.no_progress,
    )
    return write_critical(runs, setup, out, overwrite=args.overwrite)


def main(args: argparse.Namespace) -> int:
    """``intervene``: the disrupted runs, or the deep-linear critical-period check."""
    from ..cli import CLIError

    try:
        if args.kind == "deeplinear":
            path = _deeplinear(args)
            print(f"deep linear critical periods: wrote {path}, {path.parent}/deeplinear.csv")
            print(path.read_text().split("## Reading", 1)[1].split("\n\nThresholds")[0].strip())
            return 0
        windows = parse_windows(args.windows)
        out = run_interventions(
            args.model,
            windows,
            args.kind,
            data=args.data,
            steps=args.steps,
            seed=args.seed,
            every=args.every,
            strength=args.strength,
            layer=args.layer,
            runs_dir=args.runs_dir,
            results_dir=args.results_dir,
            progress=not args.no_progress,
            threads=args.threads,
            overwrite=args.overwrite,
        )
    except (ValueError, FileExistsError) as e:
        raise CLIError(str(e)) from e
    print(f"intervene: wrote {out}/report.md, {out}/intervene.png, {out}/summary.json")
    return 0
