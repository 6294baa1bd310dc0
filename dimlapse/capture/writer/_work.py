"""What the writer does with one ring slot: probe forward, spectra, rows into the chunk buffers.

Runs in the writer (a separate process by default, see ``_handle.py``). The shadow model's
parameters and buffers are pointed at the slot's tensors (no copy), the probe goes through it
in eval mode under ``no_grad``, and the weights, state, activations (and in spectra mode the
singular values) are appended to the chunk buffers, which is the only copy of the snapshot the
writer makes. Zarr writes happen when a chunk is full.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._ring import Ring
from ._sink import SnapshotSink, Tap

# (shadow model, probe, taps) -> {module name: (rows, feature)}: ``capture._taps.probe_forward``
ProbeForward = Callable[[torch.nn.Module, Any, Any], dict[str, torch.Tensor]]


@dataclass
class WorkSpec:
    """Everything the writer needs besides the store (fork: inherited; spawn: pickled)."""

    stored: list[str]  # parameters written to weights/
    state: list[str]  # other parameters and buffers, written to state/
    mode: str  # "full" | "weights" | "spectra"
    full_every: int  # spectra mode: steps between full snapshots (0: never after step 0)
    shadow: torch.nn.Module | None = None
    taps: Mapping[str, Tap] = field(default_factory=dict)
    probe: Any = None  # the probe batch on the writer's device (tensor, dict or tuple)
    device: str = "cpu"
    forward: ProbeForward | None = None  # runs the probe through the shadow with the taps
    # a sharded run: the trainer ran the probe (every rank in lockstep) and put each tap's
    # (rows, feature) output in the slot as ``activations/<module>``; no shadow, no forward
    slot_activations: list[str] = field(default_factory=list)


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The matrix a weight's spectrum is taken of: leading singleton dims squeezed, then
    ``out x (in * k...)`` (conv kernels), as the analysis reshapes stored weights."""
    dims = list(shape)
    while len(dims) > 2 and dims[0] == 1:
        dims.pop(0)
    if len(dims) < 2:
        return (1, math.prod(dims))
    return (dims[0], math.prod(dims[1:]))


def singular_values(x: torch.Tensor, *, center: bool) -> np.ndarray:
    """Descending singular values of a matrix, float64: sqrt of the eigenvalues of the Gram
    matrix on the smaller side (the analysis's ``singular_values``; NaN when not finite)."""
    x = x.to(torch.float64)
    n, d = x.shape
    if n == 0 or d == 0:
        return np.zeros(0)
    if not bool(torch.isfinite(x).all()):
        return np.full(min(n, d), np.nan)
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    gram = x @ x.T if n <= d else x.T @ x  # (r, r), float64 accumulation
    lam = torch.linalg.eigvalsh(gram).flip(0)
    return lam.clamp_min(0.0).sqrt().numpy()


def host(t: torch.Tensor) -> np.ndarray:
    """Tensor -> NumPy on the host; floating types other than float32/64 as float32."""
    t = t.detach()
    if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    return t.cpu().numpy()


class Worker:
    """Turns ring slots into store rows; one per writer."""

    def __init__(self, spec: WorkSpec, ring: Ring, sink: SnapshotSink) -> None:
        self.spec, self.ring, self.sink = spec, ring, sink
        self.names = list(ring.layout.names)
        self._targets: list[torch.Tensor] = []
        if spec.shadow is not None and not spec.slot_activations:
            shadow = {**dict(spec.shadow.named_parameters()), **dict(spec.shadow.named_buffers())}
            self._targets = [shadow[n] for n in self.names]
        self._on_device = spec.device != "cpu"

    def rows(self, slot: int, rows: list[tuple[int, dict[str, Any]]]) -> None:
        """Scalar rows; values given as ``SlotValue`` are read from the slot's scalar area."""
        if not rows:
            return
        area = self.ring.scalars[slot]
        resolved = [
            (step, {k: float(area[v.i]) if isinstance(v, SlotValue) else v for k, v in r.items()})
            for step, r in rows
        ]
        self.sink.scalars(resolved)

    def snapshot(self, slot: int, step: int) -> None:
        """One capture step from slot ``slot``."""
        spec = self.spec
        snap = dict(zip(self.names, self.ring.views[slot], strict=True))
        acts: dict[str, torch.Tensor] | None
        if spec.slot_activations:
            acts = {n: snap[f"activations/{n}"] for n in spec.slot_activations}
        else:
            acts = self._forward(snap) if spec.taps else None
        full = spec.mode != "spectra" or (
            step == 0 or (spec.full_every and step % spec.full_every == 0)
        )
        weights = {n: host(snap[n]) for n in spec.stored}
        self.sink.check("weights", step, weights)
        act_arrays = {n: host(v) for n, v in (acts or {}).items()}
        self.sink.check("activations", step, act_arrays)
        if spec.mode == "spectra":
            shapes: dict[str, tuple[int, int]] = {}
            w_spec = {}
            for n in spec.stored:
                shapes[f"weight:{n}"] = rc = matrix_shape(tuple(snap[n].shape))
                w_spec[n] = singular_values(snap[n].reshape(rc), center=False)
            a_spec = {}
            for n, v in (acts or {}).items():
                shapes[f"activation:{n}"] = (int(v.shape[0]), int(v.shape[1]))
                a_spec[n] = singular_values(v, center=True)
            self.sink.spectra(
                step, weights=w_spec, activations=a_spec, shapes=shapes, taps=spec.taps
            )
        if full:
            state = {n: host(snap[n]) for n in spec.state}
            self.sink.snapshot(
                step,
                weights=weights,
                state=state,
                activations=act_arrays if acts is not None else None,
                taps=spec.taps,
            )
        else:
            self.sink.snapshots += 1

    def _forward(self, snap: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        spec = self.spec
        assert spec.shadow is not None and spec.forward is not None  # taps imply both
        with torch.no_grad():
            for target, name in zip(self._targets, self.names, strict=True):
                if self._on_device:
                    target.data.copy_(snap[name], non_blocking=True)
                else:
                    target.data = snap[name]  # point at the slot: no copy
            return spec.forward(spec.shadow, spec.probe, spec.taps)


@dataclass(frozen=True, slots=True)
class SlotValue:
    """A scalar whose value the training thread copied into the slot's scalar area (CUDA)."""

    i: int
