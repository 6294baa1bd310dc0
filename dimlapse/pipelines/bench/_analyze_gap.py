"""Where ``analyze``'s time goes when a target is missed: one control arm per cause.

For a run whose end-to-end wall time misses its target (``_analyze_e2e``), each large part is
timed again alone, in this process or a fresh interpreter, with its CPU time:

- first pass: the spectra and their metrics (``dimensionality`` without TwoNN), TwoNN alone and
  formation alone, each computed by the threaded scheduler as ``analyze`` does;
- transitions: the same call serially (one process, so every C call is seen), with the CPU
  inside ruptures' C PELT (``KernelCPD.predict``) summed apart, against the control arm: one
  fit in ``KEEP`` replayed on bare ``KernelCPD`` with the same inputs. When the per-fit costs
  agree, the C fits are the job's floor at its surrogate count, and the rest is Python;
- imports: a fresh interpreter importing what ``dimlapse analyze`` imports;
- figures and report: rendered again from the saved ``analysis.zarr``.

The lines say how much of the wall time each part can explain on this machine's cores (CPU
seconds / cores), so a gap reads as work (and which work) or as waiting.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr


def _cpu() -> float:
    """CPU seconds of this process and of its children reaped so far (forked figure workers)."""
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall seconds and its CPU seconds (this process and reaped children)."""
    t, c = time.perf_counter(), _cpu()
    out = fn()
    return out, time.perf_counter() - t, _cpu() - c


def _cores() -> int:
    from dimlapse.analyze import default_workers

    return default_workers()


def first_pass(store: Path) -> dict[str, tuple[float, float]]:
    """``{part: (wall, cpu)}`` of the first pass's parts, each computed alone."""
    import dask

    from dimlapse.analyze import dimensionality, formation, open_run

    run = open_run(str(store))
    parts: dict[str, Callable[[], Any]] = {
        "spectra + metrics": lambda: dimensionality(run, twonn_stride=0).compute(),
        "TwoNN + stable rank": lambda: dimensionality(run, metrics=["stable_rank"]).compute(),
    }
    if "targets" in run.probe:
        parts["formation"] = lambda: formation(run).compute()
    out = {}
    with dask.config.set(scheduler="threads", num_workers=_cores()):
        for name, fn in parts.items():
            _, wall, cpu = _timed(fn)
            out[name] = (wall, cpu)
    return out


KEEP = 10  # every this-many-th PELT fit is replayed in the control arm


def transitions_floor(analysis: Path) -> dict[str, float]:
    """Serial transitions of a saved analysis' dimensionality, ruptures' C PELT timed apart,
    and the bare-ruptures control arm with the same number of fits."""
    import ruptures as rpt

    from dimlapse.analyze import transitions

    tree = xr.open_datatree(analysis, engine="zarr")
    dim = tree["dimensionality"].to_dataset()["dimensionality"].load()
    series = dim.stack(series=[d for d in dim.dims if d != "step"]).transpose("series", "step")
    n = int(series.sizes["step"])
    dets = tuple(tree["transitions"].to_dataset()["detector"].values.tolist())
    acc = {"fits": 0, "cpu": 0.0}
    kept: list[tuple[np.ndarray, str, int, float]] = []  # every KEEP-th fit's inputs
    predict = rpt.KernelCPD.predict

    def timed_predict(self, pen):  # thread CPU: this call only
        if acc["fits"] % KEEP == 0:
            kept.append((np.array(self.cost.signal), self.kernel_name, self.min_size, pen))
        t = time.thread_time()
        try:
            return predict(self, pen=pen)
        finally:
            acc["cpu"] += time.thread_time() - t
            acc["fits"] += 1

    rpt.KernelCPD.predict = timed_predict
    try:
        _, wall, cpu = _timed(lambda: transitions(series, detectors=dets, workers=1))
    finally:
        rpt.KernelCPD.predict = predict
    # control arm: the kept fits replayed on bare KernelCPD, nothing else running in this
    # process: the C cost per fit of the same inputs
    bare = 0.0
    for signal, kernel, min_size, pen in kept:
        params = {"gamma": 0.5} if kernel == "rbf" else None
        algo = rpt.KernelCPD(kernel=kernel, min_size=min_size, params=params).fit(signal)
        t = time.thread_time()
        algo.predict(pen=pen)
        bare += time.thread_time() - t
    k = len(kept)
    return {
        "wall": wall,
        "cpu": cpu,
        "fits": float(acc["fits"]),
        "ruptures_cpu": acc["cpu"],
        "bare_ms_per_fit": 1e3 * bare / max(k, 1),
        "n": float(n),
        "series": float(series.sizes["series"]),
    }


