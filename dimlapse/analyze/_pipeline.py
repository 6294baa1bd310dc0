"""``analyze_run``: every study job over one run store, saved as one DataTree plus figures."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from dimlapse import RESULTS_DIR

from ._provenance import jsonable, vlen_strings
from ._scheduler import (
    SCHEDULER_TIMEOUT,
    check_scheduler,
    compute_job,
    compute_jobs,
    scheduler_context,
)
from ._transitions import ALL_DETECTORS
from .jobs import (
    DEFAULT_INTERVALS,
    MIN_SAMPLES,
    comparison,
    coupling,
    excluded_steps,
    nonfinite_record,
    phases,
    sampling,
    timing,
    training_dynamics,
)

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
JOBS = (
    "dimensionality",
    "transitions",
    "phases",
    "timing",
    "coupling",
    "sampling",
    "compare",
    "training",
    "formation",
    "claims",
)
#: Jobs computed in one pass over the store: they read the same activation chunks (dask
#: shares the read tasks of one compute), so the store is read and verified once.
FIRST_PASS = ("dimensionality", "formation")


def run_name(path: str | os.PathLike[str]) -> str:
    """Run name of a store path or URL: its last path component without ``.zarr``.

    Raises ValueError when the path has a ``..`` component or the name is not a plain
    directory name, so that results always stay under ``data/results/<run>/``.

    Examples
    --------
    >>> run_name("data/runs/mlp-mnist1d-s0.zarr")
    'mlp-mnist1d-s0'
    >>> run_name("data/runs/mlp.zarr/weights/..")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Expected a run store path without '..' components, got ...
    """
    text = str(path).rstrip("/")
    if ".." in text.split("://")[-1].split("/"):
        raise ValueError(
            f"Expected a run store path without '..' components, got {str(path)!r}; pass the "
            "store itself, e.g. data/runs/<run>.zarr"
        )
    name = text.split("/")[-1].removesuffix(".zarr")
    if not _RUN_NAME.match(name):
        raise ValueError(
            f"Expected the run store's name to be letters, digits, '.', '_' or '-' (not "
            f"starting with a symbol), got {name!r} from {str(path)!r}"
        )
    return name


def _layers_chunked(da: xr.DataArray) -> xr.DataArray:
    """Computed trajectories re-wrapped as dask, one chunk per (kind, layer) for parallel jobs."""
    return da.chunk({d: 1 for d in ("kind", "layer") if d in da.dims} | {"step": -1})


def _metric_subset(dim: xr.DataArray, metrics: Sequence[str] | None) -> xr.DataArray:
    """`dim` restricted to `metrics` that it holds (all metrics when none of them is there)."""
    if metrics is None:
        return dim
    have = [m for m in metrics if m in dim["metric"].values]
    return dim.sel(metric=have) if have else dim


def _total_steps(run: Any, dim: xr.DataArray) -> float:
    last = float(dim["step"].max())
    scalars = getattr(run, "scalars", None)
    if scalars is not None and "step" in scalars.coords and scalars.sizes.get("step", 0):
        last = max(last, float(scalars["step"].max()))
    return last


def _root_attrs(
    run: Any, run_path: str, params: dict[str, Any], jobs: Sequence[str]
) -> dict[str, Any]:
    run_attrs = dict(getattr(run, "attrs", {}) or {})
    keep = (
        "layout_version",
        "status",
        "every",
        "config",
        "model",
        "seed",
        "dataset",
        "git_commit",
        "versions",
        "probe",
        "codec",
        "created",
        "finished",
    )
    attrs = {f"run_{k}": jsonable(run_attrs[k]) for k in keep if k in run_attrs}
    attrs.update(
        run=run_name(run_path),
        store=str(run_path),
        analysed=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        jobs=list(jobs),
        **{k: jsonable(v) for k, v in params.items()},
    )
    return {k: ("null" if v is None else v) for k, v in attrs.items()}


#: Fewest snapshots ``analyze_run`` accepts: the sampling job's ``min_samples`` at the finest
#: interval (shorter series cannot be tested for transitions against surrogates either).
MIN_SNAPSHOTS = MIN_SAMPLES


def _default_detector(detectors: Sequence[str]) -> str:
    """The transitions API's default (best-powered) detector when it was run, else ``""``."""
    from .report import default_detector

    name = default_detector()
    return name if name is not None and name in detectors else ""


