"""``analyze`` and ``report`` commands: the whole analysis of a run, and re-rendering its report."""

from __future__ import annotations

import argparse
from pathlib import Path

from dimlapse import RESULTS_DIR, RUNS_DIR

from ..zoo import check_run_name
from ._errors import CLIError


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_analyze_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dimlapse analyze``."""
    from dimlapse.analyze import ALL_DETECTORS, DEFAULT_DETECTOR

    parser.add_argument(
        "--run",
        help=f"run name in --runs-dir, a store path, or an fsspec URL (default: the newest run "
        f"in {RUNS_DIR})",
    )
    parser.add_argument("--runs-dir", default=RUNS_DIR, help=f"where runs are (default {RUNS_DIR})")
    parser.add_argument(
        "--out-dir", help=f"where results go (default {RESULTS_DIR}/<run>/, <run> without .zarr)"
    )
    parser.add_argument(
        "--scheduler",
        help="address of a dask.distributed scheduler, e.g. tcp://10.0.0.5:8786 "
        "(default: local threads)",
    )
    parser.add_argument(
        "--scheduler-timeout",
        type=float,
        default=10.0,
        help="seconds to reach the scheduler before giving up (default 10)",
    )
    parser.add_argument("--metrics", type=_csv, help="comma-separated metric names (default all)")
    parser.add_argument(
        "--detectors",
        type=_csv,
        default=list(ALL_DETECTORS),
        help=f"comma-separated transition detectors, any of {', '.join(ALL_DETECTORS)} (default "
        f"all; figures and the report lead with {DEFAULT_DETECTOR}, the best-powered, when run)",
    )
    parser.add_argument("--alpha", type=float, default=0.05, help="FDR level (default 0.05)")
    parser.add_argument(
        "--n-boot", type=int, default=1000, help="block-bootstrap resamples (default 1000)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace earlier results of the same run in the results folder",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def check_earlier_results(out: Path, *, overwrite: bool) -> None:
    """CLIError when ``out`` holds earlier results (analysis.zarr, report.md, figures/).

    Checked before the analysis starts, so minutes of work are not spent to be refused.
    """
    earlier = [p for p in ("analysis.zarr", "report.md", "figures") if (out / p).exists()]
    if earlier and not overwrite:
        raise CLIError(
            f"{out} already holds results of an earlier analysis ({', '.join(earlier)}); pass "
            "--overwrite to replace them, or --out-dir DIR to write elsewhere"
        )


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dimlapse report``."""
    parser.add_argument(
        "--run", help=f"run name (default: the newest analysed run in {RESULTS_DIR})"
    )
    parser.add_argument(
        "--results-dir", default=RESULTS_DIR, help=f"where results are (default {RESULTS_DIR})"
    )
    parser.add_argument(
        "--out-dir",
        help="a results folder holding analysis.zarr (overrides --run; "
        "default: <results-dir>/<run>/)",
    )


def resolve_store(run: str | None, runs_dir: str) -> str:
    """The store to analyse: `run` as a path or URL, a run name in `runs_dir`, or the newest."""
    if run:
        if ".." in run.split("://")[-1].replace("\\", "/").split("/"):
            raise CLIError(
                f"Expected --run without '..' components, got {run!r}; pass the run store "
                "itself (data/runs/<run>.zarr) or its name"
            )
        if "://" in run or Path(run).exists():
            return run
        name = run if run.endswith(".zarr") else f"{run}.zarr"
        if "://" in runs_dir:
            return f"{runs_dir.rstrip('/')}/{name}"
        store = Path(runs_dir) / name
        if not store.exists():
            known = sorted(p.name[:-5] for p in Path(runs_dir).glob("*.zarr"))
            raise CLIError(
                f"No run {run!r}: {store} does not exist; known runs: {', '.join(known) or 'none'}"
                " (record one with `make capture MODEL=mlp`)"
            )
        return str(store)
    runs = sorted(Path(runs_dir).glob("*.zarr"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise CLIError(
            f"No runs in {runs_dir}/: record one first with `make capture MODEL=mlp`, or pass "
            "--run PATH"
        )
    return str(runs[-1])


def check_detectors(names: list[str]) -> None:
    """CLIError naming the first unknown detector and the registered ones, or an empty list."""
    from dimlapse.analyze import ALL_DETECTORS

    known = ", ".join(ALL_DETECTORS)
    if not names:
        raise CLIError(f"Expected `--detectors` to name at least one of: {known}")
    for name in names:
        if name not in ALL_DETECTORS:
            raise CLIError(f"Unknown detector {name!r} in `--detectors`; expected any of: {known}")


def run_analyze(args: argparse.Namespace) -> int:
    """``analyze``: all study jobs on one run -> analysis.zarr, figures/, report.md."""
    from dimlapse.analyze import analyze_run, run_name

    check_detectors(args.detectors)
    try:
        store = resolve_store(args.run, args.runs_dir)
        out = Path(args.out_dir) if args.out_dir else Path(RESULTS_DIR) / run_name(store)
    except ValueError as e:
        raise CLIError(str(e)) from e
    if not 0 < args.alpha < 1:
        raise CLIError(f"Expected `--alpha` in (0, 1), got {args.alpha!r}")
    check_earlier_results(out, overwrite=args.overwrite)
    if not args.scheduler_timeout > 0:
        raise CLIError(f"Expected `--scheduler-timeout` > 0 seconds, got {args.scheduler_timeout}")
    try:
        analyze_run(
            store,
            out,
            scheduler=args.scheduler,
            metrics=args.metrics,
            detectors=tuple(args.detectors),
            alpha=args.alpha,
            n_boot=args.n_boot,
            progress=not args.no_progress,
            scheduler_timeout=args.scheduler_timeout,
        )
    except (ValueError, FileNotFoundError, ConnectionError) as e:
        raise CLIError(str(e)) from e
    print(f"{store}: wrote {out / 'analysis.zarr'}, {out / 'figures'}/, {out / 'report.md'}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """``report``: re-render figures/ and report.md from an existing analysis.zarr."""
    import xarray as xr

    from dimlapse.analyze import render_figures, write_report

    if args.out_dir:
        out = Path(args.out_dir)
    elif args.run:
        name = args.run.removesuffix(".zarr")
        try:
            check_run_name(name)
        except ValueError as e:
            raise CLIError(
                f"Expected --run to be a run name in {args.results_dir}/ (letters, digits, "
                f"'.', '_' or '-'), got {args.run!r}; use --out-dir for a results folder"
            ) from e
        out = Path(args.results_dir) / name
    else:
        done = sorted(
            Path(args.results_dir).glob("*/analysis.zarr"), key=lambda p: p.stat().st_mtime
        )
        if not done:
            raise CLIError(
                f"No analysed runs in {args.results_dir}/: run `make analyze` first "
                "(after `make capture MODEL=mlp`)"
            )
        out = done[-1].parent
    path = out / "analysis.zarr"
    if not path.exists():
        raise CLIError(f"No {path}; run `make analyze RUN={out.name}` first")
    tree = xr.open_datatree(path, engine="zarr").load()
    render_figures(tree, out / "figures")  # type: ignore[operator]  # lazy module attribute
    write_report(tree, out / "report.md")  # type: ignore[operator]
    print(f"wrote {out / 'report.md'} and {out / 'figures'}/")
    return 0
