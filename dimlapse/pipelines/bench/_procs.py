"""Helper processes and subprocess runs of ``make bench-capture``.

- :class:`Floor`: a separate process that does nothing but the probe forward (and, with
  ``eigen=True``, the spectra's Gram + eigvalsh of every weight and activation matrix) once
  per capture step, when the training loop pokes it. It is what any off-thread probe
  forward must cost this machine: its cores, not the training process's GIL.
- :class:`BusyProcess`: a separate process multiplying matrices with one BLAS thread while
  switched on: the machine's own contention, apart from the GIL.
- :func:`large_model_run`: one capture mode on a ~30M-parameter MLP in a fresh subprocess, for
  its peak RSS (trainer and writer) and bytes per snapshot.

Each helper process is forked, niced like the writer and pinned to one torch thread.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn


def _quiet_child() -> None:
    torch.set_num_threads(1)
    try:
        os.nice(10)
    except OSError:
        pass


def _gram_eigvalsh(x: torch.Tensor, *, center: bool) -> torch.Tensor:
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    if center:
        x = x - x.mean(0, keepdim=True)
    g = x @ x.T if x.shape[0] <= x.shape[1] else x.T @ x
    return torch.linalg.eigvalsh(g)


def _floor_main(model: nn.Module, probe: torch.Tensor, conn: Any, eigen: bool) -> None:
    _quiet_child()
    model = model.eval().requires_grad_(False)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    acts: list[torch.Tensor] = []
    for m in linears:
        m.register_forward_hook(lambda mod, i, o: acts.append(o))
    while True:
        if conn.recv() is None:
            return
        acts.clear()
        with torch.no_grad():
            model(probe)
            if eigen:
                for m in linears:
                    _gram_eigvalsh(m.weight, center=False)
                for a in acts:
                    _gram_eigvalsh(a, center=True)


class Floor:
    """A forked process doing one probe forward (and optionally the spectra) per poke."""

    def __init__(self, model: nn.Module, probe: torch.Tensor, *, eigen: bool) -> None:
        ctx = mp.get_context("fork")
        self.recv, self.send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(
            target=_floor_main, args=(model, probe, self.recv, eigen), daemon=True
        )
        self.proc.start()

    def poke(self) -> None:
        self.send.send(1)

    def close(self) -> None:
        self.send.send(None)
        self.proc.join(10)


def _busy_main(on: Any, stop: Any) -> None:
    _quiet_child()
    a = torch.rand(384, 384)
    while not stop.is_set():
        if on.wait(timeout=0.05):
            a @ a


class BusyProcess:
    """A forked process multiplying matrices (one BLAS thread) while ``on`` is set."""

    def __init__(self) -> None:
        ctx = mp.get_context("fork")
        self.on, self.stop = ctx.Event(), ctx.Event()
        self.proc = ctx.Process(target=_busy_main, args=(self.on, self.stop), daemon=True)
        self.proc.start()

    def close(self) -> None:
        self.stop.set()
        self.proc.join(10)


LARGE = """
import json, resource, sys, time, torch
from torch import nn
torch.set_num_threads(1)
mode, root = sys.argv[1], sys.argv[2]
steps, every, widths = int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
torch.manual_seed(0)
layers = []
for a, b in zip(widths[:-1], widths[1:]):
    layers += [nn.Linear(a, b), nn.ReLU()]
model = nn.Sequential(*layers[:-1])
opt = torch.optim.SGD(model.parameters(), lr=1e-3)
x, probe = torch.randn(8, widths[0]), torch.randn(64, widths[0])
rec = None
if mode != "plain":
    from dimlapse.capture import CaptureOptions, Recorder
    options = CaptureOptions(mode=mode, full_every=10**9, total_steps=steps)
    rec = Recorder(model, root + "/large-" + mode + ".zarr", every=every, probe=probe,
                   options=options)
t0 = time.perf_counter()
for _ in range(steps):
    loss = model(x).pow(2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if rec is not None:
        rec.step(loss)
train_s = time.perf_counter() - t0
stats, groups = {}, {}
if rec is not None:
    rec.close()
    stats = rec.stats
    import os
    base = root + "/large-" + mode + ".zarr"
    for group in ("weights", "state", "activations", "spectra"):
        total = 0
        for d, _, files in os.walk(os.path.join(base, group)):
            total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
        groups[group] = total
n = sum(p.numel() for p in model.parameters())
print(json.dumps({"mode": mode, "train_s": train_s, "params": n, "stats": stats, "groups": groups,
    "rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "rss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def large_model_run(
    mode: str, *, steps: int, every: int, widths: list[int], root: Path
) -> dict[str, Any]:
    """One mode on the large MLP in a fresh interpreter; peak RSS from ``getrusage``."""
    out = subprocess.run(
        [sys.executable, "-c", LARGE, mode, str(root), str(steps), str(every), json.dumps(widths)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"large-model arm {mode!r} failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def large_model(
    *, steps: int = 20, every: int = 10, widths: list[int] | None = None
) -> dict[str, Any]:
    """Peak RSS and bytes per snapshot per mode on a ~30M-parameter MLP (SGD, batch 8)."""
    widths = widths or [2048, 4096, 4096, 2048, 10]
    out: dict[str, Any] = {"widths": widths, "steps": steps, "every": every, "modes": {}}
    with tempfile.TemporaryDirectory(prefix="dimlapse-large-") as tmp:
        for mode in ("plain", "full", "weights", "spectra"):
            t0 = time.perf_counter()
            out["modes"][mode] = large_model_run(
                mode, steps=steps, every=every, widths=widths, root=Path(tmp)
            )
            out["modes"][mode]["wall_s"] = time.perf_counter() - t0
    out["model_mb"] = 4 * out["modes"]["plain"]["params"] / 2**20
    return out


def children_cpu_seconds() -> float:
    """CPU seconds of this process's reaped children (writer processes once closed)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