def _claims(
    results: dict[str, xr.Dataset],
    trans: xr.Dataset,
    dim: xr.DataArray,
    detectors: Sequence[str],
    every: object,
    total: float,
    alpha: float,
) -> xr.Dataset:
    """The claims job on the computed jobs, with the training context of the episodes."""
    from .jobs import claims, context_windows

    metrics = [str(m) for m in dim["metric"].values]
    others = [d for d in detectors if d != "zscore"] or list(detectors)
    spacing = float(every) if isinstance(every, int) else None
    return claims(
        trans,
        phases=results["phases"],
        coupling=results["coupling"],
        sampling=results["sampling"],
        metric="stable_rank" if "stable_rank" in metrics else metrics[0],
        detector=_default_detector(detectors) or others[0],
        total_steps=total,
        start_step=float(dim["step"].min()),
        n_snapshots=int(dim.sizes["step"]),
        every=spacing,
        context=context_windows(results["training"], margin=spacing or 0.0),
        alpha=alpha,
    )


def check_length(run: Any, run_path: Any) -> int:
    """The run's snapshot count; ValueError saying how many are needed when it is too short."""
    counts = [g.sizes.get("step", 0) for g in (run.weights, run.activations)]
    n = max(counts)
    if n < MIN_SNAPSHOTS:
        raise ValueError(
            f"Run {str(run_path)!r} (status {run.status!r}) has {n} complete snapshot(s); "
            f"the analysis needs at least {MIN_SNAPSHOTS} (transition tests and the sampling "
            "job cannot use fewer). Record more steps, or capture more often (--every)"
        )
    return n


def save_tree(tree: xr.DataTree, path: str | os.PathLike[str]) -> None:
    """Write the analysis DataTree as Zarr v3 (variable-length strings, JSON-safe attrs).

    Metadata is consolidated so that ``xr.open_datatree(path, engine="zarr")`` opens it
    without a fallback warning; zarr warns that consolidation is not in the v3 spec, which
    is known and harmless for a file written once (docs/storage-notes.md, "Consolidated
    metadata").
    """
    clean = {}
    for node in tree.subtree:
        ds = vlen_strings(node.to_dataset(inherit=False))
        ds.attrs = {k: jsonable(v) for k, v in ds.attrs.items()}
        for var in ds.variables.values():
            var.attrs = {k: jsonable(v) for k, v in var.attrs.items()}
            var.encoding = {}
        clean[node.path] = ds
    out = xr.DataTree.from_dict(clean)
    import zarr
    from zarr.errors import ZarrUserWarning

    # consolidated once, at the end: ``to_zarr(consolidated=True)`` re-consolidates the whole
    # store after every group (11 times, each reading every group written so far), and only
    # the last one stays; the files are the same bytes
    out.to_zarr(str(path), mode="w", consolidated=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=ZarrUserWarning)
        zarr.consolidate_metadata(str(path), zarr_format=3)


def _intervals(intervals: Sequence[int] | None, every: object) -> Sequence[int]:
    """The sampling intervals: as given, or the run's ``every`` then ``DEFAULT_INTERVALS``."""
    if intervals is not None:
        return intervals
    own = (every,) if isinstance(every, int) and every > 0 else ()
    return tuple(sorted({*own, *DEFAULT_INTERVALS}))


class _JobClock:
    """Wall and CPU seconds per job, and the job bar's ticks.

    CPU is this process's plus the transitions pool's workers' (``worker_cpu_seconds``), so a
    job calibrated in the pool shows its work. Jobs computed in one pass
    (:data:`FIRST_PASS`) share one interval: each gets the pass's seconds under the key
    ``"dimensionality+formation"``, so no split is invented.
    """

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._t, self._c = time.perf_counter(), self._cpu()

    @staticmethod
    def _cpu() -> float:
        from ._transitions import worker_cpu_seconds

        return time.process_time() + worker_cpu_seconds()

    def done(self, *jobs: str) -> None:
        t, c = time.perf_counter(), self._cpu()
        key = "+".join(jobs)
        self.wall[key], self.cpu[key] = round(t - self._t, 3), round(c - self._c, 3)
        self._t, self._c = t, c
        self.bar.set_postfix_str(key)
        self.bar.update(len(jobs))


