"""``python -m dimlapse.pipelines <command>``: the commands behind the Makefile targets.

capture, replay and bench-capture live here; analyze, report and bench-analyze are imported
only when invoked, from ``dimlapse.pipelines._cmd_analyze`` and ``._bench_analyze``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ._recipes import DATASETS, MODELS, Recipe, check_run_name

DEFAULT_OUT = "data/runs"
# command -> (module, add-arguments function, run function, help)
_LAZY: dict[str, tuple[str, str, str, str]] = {
    "analyze": ("_cmd_analyze", "add_analyze_arguments", "run_analyze", "analyse a captured run"),
    "report": ("_cmd_analyze", "add_report_arguments", "run_report", "write a run's report"),
    "bench-analyze": ("_bench_analyze", "add_arguments", "main", "benchmark the analysis jobs"),
    "bench-capture": ("_bench_capture", "add_arguments", "main", "benchmark capture overhead"),
    "intervene": ("_intervene_run", "add_arguments", "main", "disrupt training in step windows"),
    "study": ("_study", "add_arguments", "main", "compare architectures over seeds"),
    "watch": ("_watch", "add_arguments", "main", "follow a run live: diagnoses, alerts, dashboard"),
}


class CLIError(Exception):
    """A user error on the command line: printed as one line, exit status 2."""


def _add_capture_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="mlp", help=f"one of {', '.join(MODELS)} (default mlp)")
    p.add_argument("--data", help=f"one of {', '.join(DATASETS)} (default: the model's)")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the model's recipe)")
    p.add_argument("--every", type=int, help="capture every K steps (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed for init, batches, probe")
    p.add_argument("--run", help="run name (default <model>-<data>-s<seed>)")
    p.add_argument("--out-dir", default=DEFAULT_OUT, help=f"where runs go (default {DEFAULT_OUT})")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--probe-size", type=int, help="held-out probe examples (default 512)")
    p.add_argument("--positions", type=int, help="spatial positions sampled per conv output")
    p.add_argument("--tokens", type=int, help="token positions sampled per token output")
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


def _add_replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", help="run name (default: the newest run in --out-dir)")
    p.add_argument("--out-dir", default=DEFAULT_OUT)
    p.add_argument("--store", help="a run store path or URL (instead of --run)")
    p.add_argument("--overwrite", action="store_true", help="replace stored activations")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")


def build_parser(lazy: dict[str, Callable[[argparse.ArgumentParser], None]] | None = None):
    """The argument parser. ``lazy`` maps a lazily imported command to its add-arguments."""
    parser = argparse.ArgumentParser(prog="python -m dimlapse.pipelines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_capture_arguments(sub.add_parser("capture", help="train a recipe and capture it"))
    _add_replay_arguments(sub.add_parser("replay", help="materialise activations from weights"))
    for name, (_, _, _, help_) in _LAZY.items():
        p = sub.add_parser(name, help=help_)
        if lazy and name in lazy:
            lazy[name](p)
    return parser


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
    from ._train import resolve_device, train

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

    from ._train import DataSizeError

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
    from ._replay import replay_run

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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for command-line errors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else None
    lazy: dict[str, Callable[[argparse.ArgumentParser], None]] = {}
    runner: Callable[[argparse.Namespace], int | None] | None = None
    if command in _LAZY:
        module_name, add_name, run_name, _ = _LAZY[command]
        try:
            module = importlib.import_module(f"dimlapse.pipelines.{module_name}")
        except ModuleNotFoundError as e:
            if e.name != f"dimlapse.pipelines.{module_name}":
                raise  # a real missing dependency: show it
            print(
                f"python -m dimlapse.pipelines {command}: error: the `{command}` command is not "
                f"available yet (module dimlapse.pipelines.{module_name} is not installed)",
                file=sys.stderr,
            )
            return 2
        lazy[command] = getattr(module, add_name)
        runner = getattr(module, run_name)
    parser = build_parser(lazy)
    args = parser.parse_args(argv)
    try:
        if args.command == "capture":
            return run_capture(args)
        if args.command == "replay":
            return run_replay(args)
        assert runner is not None  # every other command is lazy
        status = runner(args)
        return int(status or 0)
    except CLIError as e:
        print(f"python -m dimlapse.pipelines {args.command}: error: {e}", file=sys.stderr)
        return 2
