"""End-to-end ``analyze`` timings, this version beside a previous one (``dimlapse bench analyze``).

Each store is analysed by ``python -m dimlapse.pipelines analyze`` in a fresh interpreter, as a
user runs it (imports, every job at its defaults, figures and report), once with this checkout
and once with a previous version's tree on ``PYTHONPATH`` (same store layout), alternating so
both meet the same load. Per-job seconds come from each result's ``job_seconds`` attr. On a
shared machine the wall clock stretches with the load; the load average is printed beside every
pair, and each version's own CPU time (``os.wait4``'s user + system, the transitions pool's
workers included) is the control: a gap that the CPU time shares is work, one it does not is
waiting.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import xarray as xr

#: Targets of ``dimlapse analyze`` wall time (seconds) by run: the default MLP run
#: (1,601 snapshots), the default transformer run (801 snapshots) and a run of about 20
#: snapshots, on a quiet 2-core machine.
TARGETS = {"default": 30.0, "transformer": 90.0, "small": 5.0}
#: Group the previous version timed apart and this one computes in one pass.
FIRST_PASS = ("dimensionality", "formation")


def _analyze(store: Path, out: Path, *, pythonpath: str | None) -> dict[str, Any]:
    """Run ``analyze`` on `store` in a child interpreter; wall, CPU and per-job seconds."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    else:
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[3])
    cmd = [sys.executable, "-m", "dimlapse.pipelines", "analyze", "--run", str(store)]
    cmd += ["--out-dir", str(out), "--no-progress"]
    load = os.getloadavg()[0]
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as sink:  # a file, not a pipe: a chatty child cannot block on it
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here, with its CPU time
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"analyze failed on {store} ({' '.join(cmd)}):\n{tail}")
    attrs = xr.open_datatree(out / "analysis.zarr", engine="zarr").attrs
    jobs, cpu = (attrs.get(k, {}) for k in ("job_seconds", "job_cpu_seconds"))
    jobs, cpu = (json.loads(v) if isinstance(v, str) else v for v in (jobs, cpu))
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "load": load,
        "jobs": {k: float(v) for k, v in jobs.items()},
        "jobs_cpu": {k: float(v) for k, v in cpu.items()},  # absent before this version
    }


def _grouped(jobs: dict[str, float]) -> dict[str, float]:
    """Per-job seconds with the first pass's jobs summed into one row (comparable rows)."""
    key = "+".join(FIRST_PASS)
    out = {key: sum(jobs.get(j, 0.0) for j in FIRST_PASS) + jobs.get(key, 0.0)}
    out.update({k: v for k, v in jobs.items() if k not in (*FIRST_PASS, key)})
    return out


def compare(
    stores: dict[str, Path], *, base: str | None, reps: int = 1, work: Path | None = None
) -> dict[str, dict[str, list]]:
    """``{label: {"new": [...], "base": [...]}}``, one entry per rep, versions alternating.

    Results go under ``work`` (default: a temporary folder removed on return); each entry's
    ``"out"`` is its results folder."""
    out: dict[str, dict[str, list]] = {}
    with contextlib.ExitStack() as stack:
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-analyze-")))
        root = Path(work)
        for label, store in stores.items():
            out[label] = {"new": [], "base": []}
            for rep in range(reps):
                arms = [("base", base), ("new", None)] if base else [("new", None)]
                for arm, path in arms if rep % 2 == 0 else arms[::-1]:
                    dest = root / f"{label}-{arm}-{rep}"
                    try:
                        res = _analyze(store, dest, pythonpath=path)
                    except RuntimeError as exc:  # say it, time the other arm
                        print(f"  {label} {arm}: {str(exc).splitlines()[-1]}")
                        continue
                    out[label][arm].append({**res, "out": dest})
    return out


def missed(results: dict[str, dict[str, list]]) -> list[str]:
    """Labels whose median wall time (this version) misses its target."""
    return [
        label
        for label, arms in results.items()
        if arms["new"]
        and label in TARGETS
        and _median([r["wall"] for r in arms["new"]]) > TARGETS[label]
    ]


def _median(values: list[float]) -> float:
    s = sorted(values)
    return s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run at the median wall time (the lower middle one of an even count)."""
    return sorted(runs, key=lambda r: r["wall"])[(len(runs) - 1) // 2]


def format_comparison(results: dict[str, dict[str, list]], stores: dict[str, Path]) -> str:
    """The side-by-side table and each target as met or the gap with its largest causes."""
    lines = ["bench-analyze end to end (`dimlapse analyze`, every job at its defaults, figures)"]
    for label, arms in results.items():
        new, base = arms["new"], arms["base"]
        if not new:
            lines.append(f"  {label}: this version failed (printed above)")
            continue
        lines.append(f"  {label}: {stores[label]} (load average {new[0]['load']:.1f} at start)")
        lines.append(f"    {'':<28}{'previous':>10}{'this':>10}{'ratio':>8}")

        def row(name: str, b: float | None, n: float) -> str:
            prev = f"{b:10.2f}" if b is not None else f"{'-':>10}"
            ratio = f"{b / n:7.2f}x" if b is not None and n > 0 else f"{'-':>8}"
            return f"    {name:<28}{prev}{n:10.2f}{ratio}"

        nw = _median([r["wall"] for r in new])
        bw = _median([r["wall"] for r in base]) if base else None
        lines.append(row("wall, s", bw, nw))
        nc = _median([r["cpu"] for r in new])
        bc = _median([r["cpu"] for r in base]) if base else None
        lines.append(row("CPU (user+sys), s", bc, nc))
        # per job: the run at the median wall time, its rest from its own wall (one run's
        # jobs against another run's wall gave a negative rest)
        mn = _median_run(new)
        mb = _median_run(base) if base else None
        nj = _grouped(mn["jobs"])
        bj = _grouped(mb["jobs"]) if mb else {}
        for job, n in nj.items():
            lines.append(row(f"  {job}", bj.get(job), n))
        if mn.get("jobs_cpu"):  # the control per job: CPU seconds of this process
            cpu = ", ".join(f"{k} {v:.1f}" for k, v in mn["jobs_cpu"].items())
            lines.append(f"    this version's CPU s per job (transitions pool included): {cpu}")
        rest_n = mn["wall"] - sum(nj.values())
        rest_b = (mb["wall"] - sum(bj.values())) if mb else None
        lines.append(row("  imports, save, figures", rest_b, rest_n))
        target = TARGETS.get(label)
        if target is None:
            continue
        if nw <= target:
            lines.append(f"    target <= {target:g} s: met ({nw:.1f} s)")
            continue
        parts = sorted({**nj, "imports, save, figures": rest_n}.items(), key=lambda kv: -kv[1])
        cause = ", ".join(f"{k} {v:.1f} s" for k, v in parts[:3])
        quiet = nc / (os.cpu_count() or 1)
        lines.append(
            f"    target <= {target:g} s: NOT met, gap {nw - target:.1f} s; largest: {cause}; "
            f"control: CPU time / {os.cpu_count()} cores = {quiet:.1f} s "
            f"({'the gap is work' if quiet > target else 'the gap is load or waiting'})"
        )
    return "\n".join(lines)