def import_seconds() -> tuple[float, float]:
    """Wall and CPU seconds of a fresh interpreter importing what ``dimlapse analyze`` uses."""
    code = (
        "import dimlapse.pipelines.cli, dimlapse.analyze, dimlapse.analyze.jobs, "
        "dimlapse.analyze.report, dimlapse.analyze._transitions"
    )
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code])
    _, status, usage = os.wait4(proc.pid, 0)  # reaped here, with its CPU time
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"importing dimlapse failed: {sys.executable} -c {code!r}")
    return time.perf_counter() - t, usage.ru_utime + usage.ru_stime


def figures_seconds(analysis: Path) -> tuple[float, float]:
    """Wall and CPU seconds (this process and its forked figure workers) of the figures and the
    report from a saved result."""
    from dimlapse.analyze import render_figures, write_report

    tree = xr.open_datatree(analysis, engine="zarr").load()
    with tempfile.TemporaryDirectory(prefix="bench-figures-") as tmp:
        _, wall, cpu = _timed(
            lambda: (
                render_figures(tree, Path(tmp) / "figures"),  # type: ignore[operator]
                write_report(tree, Path(tmp) / "r.md"),  # type: ignore[operator]
            )
        )
    return wall, cpu


def gap(store: Path, analysis: Path) -> dict[str, Any]:
    """Every control arm of this module for one run."""
    return {
        "cores": _cores(),
        "first_pass": first_pass(store),
        "transitions": transitions_floor(analysis),
        "imports": import_seconds(),
        "figures": figures_seconds(analysis),
    }


def format_gap(label: str, g: dict[str, Any]) -> list[str]:
    """Lines for the end-to-end table: each cause, its CPU, and what it explains."""
    c = g["cores"]
    lines = [f"    where the time goes ({label}; each part alone, CPU / {c} cores = its floor):"]
    for name, (wall, cpu) in g["first_pass"].items():
        lines.append(f"      first pass, {name:<19} wall {wall:6.1f} s  CPU {cpu:6.1f} s")
    t = g["transitions"]
    share = t["ruptures_cpu"] / t["cpu"] if t["cpu"] > 0 else float("nan")
    per_fit = 1e3 * t["ruptures_cpu"] / max(t["fits"], 1)
    lines += [
        f"      transitions, serial         wall {t['wall']:6.1f} s  CPU {t['cpu']:6.1f} s "
        f"(floor on {c} cores {t['cpu'] / c:.1f} s)",
        f"        ruptures' C PELT: {t['fits']:.0f} fits of {t['n']:.0f} samples over "
        f"{t['series']:.0f} series, {t['ruptures_cpu']:.1f} s CPU ({100 * share:.0f} %), "
        f"{per_fit:.2f} ms per fit; control arm, every {KEEP}th fit replayed on bare "
        f"KernelCPD: {t['bare_ms_per_fit']:.2f} ms per fit",
    ]
    wall, cpu = g["imports"]
    lines.append(f"      imports (fresh interpreter) wall {wall:6.1f} s  CPU {cpu:6.1f} s")
    wall, cpu = g["figures"]
    lines.append(f"      figures + report            wall {wall:6.1f} s  CPU {cpu:6.1f} s")
    return lines
