"""The ``capture`` and ``replay`` commands: train a recipe into a run store, and materialise a
weights-only run's activations."""

from __future__ import annotations

import argparse
from pathlib import Path

from dimlapse import RUNS_DIR

from ..zoo import DATASETS, MODELS, Recipe, check_run_name
from ._errors import CLIError


def add_capture_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="mlp", help=f"one of {', '.join(MODELS)} (default mlp)")
    p.add_argument("--data", help=f"one of {', '.join(DATASETS)} (default: the model's)")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the model's recipe)")
    p.add_argument("--every", type=int, help="capture every K steps (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed for init, batches, probe")
    p.add_argument("--run", help="run name (default <model>-<data>-s<seed>)")
    p.add_argument("--out-dir", default=RUNS_DIR, help=f"where runs go (default {RUNS_DIR})")
    p.add_argument("--batch-size", type=int, help="training batch (default: the model's recipe)")
    p.add_argument("--lr", type=float, help="learning rate (default: the model's recipe)")
    p.add_argument("--probe-size", type=int, help="held-out probe examples (default 512)")
    p.add_argument(
        "--positions", type=int, help="spatial positions sampled per conv output (default 16)"
    )
    p.add_argument(
        "--tokens", type=int, help="token positions sampled per token output (default 4)"
    )
    p.add_argument(
        "--codec", help="lz4 (default, lossless), zstd, blosc-zstd, none, float16, bitround-<bits>"
    )
    p.add_argument(
        "--mode",
        choices=("full", "weights", "spectra"),
        help="full (default), weights (replay activations later), spectra (big models)",
    )
    p.add_argument(
        "--weights-only",
        action="store_true",
        help="capture weights only (= --mode weights); materialise activations with `replay`",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace an existing run")
    mode.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    p.add_argument("--threads", type=int, help="torch threads (default: cores - 1)")
    p.add_argument("--cache-dir", default="data/cache", help="dataset cache directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", help="run name (default: the newest run in --out-dir)")
    p.add_argument("--out-dir", default=RUNS_DIR)
    p.add_argument(
        "--store", help="a run store path or URL (instead of --run; default: the run --run names)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace stored activations")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")


def store_for(run: str, out_dir: str) -> str:
    """The store path (or URL) of run ``run`` under ``out_dir``."""
    check_run_name(run)
    if "://" in out_dir:
        return f"{out_dir.rstrip('/')}/{run}.zarr"
    return str(Path(out_dir) / f"{run}.zarr")


def capture_recipe(args: argparse.Namespace) -> Recipe:
    """Build and validate the recipe from parsed ``capture`` arguments."""
    if args.model not in MODELS:
        raise CLIError(f"Unknown model {args.model!r}; expected one of: {', '.join(MODELS)}")
    if args.data is not None and args.data not in DATASETS:
        raise CLIError(f"Unknown data {args.data!r}; expected one of: {', '.join(DATASETS)}")
    try:
        return Recipe.default(
            args.model,
            data=args.data,
            steps=args.steps,
            every=args.every,
            seed=args.seed,
            batch_size=args.batch_size,
            lr=args.lr,
            probe_size=args.probe_size,
            positions=args.positions,
            tokens=args.tokens,
            codec=args.codec,
            activations=False if args.weights_only else None,
            mode="weights" if args.weights_only else args.mode,
        )
    except ValueError as e:
        raise CLIError(str(e)) from e


def run_capture(args: argparse.Namespace) -> int:
    """``capture``: train, capture into ``<out-dir>/<run>.zarr``, print a summary line."""
    from ..training import resolve_device, train

    recipe = capture_recipe(args)
    try:
        resolve_device(args.device)
    except ValueError as e:
        raise CLIError(str(e)) from e
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"Expected `--threads` to be a positive int, got {args.threads!r}")
    try:
        store = store_for(args.run or recipe.run_name, args.out_dir)
    except ValueError as e:
        raise CLIError(str(e)) from e
    exists = "://" not in store and Path(store).exists()
    if exists and not (args.overwrite or args.resume):
        raise CLIError(
            f"Run store {store} already exists; pass --overwrite to replace it, --resume to "
            f"continue it, or --run NAME for a new run"
        )
    if args.resume and "://" not in store and not exists:
        raise CLIError(f"Cannot --resume: no run store at {store}")
    from dimlapse.capture import RunExistsError

    from ..training import DataSizeError

    try:
        result = train(
            recipe,
            store,
            overwrite=args.overwrite,
            resume=args.resume,
            progress=not args.no_progress,
            device=args.device,
            threads=args.threads,
            cache_dir=args.cache_dir,
            capture_log="start",  # where the run goes; the summary below replaces the close line
        )
    except RunExistsError as e:  # raised before training starts (remote stores)
        raise CLIError(f"{e}; pass --overwrite to replace it or --resume to continue it") from e
    except DataSizeError as e:  # raised once the data is loaded, before training starts
        raise CLIError(str(e)) from e
    print(result.summary())
    return 0


def newest_run(out_dir: str) -> str:
    """The most recently modified ``*.zarr`` under ``out_dir``."""
    runs = sorted(Path(out_dir).glob("*.zarr"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise CLIError(f"No runs in {out_dir}; run `make capture` first or pass --run / --store")
    return str(runs[-1])


def run_replay(args: argparse.Namespace) -> int:
    """``replay``: rebuild the model from the store's recipe, materialise its activations."""
    from ..training import replay_run

    if args.store and args.run:
        raise CLIError("Pass either --run or --store, not both")
    if args.store:
        store = args.store
    elif args.run:
        try:
            store = store_for(args.run, args.out_dir)
        except ValueError as e:
            raise CLIError(str(e)) from e
    else:
        store = newest_run(args.out_dir)
    if "://" not in store and not Path(store).exists():
        raise CLIError(f"No run store at {store}; list runs with `ls {args.out_dir}`")
    from dimlapse.capture import RunExistsError

    try:
        n = replay_run(store, overwrite=args.overwrite, device=args.device)
    except RunExistsError as e:
        raise CLIError(f"{e} (use --overwrite)") from e
    except ValueError as e:
        raise CLIError(str(e)) from e
    print(f"{store}: replayed activations for {n} snapshots")
    return 0