@contextlib.contextmanager
def _series_bar(series: xr.DataArray, *, progress: bool) -> Iterator[Callable[[int], None]]:
    """A callback for ``transitions(progress=...)``: it receives the number of series calibrated
    so far; the bar counts the series of `series` (every dim but ``step``)."""
    total = int(np.prod([n for d, n in series.sizes.items() if d != "step"]))
    bar = tqdm(total=total, desc="transitions", unit="series", leave=False, disable=not progress)

    def advance(done: int) -> None:
        bar.update(max(0, int(done) - bar.n))

    try:
        yield advance
    finally:
        bar.close()


def analyze_run(
    run_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    scheduler: Any = None,
    metrics: Sequence[str] | None = None,
    detectors: Sequence[str] = ALL_DETECTORS,
    alpha: float = 0.05,
    intervals: Sequence[int] | None = None,
    twonn_stride: int | None = None,
    n_boot: int = 1000,
    sampling_metrics: Sequence[str] | None = ("stable_rank",),
    progress: bool = True,
    figures: bool = True,
    scheduler_timeout: float = SCHEDULER_TIMEOUT,
) -> xr.DataTree:
    """Run every study job on one run store; write ``analysis.zarr``, figures and report.md.

    Parameters
    ----------
    run_path : str or path
        A run store (local path or fsspec URL); crashed runs are trimmed by ``open_run``.
    out_dir : str or path, optional
        Default ``data/results/<run>/``, ``<run>`` the store's name without ``.zarr``.
    scheduler : None, str or distributed.Client
        None: local threads with BLAS pinned to one thread each; an address: a
        ``dask.distributed`` scheduler.
    metrics, detectors, alpha, intervals, twonn_stride, n_boot
        Passed to the jobs (:func:`dimensionality`, :func:`transitions`, :func:`sampling`,
        :func:`coupling`). ``intervals`` None: the run's own capture interval, then the study's
        5, 10, 25, ..., 1000 steps (so a run captured every step is sampled at 1 too).
    sampling_metrics : sequence of str or None
        Metrics the sampling-frequency job repeats the transition analysis for (default the
        study's stable rank, when computed; None: every metric). Each interval costs a full
        surrogate calibration, so this keeps the job a fraction of the transitions job.
    progress : bool
        Show a bar over the jobs (and over tasks on the local scheduler).
    figures : bool
        Also render ``figures/*.png`` and ``report.md``.
    scheduler_timeout : float
        Seconds to reach a scheduler at an address before failing (:func:`check_scheduler`).

    Returns
    -------
    xr.DataTree
        Groups ``/dimensionality``, ``/transitions``, ``/phases``, ``/timing``, ``/coupling``,
        ``/sampling``, ``/compare``; root attrs hold the run's provenance and every parameter.
        Saved to ``<out_dir>/analysis.zarr`` (``xr.open_datatree(path, engine="zarr")``).
        Root attrs ``nonfinite`` (arrays -> steps holding NaN/Inf) and ``excluded`` (series ->
        steps left out because their spectra are NaN) say what was not analysed.
        ``job_seconds`` and ``job_cpu_seconds``: wall and CPU seconds per job, this process's
        and the transitions pool's workers' (one ``dimensionality+formation`` entry for their
        shared pass); the returned tree's
        ``figures_seconds`` (not saved) times the figures, the report and the save, which
        overlap (the figures render in forked processes meanwhile).

    Raises
    ------
    ValueError
        A run with fewer than ``MIN_SNAPSHOTS`` snapshots, or bad options.
    StoreIntegrityError
        Corrupt, truncated or missing chunks (a ValueError too).
    ConnectionError
        No scheduler answers at the address within `scheduler_timeout`.
    """
    from ._dimensionality import dimensionality
    from ._run import open_run
    from ._transitions import transitions

    if isinstance(alpha, bool) or not isinstance(alpha, float | int) or not 0 < alpha < 1:
        raise ValueError(f"Expected `alpha` to be a float in (0, 1), got {alpha!r}")
    if isinstance(detectors, str) or not detectors:
        raise ValueError(f"Expected `detectors` to be a non-empty list of names, got {detectors!r}")
    out = Path(RESULTS_DIR) / run_name(run_path) if out_dir is None else Path(out_dir)
    if isinstance(scheduler, str) and scheduler:  # fail fast, before reading the store
        check_scheduler(scheduler, timeout=scheduler_timeout)
    run = open_run(run_path)
    check_length(run, run_path)
    params = {
        "metrics": list(metrics) if metrics is not None else "all",
        "detectors": list(detectors),
        "alpha": float(alpha),
        "intervals": [int(k) for k in intervals] if intervals is not None else "auto",
        "n_boot": n_boot,
        "sampling_metrics": list(sampling_metrics) if sampling_metrics is not None else "all",
        "scheduler": "local threads" if scheduler is None else str(scheduler),
    }
    local = scheduler is None
    labelled = "targets" in run.probe  # formation needs labelled probes
    names = [j for j in JOBS if labelled or j != "formation"]
    bar = tqdm(total=len(names), desc="analyze", unit="job", disable=not progress)
    results: dict[str, xr.Dataset] = {}
    clock = _JobClock(bar)

    with scheduler_context(scheduler, timeout=scheduler_timeout):
        first = {"dimensionality": dimensionality(run, metrics=metrics, twonn_stride=twonn_stride)}
        if labelled:
            from .jobs import formation

            first["formation"] = formation(run)
        results.update(compute_jobs(first, local=local, progress=progress))
        clock.done(*first)
        dim = results["dimensionality"]["dimensionality"]
        every = results["dimensionality"].attrs.get("every")
        dim.attrs["every"] = every if isinstance(every, int) else None
        chunked = _layers_chunked(dim)
        total = _total_steps(run, dim)
        with _series_bar(chunked, progress=progress) as advance:
            tr = transitions(chunked, detectors=tuple(detectors), alpha=alpha, progress=advance)
            results["transitions"] = compute_job(tr, "transitions", local=local, progress=progress)
        clock.done("transitions")
        trans = results["transitions"]
        jobs = {
            "phases": lambda: phases(chunked),
            "timing": lambda: timing(trans, total_steps=total, start_step=float(dim["step"].min())),
            "coupling": lambda: coupling(chunked, run.scalars, n_boot=n_boot),
            "sampling": lambda: sampling(
                _metric_subset(dim, sampling_metrics),
                intervals=_intervals(intervals, every),
                detectors=detectors,
                alpha=alpha,
                base=trans,
                every=every if isinstance(every, int) else None,
            ),
            "compare": lambda: comparison(chunked, transitions=trans, total_steps=total),
            "training": lambda: training_dynamics(run.scalars),
        }
        for job, build in jobs.items():
            results[job] = compute_job(build(), job, local=local, progress=progress)
            clock.done(job)
        results["claims"] = _claims(results, trans, dim, detectors, every, total, alpha)
        clock.done("claims")
        # inside the scheduler's context: outside it dask imports dask.distributed to look
        # for a client (0.1 s of a small run)
        health = {
            "default_detector": _default_detector(detectors),
            "nonfinite": nonfinite_record(run),
            "excluded": excluded_steps(results["dimensionality"]["dimensionality"]),
        }
    bar.close()
    results = {j: results[j] for j in names}  # the documented group order
    attrs = _root_attrs(run, str(run_path), params, names)
    timings = {"job_seconds": clock.wall, "job_cpu_seconds": clock.cpu}
    root = xr.Dataset(attrs={**attrs, **health, **timings})
    tree = xr.DataTree.from_dict({"/": root, **results})
    out.mkdir(parents=True, exist_ok=True)
    if not figures:
        save_tree(tree, out / "analysis.zarr")
        return tree
    from .report import figures_started, write_report

    t0 = time.perf_counter()
    # the figures render in forked workers while this process saves the tree and the report
    with figures_started(tree, out / "figures") as wait:
        save_tree(tree, out / "analysis.zarr")
        write_report(tree, out / "report.md")
        wait()
    tree.attrs["figures_seconds"] = round(time.perf_counter() - t0, 3)
    return tree
