"""Bytes before writing: what one snapshot and the whole run will take, per capture mode.

The Recorder logs the projection for the chosen mode, and refuses (``StoreTooSmallError``,
naming the modes that would fit) when the run would not fit the free space of the store's
filesystem. Lossless codecs barely compress float weights (README "Codecs"), so the
projection counts raw bytes for them; float16 and bitround count half.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("dimlapse.capture")


class StoreTooSmallError(ValueError):
    """The projected run does not fit the free space of the store's filesystem."""


@dataclass(frozen=True)
class Sizes:
    """Raw bytes of one snapshot's parts (float32 as stored) and of its spectra."""

    weights: int
    state: int
    activations: int
    weight_spectra: int
    activation_spectra: int

    def per_snapshot(self, mode: str, *, every: int, full_every: int) -> float:
        """Average stored bytes per capture step in ``mode``."""
        full = self.weights + self.state + self.activations
        if mode == "weights":
            return float(self.weights + self.state)
        if mode == "spectra":
            sparse = every / full_every if full_every else 0.0
            return self.weight_spectra + self.activation_spectra + full * min(1.0, sparse)
        return float(full)


def spectrum_bytes(shapes: Sequence[tuple[int, ...]]) -> int:
    """float64 singular values of each matrix (leading singleton dims squeezed)."""
    total = 0
    for shape in shapes:
        dims = list(shape)
        while len(dims) > 2 and dims[0] == 1:
            dims.pop(0)
        rows, cols = (dims[0], math.prod(dims[1:])) if len(dims) >= 2 else (1, math.prod(dims))
        total += 8 * min(rows, cols)
    return total


def codec_factor(codec: str) -> float:
    return 0.5 if codec == "float16" or codec.startswith("bitround-") else 1.0


def free_bytes(store: object) -> int | None:
    """Free space of a local store's filesystem (None for remote stores)."""
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if not isinstance(store, str) or ("://" in store and not store.startswith("file://")):
        return None
    path = os.path.abspath(store.removeprefix("file://"))
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return shutil.disk_usage(path).free


def captures(schedule: Callable[[int], bool], total_steps: int) -> int:
    """Capture steps among 0..total_steps (step 0 is always captured)."""
    return 1 + sum(1 for s in range(1, total_steps + 1) if schedule(s))


def project(
    sizes: Sizes,
    *,
    mode: str,
    codec: str,
    every: int,
    full_every: int,
    n_captures: int | None,
    store: object,
) -> dict[str, float | int | None]:
    """Projected bytes per snapshot and per run; raise when the run cannot fit."""
    factor = codec_factor(codec)
    per = {
        m: sizes.per_snapshot(m, every=every, full_every=full_every) * factor
        for m in ("full", "weights", "spectra")
    }
    run: dict[str, float] = (
        {m: v * n_captures for m, v in per.items()} if n_captures is not None else {}
    )
    free = free_bytes(store)
    out: dict[str, float | int | None] = {
        "per_snapshot": int(per[mode]),
        "per_run": int(run[mode]) if run else None,
        "captures": n_captures,
        "free": free,
    }
    log.debug(  # the Recorder's start line says it (_logs.start_line)
        "dimlapse: projected %s per snapshot%s (mode %r, codec %r)",
        _human(per[mode]),
        f", {_human(run[mode])} for {n_captures} snapshots" if run else "",
        mode,
        codec,
    )
    if free is not None and run and run[mode] > free:
        fits = [m for m in ("full", "weights", "spectra") if run[m] <= free]
        advice = (
            f"modes that fit: {', '.join(repr(m) for m in fits)} (pass mode=...)"
            if fits
            else "no mode fits: capture less often (every=...), fewer parameters (params=...)"
        )
        raise StoreTooSmallError(
            f"Expected the run to fit the store's filesystem ({_human(free)} free at "
            f"{store!r}), but mode {mode!r} projects {_human(run[mode])} for {n_captures} "
            f"snapshots ({_human(per[mode])} each); {advice}, a lossy codec "
            "(codec='bitround-10' halves it), or another disk"
        )
    return out


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"
