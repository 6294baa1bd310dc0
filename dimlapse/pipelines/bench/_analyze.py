"""``dimlapse bench analyze`` (``make bench-analyze``): the analysis jobs against a naive SVD loop.

The store is the study's run: the 784-256-128-10 MLP trained with the study's protocol (Adam,
lr 1e-3, batch 64, a snapshot every 5 steps, a 512-example probe) on scikit-learn's digits
upsampled to 28x28, captured by :class:`dimlapse.capture.Recorder` through the ``capture``
pipeline, and cached under ``data/bench/``. Weights fc1/fc2/fc3 (256x784, 128x256, 10x128) and
activations (512x256, 512x128, 512x10) at every snapshot.

Stages timed:

- naive: read each store chunk, then one full ``numpy.linalg.svd`` per matrix, one process,
  BLAS with all its threads (what one writes without thinking about it);
- spectra: :func:`dimlapse.analyze.spectra` on Dask's threaded scheduler with 1 worker and
  with all cores, BLAS pinned to one thread per worker (parallel efficiency from these two);
- dimensionality: the whole job (spectra plus every metric), and TwoNN at its default stride;
- end to end: :func:`dimlapse.analyze.analyze_run` on the cached store;
- ``dimlapse analyze`` end to end and per job on the default run (``--default-run``) and a
  20-snapshot run, beside a previous version (``--base``), with the targets
  (:mod:`._analyze_e2e`).

Metrics from the naive SVD and from the Dask job must agree to 1e-6 relative.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr

from dimlapse.analyze import (
    SPECTRAL_METRICS,
    blas_single_thread,
    dimensionality,
    numerical_rank_rtol,
    open_run,
    singular_values,
    spectra,
)

DEFAULT_DIR = "data/bench"
RTOL = 1e-6
SPECTRA_TARGET = 4.0


def build_store(
    path: Path, *, snapshots: int, every: int, seed: int, data: str = "digits"
) -> float:
    """Train and capture the study's MLP into ``path`` unless a complete copy exists.

    Returns the seconds spent (0 when the cached store was reused).
    """
    if path.exists():
        run = open_run(str(path))
        if run.status == "complete" and run.activations.sizes.get("step", 0) == snapshots + 1:
            return 0.0
    from ..training import train
    from ..zoo import Recipe

    recipe = Recipe.default("mlp", data=data, steps=snapshots * every, every=every, seed=seed)
    t0 = time.perf_counter()
    result = train(
        recipe, path, overwrite=True, progress=True, cache_dir="data/cache", capture_log="start"
    )
    print(result.summary())
    return time.perf_counter() - t0


def matrices(run: Any) -> dict[tuple[str, str], xr.DataArray]:
    """(kind, layer) -> (step, n, d) array for the MLP's weight matrices and activations."""
    out = {}
    for name, da in run.weights.data_vars.items():
        if da.ndim == 3:
            out[("weight", str(da.attrs.get("layer", name)))] = da
    for name, da in run.activations.data_vars.items():
        out[("activation", str(name))] = da
    return out


def _metric_kwargs(da: xr.DataArray, *, center: bool) -> dict[Callable[..., Any], dict[str, Any]]:
    """The job's metric parameters for one array (see :func:`dimlapse.analyze.dimensionality`)."""
    n, d = da.shape[1], int(np.prod(da.shape[2:]))
    return {
        SPECTRAL_METRICS["numerical_rank"]: {"rtol": numerical_rank_rtol(n, d, da.dtype)},
        SPECTRAL_METRICS["epsilon_rank"]: {"epsilon": 1e-3, "n_samples": n if center else 1},
    }


