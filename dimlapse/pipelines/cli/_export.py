"""``export`` command: an analysed run into TensorBoard event files or Parquet / CSV tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from dimlapse import RESULTS_DIR, RUNS_DIR

from ._analyze import resolve_store
from ._errors import CLIError


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dimlapse export``."""
    from dimlapse.analyze.exports import FORMATS

    parser.add_argument(
        "run",
        nargs="?",
        metavar="RUN",
        help=f"run name in --runs-dir, a store path, an fsspec URL, or a results folder holding "
        f"analysis.zarr (default: the newest run in {RUNS_DIR})",
    )
    parser.add_argument(
        "--to", required=True, choices=list(FORMATS), help="tensorboard event files, or tidy tables"
    )
    parser.add_argument(
        "--out", help="output folder (default: <results-dir>/<run>/export/; TensorBoard files "
        "go to its tensorboard/<run>/ subfolder)"
    )  # fmt: skip
    parser.add_argument("--runs-dir", default=RUNS_DIR, help="where runs are")
    parser.add_argument("--results-dir", default=RESULTS_DIR, help="where results are")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the files of an earlier export"
    )


def _source(run: str | None, runs_dir: str, results_dir: str) -> str:
    """A results folder (given, or a run name whose store is gone but results exist) or a store."""
    if run and "://" not in run:
        if (Path(run) / "analysis.zarr").exists():
            return run
        named = Path(results_dir) / run.removesuffix(".zarr")
        if "/" not in run and (named / "analysis.zarr").exists():
            store = Path(runs_dir) / (run if run.endswith(".zarr") else f"{run}.zarr")
            return str(store) if store.exists() else str(named)
    return resolve_store(run, runs_dir)


def run_export(args: argparse.Namespace) -> int:
    """``export``: write the files, print them and what was left out."""
    from dimlapse.analyze.exports import ExportExistsError, NotAnalysedError, export

    try:
        source = _source(args.run, args.runs_dir, args.results_dir)
        done = export(
            source,
            to=args.to,
            out=args.out,
            results_dir=args.results_dir,
            overwrite=args.overwrite,
        )
    except ExportExistsError as e:
        raise CLIError(
            str(e)
            .replace("overwrite=True (`--overwrite`)", "--overwrite")
            .replace("another `out`", "another --out")
        ) from e
    except NotAnalysedError as e:
        raise CLIError(str(e)) from e
    except ValueError as e:
        raise CLIError(str(e)) from e
    for path in done.files:
        print(f"wrote {path}")
    for note in done.notes:
        print(f"note: {note}")
    if done.view:
        print(f"view: {done.view}")
    return 0
