"""Capture CPU per MB of weights-only snapshot, beside the controls that explain it.

For ``dimlapse bench capture``: the study's MLP (784-256-128-10, 0.94 MB of float32 per
snapshot, weights and state) recorded weights-only at every call of ``rec.step()`` with no
training. CPU is counted in every process (the training thread's ``rec.step()`` calls plus the
writer process's CPU, start-up excluded) and taken *marginal over snapshots*: the difference
between a long and a short run over the difference in snapshots, so start-up, close and
consolidation cancel. Arms:

- one per codec (the default first), chunks written straight to the store
  (``capture/writer/_encode.py``);
- ``<codec> via zarr``: the same with every chunk through zarr's own write pipeline (the
  control for zarr's per-chunk overhead);
- ``floor``: in this process, what a chunk needs at least: each snapshot copied into a chunk
  buffer, and per chunk a CRC-32C and a write-then-rename of a new file (the same bytes).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import torch

from dimlapse.capture.writer import DEFAULT_CODEC

from ..zoo import MLP

PER_MB_CODECS = tuple(dict.fromkeys((DEFAULT_CODEC, "none", "lz4")))  # the default first


def _recorded_cpu(x: torch.Tensor, store: str, *, calls: int, codec: str, zarr: bool) -> tuple:
    """(snapshots, CPU seconds in all processes, stats, kernel CPU seconds in all processes) of
    ``calls`` weights-only captures."""
    from dimlapse.capture import CaptureOptions, Recorder
    from dimlapse.capture.writer import zarr_writes

    torch.manual_seed(0)
    model = MLP(x[0].numel(), 10)
    options = CaptureOptions(mode="weights", codec=codec)
    ctx = zarr_writes() if zarr else _nothing()
    before = os.times()
    with ctx:  # the writer process is forked inside: it inherits the setting
        rec = Recorder(model, store, every=1, probe=None, options=options)
        t0 = time.thread_time()
        for _ in range(calls):
            rec.step(0.5)
        train = time.thread_time() - t0
        rec.close()
    after = os.times()  # the writer process, a child, is reaped by close()
    s = rec.stats
    kernel = after.system + after.children_system - before.system - before.children_system
    return s["snapshots"], train + float(s["writer_cpu_seconds"] or 0.0), s, kernel


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _floor_cpu(
    shapes: list[tuple[int, ...]], *, snaps: int, chunk: int, root: Path
) -> tuple[float, float]:
    """(CPU, kernel CPU) seconds of the floor for ``snaps`` snapshots (module docstring)."""
    rng = np.random.default_rng(0)
    src = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    bufs = [np.empty((chunk, *s), np.float32) for s in shapes]
    for b in bufs:
        b.fill(0.0)  # fault the pages in now, as a writer's long-lived buffers are
    k0 = os.times().system
    t0 = time.process_time()
    for i in range(snaps):
        row = i % chunk
        for b, v in zip(bufs, src, strict=True):
            b[row] = v
        if row == chunk - 1 or i == snaps - 1:
            for j, b in enumerate(bufs):
                crc = np.array([google_crc32c.value(b.view(np.uint8).reshape(-1))], "<u4")
                path = root / f"floor-{j}-{i}"
                fd = os.open(f"{path}.partial", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.writev(fd, [b.data, crc.data])
                os.close(fd)
                os.replace(f"{path}.partial", path)
    return time.process_time() - t0, os.times().system - k0


def per_mb_table(
    x: torch.Tensor,
    *,
    codecs: tuple[str, ...],
    short: int = 64,
    long: int = 320,
    root: Path | None = None,
) -> dict[str, dict[str, float]]:
    """CPU ms per MB of weights-only snapshot, marginal over snapshots, per arm."""
    model = MLP(x[0].numel(), 10)
    shapes = [tuple(p.shape) for p in model.parameters()]
    mb = sum(p.numel() * 4 for p in model.parameters()) / 1e6
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="dimlapse-mb-", dir=root) as tmp:
        base = Path(tmp)
        arms = [(c, c, False) for c in codecs] + [(f"{codecs[0]} via zarr", codecs[0], True)]
        for label, codec, via_zarr in arms:
            runs = []
            for calls in (short, long):
                store = str(base / f"{label.replace(' ', '-')}-{calls}.zarr")
                runs.append(_recorded_cpu(x, store, calls=calls, codec=codec, zarr=via_zarr))
            (n0, c0, _, k0), (n1, c1, stats, k1) = runs
            out[label] = {
                "ms_per_mb": 1e3 * (c1 - c0) / (n1 - n0) / mb,
                "kernel_ms_per_mb": 1e3 * (k1 - k0) / (n1 - n0) / mb,
                "ms_per_snapshot": 1e3 * (c1 - c0) / (n1 - n0),
                "compression_ratio": float(stats.get("compression_ratio") or 0.0),
            }
        chunk = 64  # the Recorder's flush_every for this model (128 MiB / 0.94 MB, at most 64)
        f0, fk0 = _floor_cpu(shapes, snaps=short, chunk=chunk, root=base)
        f1, fk1 = _floor_cpu(shapes, snaps=long, chunk=chunk, root=base)
        out["floor"] = {
            "ms_per_mb": 1e3 * (f1 - f0) / (long - short) / mb,
            "kernel_ms_per_mb": 1e3 * (fk1 - fk0) / (long - short) / mb,
            "ms_per_snapshot": 1e3 * (f1 - f0) / (long - short),
            "compression_ratio": 1.0,
        }
    floor = out["floor"]["ms_per_mb"]
    for row in out.values():
        row["x_floor"] = row["ms_per_mb"] / floor if floor > 0 else float("nan")
        row["mb_per_snapshot"] = mb
    return out


def format_per_mb(table: dict[str, dict[str, float]]) -> list[str]:
    """The printed per-MB table."""
    mb = next(iter(table.values()))["mb_per_snapshot"]
    lines = [
        f"capture CPU per MB of weights-only snapshot ({mb:.2f} MB, every step, no training; "
        "all processes, marginal over snapshots):",
        f"{'arm':<18} {'ms/MB':>7} {'of it kernel':>13} {'ms/snapshot':>12} {'x floor':>8} "
        f"{'compression':>12}",
    ]
    for name, r in table.items():
        lines.append(
            f"{name:<18} {r['ms_per_mb']:>7.3f} {r['kernel_ms_per_mb']:>13.3f} "
            f"{r['ms_per_snapshot']:>12.3f} {r['x_floor']:>7.2f}x {r['compression_ratio']:>11.2f}x"
        )
    lines.append(
        "floor = copy into a chunk buffer + CRC-32C + write-then-rename of the same bytes, in "
        "one process; 'via zarr' = the same chunks through zarr's write pipeline; kernel = "
        "system CPU (page-cache writes, page faults)"
    )
    return lines