def naive(arrays: dict[tuple[str, str], xr.DataArray], *, limit: int) -> tuple[dict, float, float]:
    """Full SVD per matrix, one process, on the first ``limit`` snapshots.

    Returns metrics (kind, layer) -> (step, metric), seconds reading, seconds in SVD + metrics.
    """
    read_s = svd_s = 0.0
    out = {}
    for (kind, layer), da in arrays.items():
        center = kind == "activation"
        kwargs = _metric_kwargs(da, center=center)
        store_chunk = da.data.chunks[0][0]
        rows = []
        for start in range(0, min(limit, da.shape[0]), store_chunk):
            stop = min(start + store_chunk, limit)
            t0 = time.perf_counter()
            block = np.asarray(da.data[start:stop].compute(scheduler="sync"))
            t1 = time.perf_counter()
            for x in block.astype(np.float64):
                if center:
                    x = x - x.mean(axis=0)
                s = np.linalg.svd(x, compute_uv=False)
                rows.append([f(s, **kwargs.get(f, {})) for f in SPECTRAL_METRICS.values()])
            read_s += t1 - t0
            svd_s += time.perf_counter() - t1
        out[(kind, layer)] = np.array(rows, dtype=np.float64)
    return out, read_s, svd_s


def kernels(arrays: dict[tuple[str, str], xr.DataArray], *, reps: int = 5) -> dict[str, Any]:
    """Median ms per matrix: full SVD (BLAS free, 1 thread), float64 Gram + eigvalsh (1 thread).

    A busy machine makes multi-threaded BLAS far slower than one thread (threads spin for
    cores others hold); the 1-thread SVD column shows the naive loop's cost without that.
    """
    out = {}
    for (kind, layer), da in arrays.items():
        x = np.asarray(da.data[0].compute(scheduler="sync"), dtype=np.float64)
        center = kind == "activation"
        svd_t, svd1_t, gram_t = [], [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            np.linalg.svd(x, compute_uv=False)
            svd_t.append(time.perf_counter() - t0)
            with blas_single_thread():
                t0 = time.perf_counter()
                np.linalg.svd(x, compute_uv=False)
                svd1_t.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                singular_values(x, center=center)
                gram_t.append(time.perf_counter() - t0)
        out[f"{kind}/{layer}"] = tuple(1e3 * float(np.median(v)) for v in (svd_t, svd1_t, gram_t))
    return out


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def dask_spectra(arrays: dict[tuple[str, str], xr.DataArray], *, workers: int) -> float:
    """Seconds to compute every spectrum with ``workers`` threads, BLAS pinned to one each."""
    lazy = [spectra(da, center=kind == "activation") for (kind, _), da in arrays.items()]
    with blas_single_thread(), dask.config.set(scheduler="threads", num_workers=workers):
        _, seconds = timed(lambda: dask.compute(*lazy))
    return seconds


def agreement(reference: dict, job: xr.DataArray) -> dict[str, float]:
    """Largest relative difference per metric between the naive and the Dask results."""
    worst = dict.fromkeys(SPECTRAL_METRICS, 0.0)
    for (kind, layer), ref in reference.items():
        got = job.sel(kind=kind, layer=layer).values[: len(ref)]  # (step, metric)
        for j, name in enumerate(SPECTRAL_METRICS):
            a, b = got[:, j], ref[:, j]
            both_nan = np.isnan(a) & np.isnan(b)
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.abs(a - b) / np.maximum(np.abs(b), np.finfo(float).tiny)
            rel = np.where(both_nan, 0.0, np.where(np.isnan(rel), np.inf, rel))
            worst[name] = max(worst[name], float(rel.max(initial=0.0)))
    return worst


def run_benchmark(
    *,
    snapshots: int,
    every: int,
    out_dir: Path,
    workers: int,
    seed: int,
    end_to_end: bool,
    naive_snapshots: int | None = None,
) -> dict[str, Any]:
    """Build (or reuse) the store, time every stage, check agreement; return the numbers."""
    store = out_dir / f"mlp-digits-{snapshots}x{every}-s{seed}.zarr"
    build_s = build_store(store, snapshots=snapshots, every=every, seed=seed)
    run = open_run(str(store))
    arrays = matrices(run)
    n_steps = run.activations.sizes["step"]
    res: dict[str, Any] = {"store": str(store), "snapshots": n_steps, "build_s": build_s}
    res["shapes"] = {f"{k}/{layer}": tuple(da.shape[1:]) for (k, layer), da in arrays.items()}
    res["workers"] = workers

    res["kernels_ms"] = kernels(arrays)
    limit = min(naive_snapshots or n_steps, n_steps)
    ref, read_s, svd_s = naive(arrays, limit=limit)
    scale = n_steps / limit  # extrapolated to the whole run when timed on a prefix
    res["naive_measured"] = limit
    res["naive_read_s"], res["naive_svd_s"] = read_s * scale, svd_s * scale
    res["naive_s"] = res["naive_read_s"] + res["naive_svd_s"]
    res["spectra_1_s"] = dask_spectra(arrays, workers=1)
    res["spectra_n_s"] = dask_spectra(arrays, workers=workers)
    res["speedup"] = res["naive_s"] / res["spectra_n_s"]
    res["efficiency"] = res["spectra_1_s"] / (workers * res["spectra_n_s"])

    with blas_single_thread(), dask.config.set(scheduler="threads", num_workers=workers):
        dims, res["dimensionality_s"] = timed(lambda: dimensionality(run, twonn_stride=0).compute())
        tw, res["twonn_s"] = timed(lambda: dimensionality(run, metrics=["stable_rank"]).compute())
    res["twonn_points"] = int(tw["twonn"].size)
    res["max_rel_diff"] = agreement(ref, dims["dimensionality"])

    from dimlapse import analyze

    analyze_run = getattr(analyze, "analyze_run", None)
    if end_to_end and analyze_run is not None:
        _, res["analyze_run_s"] = timed(
            lambda: analyze_run(str(store), out_dir / "results" / store.stem, progress=False)
        )
    return res


def format_report(res: dict[str, Any]) -> str:
    n = res["snapshots"]
    lines = [
        f"bench-analyze: {res['store']} ({n} snapshots; {os.cpu_count()} CPUs, "
        f"{res['workers']} workers)",
        "  matrices: " + ", ".join(f"{k} {v[0]}x{v[1]}" for k, v in res["shapes"].items()),
    ]
    if res["build_s"]:
        lines.append(f"  build store (train + capture)     {res['build_s']:8.1f} s")

    def row(label: str, seconds: float) -> str:
        return f"  {label:<34}{seconds:8.2f} s  {n / seconds:8.1f} snapshots/s"

    lines.append("  per matrix, ms      SVD BLAS free   SVD 1 thread   Gram+eigvalsh 1 thread")
    lines += [
        f"    {k:<16} {a:12.1f} {b:14.1f} {c:14.1f}" for k, (a, b, c) in res["kernels_ms"].items()
    ]
    if res["naive_measured"] < n:
        lines.append(f"  (naive timed on {res['naive_measured']} snapshots, scaled to {n})")
    lines += [
        row("naive: read + full SVD, 1 process", res["naive_s"]),
        f"    (read {res['naive_read_s']:.2f} s, SVD + metrics {res['naive_svd_s']:.2f} s)",
        row("spectra: dask, 1 worker", res["spectra_1_s"]),
        row(f"spectra: dask, {res['workers']} workers", res["spectra_n_s"]),
        row("dimensionality job (all metrics)", res["dimensionality_s"]),
        row(f"stable rank + TwoNN ({res['twonn_points']} pts)", res["twonn_s"]),
    ]
    if "analyze_run_s" in res:
        lines.append(row("analyze_run end to end", res["analyze_run_s"]))
    ok = res["speedup"] >= SPECTRA_TARGET
    lines += [
        f"  spectra speed-up over naive       {res['speedup']:8.2f}x (target >= "
        f"{SPECTRA_TARGET:.0f}x: {'met' if ok else 'NOT met'})",
        f"  parallel efficiency 1 -> {res['workers']} workers   {100 * res['efficiency']:7.1f} %",
        "  max relative difference naive vs dask: "
        + ", ".join(f"{k} {v:.1e}" for k, v in res["max_rel_diff"].items()),
    ]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--snapshots", type=int, default=1600, help="capture steps (default 1600)")
    p.add_argument("--every", type=int, default=5, help="optimizer steps per snapshot")
    p.add_argument("--out-dir", default=DEFAULT_DIR, help=f"cache directory ({DEFAULT_DIR})")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="dask threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-end-to-end", action="store_true", help="skip the end-to-end runs")
    p.add_argument(
        "--default-run",
        default="data/runs/mlp-mnist1d-s0.zarr",
        help="the default run (`dimlapse capture --model mlp`) timed end to end",
    )
    p.add_argument(
        "--base",
        help="PYTHONPATH holding a previous version's `dimlapse` package, timed beside this one "
        "(default: none, this version alone)",
    )
    p.add_argument(
        "--transformer-run",
        default="data/runs/transformer-modadd-s0.zarr",
        help="the default transformer run (`dimlapse capture --model transformer`), timed end "
        "to end when present",
    )
    p.add_argument(
        "--no-gap",
        action="store_true",
        help="skip the control arms that explain a missed end-to-end target",
    )
    p.add_argument("--reps", type=int, default=1, help="end-to-end repetitions per version")
    p.add_argument(
        "--only-end-to-end", action="store_true", help="skip the spectra stages (naive, dask)"
    )
    p.add_argument(
        "--naive-snapshots",
        type=int,
        help="time the naive loop on this many snapshots and scale up (default: all)",
    )


