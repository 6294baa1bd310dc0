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


def _trajectories(store: str) -> dict[str, Any]:
    """Held-out accuracy and activation stable rank per layer of one captured run."""
    from dimlapse.analyze import dimensionality, open_run

    run = open_run(store)
    acc = run.scalars["test_accuracy"].compute()
    acc = acc.where(np.isfinite(acc), drop=True)
    dim = dimensionality(run, metrics=["stable_rank"], twonn_stride=0)["dimensionality"]
    sr = dim.sel(kind="activation", metric="stable_rank").compute()  # (layer, step)
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
) -> Path:
    """Train baseline + one disrupted run per window; write report.md, figure and summary.json.

    Returns the results folder ``<results_dir>/intervene-<model>-<kind>/``.
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
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    for window in [None, *windows]:
        label = "baseline" if window is None else f"w{window[0]}-{window[1]}"
        store = str(Path(runs_dir) / f"{base}-{label}.zarr")
        hook = Disruption(kind, window, strength, layer, seed, n_classes)
        result = train(
            recipe,
            store,
            overwrite=True,
            progress=progress,
            intervention=hook,
            threads=threads,
            cache_dir=cache_dir,
        )
        assert hook.model is not None  # set at every step
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
                **_trajectories(store),
            }
        )
        if progress:
            print(f"{label}: held-out accuracy {result.test_accuracy:.3f} ({result.seconds:.0f} s)")
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``dimlapse intervene``."""
    p.add_argument("--model", default="cnn", help=f"one of {', '.join(MODELS)} (default cnn)")
    p.add_argument("--windows", default="0-1000,1000-2000,2000-3000", help="START-END step windows")
    p.add_argument(
        "--kind",
        default="blur",
        help=f"one of {', '.join(KINDS)}, or deeplinear (the matrix-completion check)",
    )
    p.add_argument("--data", help="dataset (default: the model's)")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the model's recipe)")
    p.add_argument("--every", type=int, help="capture interval (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strength", type=float, help="disruption strength (default: per kind)")
    p.add_argument("--layer", help="module frozen by --kind freeze (default: the first)")
    p.add_argument("--runs-dir", default=RUNS_DIR)
    p.add_argument("--results-dir", default=RESULTS_DIR)
    p.add_argument("--threads", type=int)
    p.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    """``intervene``: the disrupted runs, or the deep-linear critical-period check."""
    from ..cli import CLIError

    if args.kind == "deeplinear":
        from ._report import write_deeplinear

        out = write_deeplinear(Path(args.results_dir) / "intervene-deeplinear", seed=args.seed)
        print(f"deep linear critical periods: wrote {out}")
        return 0
    try:
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
        )
    except ValueError as e:
        raise CLIError(str(e)) from e
    print(f"intervene: wrote {out}/report.md, {out}/intervene.png, {out}/summary.json")
    return 0
