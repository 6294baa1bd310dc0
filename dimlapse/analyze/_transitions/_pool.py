"""Per-series calibration on a process pool.

Most of the time goes into ruptures' C PELT (``KernelCPD``, about 5 ms per 1,600-sample
surrogate), which holds the GIL, so threads (dask's threaded scheduler included) do not run it
in parallel; processes do. Each series is calibrated independently with its own generator
``default_rng([seed, i])``, so results do not depend on the number of workers or the order in
which they finish.

The pool is kept for the life of the interpreter and its workers are forked where the
platform can (Linux): ``spawn`` and ``forkserver`` re-run the caller's ``__main__`` script in
every worker, which breaks any script without an ``if __name__ == "__main__":`` guard, and pay
about 2 s of imports. A forked worker only runs the pickled calibration task (numpy, scipy,
ruptures; no Python threads, locks or I/O), so the idle dask or BLAS threads the caller may
hold are harmless; Python >= 3.12 warns about forking a threaded process, and that warning is
silenced here, where it arises. Elsewhere (macOS, Windows) the platform's default start method
is used. Workers run BLAS single threaded, so ``workers`` processes use ``workers`` cores.
Inside a daemonic process (e.g. a dask worker), which may not start children, calibration runs
serially.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ._calibrate import SeriesResult, calibrate_series, n_surrogates
from ._spec import Calibration

_POOL: dict[int, ProcessPoolExecutor] = {}
MIN_PARALLEL_WORK = 200_000  # samples x surrogates below which a pool does not pay off


def default_workers() -> int:
    """Usable CPU cores (the process's affinity where the platform reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _init_worker() -> None:
    threadpool_limits(1)  # one core per worker: no BLAS oversubscription


def _pool(workers: int) -> ProcessPoolExecutor:
    if workers not in _POOL:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
        _POOL[workers] = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker)
    return _POOL[workers]


def worker_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by the live workers of every pool, or 0.

    The pool's workers outlive each call, so their CPU never reaches the parent's
    ``RUSAGE_CHILDREN``; a job's clock reads this before and after instead. Linux only
    (``/proc``); elsewhere 0.
    """
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0.0
    for pool in _POOL.values():
        for pid in list(getattr(pool, "_processes", None) or {}):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # not Linux, or the worker has gone
                continue
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _one(task: tuple) -> dict[str, SeriesResult]:
    x, options, cal, i, alpha, floor = task
    return calibrate_series(x, options, cal, (cal.seed, i), alpha, noise_floor=floor)


def calibrate_all(
    rows: list[np.ndarray],
    options: dict[str, Any],
    cal: Calibration,
    alpha: float,
    *,
    ids: np.ndarray,
    workers: int | None,
    floors: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, SeriesResult]]:
    """``calibrate_series`` of every row, row ``j`` seeded ``[cal.seed, ids[j]]``.

    ``rows`` holds the finite samples of each series (non-empty); ``workers`` None picks the
    usable cores, 1 runs serially in this process. ``floors[j]``: row ``j``'s estimator noise
    floor (``_resolution``). ``progress(k)`` is called with the number of rows finished, in
    row order, as they finish.
    """
    fl = np.zeros(len(rows)) if floors is None else np.asarray(floors, dtype=np.float64)
    tasks = [
        (x, options, cal, int(i), alpha, float(f)) for i, x, f in zip(ids, rows, fl, strict=True)
    ]
    done: list[dict[str, SeriesResult]] = []

    def collect(results) -> list[dict[str, SeriesResult]]:
        for r in results:
            done.append(r)
            if progress is not None:
                progress(len(done))
        return done

    w = default_workers() if workers is None else workers
    work = sum(x.size for x in rows) * max((n_surrogates(d, cal) for d in options), default=0)
    if w <= 1 or len(rows) < 2 or work < MIN_PARALLEL_WORK or mp.current_process().daemon:
        # single-threaded BLAS here too: multithreaded matmul rounds differently, and results
        # must not depend on `workers`
        with threadpool_limits(1):
            return collect(_one(t) for t in tasks)
    w = min(w, len(rows))
    with warnings.catch_warnings():  # see the module docstring
        warnings.filterwarnings("ignore", r".*multi-threaded.*fork", DeprecationWarning)
        return collect(_pool(w).map(_one, tasks))