def main(args: argparse.Namespace) -> int:
    """Run the benchmark; exit status 1 when results disagree beyond 1e-6 relative."""
    for name in ("snapshots", "every", "workers", "naive_snapshots", "reps"):
        value = getattr(args, name)
        if value is None and name == "naive_snapshots":
            continue
        if not isinstance(value, int) or value < 1:
            flag = name.replace("_", "-")
            raise SystemExit(f"Expected `--{flag}` to be a positive int, got {value!r}")
    if not args.no_end_to_end:
        from ._analyze_e2e import compare, format_comparison, missed
        from ._analyze_gap import format_gap, gap

        # the default run's recipe (MNIST-1D), 100 steps: what a first `capture` gives
        small = Path(args.out_dir) / f"mlp-mnist1d-20x{args.every}-s{args.seed}.zarr"
        build_store(small, snapshots=20, every=args.every, seed=args.seed, data="mnist1d")
        stores = {"small": small}
        if Path(args.default_run).exists():
            stores = {"default": Path(args.default_run), **stores}
        else:
            print(f"(no default run at {args.default_run}: `dimlapse capture --model mlp`)")
        if Path(args.transformer_run).exists():
            stores = {**stores, "transformer": Path(args.transformer_run)}
        with tempfile.TemporaryDirectory(prefix="bench-analyze-") as work:
            results = compare(stores, base=args.base, reps=args.reps, work=Path(work))
            print(format_comparison(results, stores))
            if not args.no_gap:
                for label in missed(results):
                    print(f"  {label}: controls for the missed target (this version)")
                    g = gap(stores[label], results[label]["new"][0]["out"] / "analysis.zarr")
                    print("\n".join(format_gap(label, g)))
    if args.only_end_to_end:
        return 0
    res = run_benchmark(
        snapshots=args.snapshots,
        every=args.every,
        out_dir=Path(args.out_dir),
        workers=args.workers,
        seed=args.seed,
        end_to_end=False,
        naive_snapshots=args.naive_snapshots,
    )
    print(format_report(res))
    bad = {k: v for k, v in res["max_rel_diff"].items() if not v <= RTOL}
    if bad:
        print(f"FAILED: naive and dask results differ beyond {RTOL:g} relative: {bad}")
        return 1
    return 0
