"""The writer side of capture: probe forwards from snapshots, host copies, Zarr writes.

:class:`SnapshotSink` turns host arrays into store rows (shared with ``replay``);
:class:`WriterThread` consumes the Recorder's bounded queue: for each snapshot it swaps the
cloned tensors into a shadow copy of the model, runs the probe forward there (eval mode,
``no_grad``), copies to host and appends to the chunk buffers. Any exception disables capture
with one logged error and marks the store ``degraded``; training never sees it unless
``strict=True``.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import zarr

from ._chunks import ChunkedGroup
from .._select import Tap, probe_forward

log = logging.getLogger("dimlapse.capture")

_FLOAT64_SCALARS = frozenset({"wall_time", "lr"})


def host(t: torch.Tensor) -> np.ndarray:
    """Tensor -> NumPy on the host; floating types as float32 (bfloat16 has no NumPy dtype)."""
    t = t.detach()
    if t.is_floating_point():
        t = t.to("cpu", torch.float32)
    else:
        t = t.cpu()
    return t.numpy()


def _owner(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


@dataclass(slots=True)
class Item:
    """One unit of work for the writer: a snapshot (tensors) and/or pending scalar rows."""

    step: int
    tensors: list[torch.Tensor] | None = None
    activations: dict[str, torch.Tensor] | None = None  # inline-forward fallback only
    scalars: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    event: Any = None  # torch.cuda.Event recorded after the clones (CUDA only)


class SnapshotSink:
    """Appends snapshots and scalar rows to the store groups; tracks non-finite values."""

    def __init__(
        self,
        root: zarr.Group,
        *,
        chunk: int,
        scalar_chunk: int,
        codec: str,
        probe_examples: int,
        groups: tuple[str, ...] = ("scalars", "weights", "activations", "state"),
    ) -> None:
        self.root = root
        self.probe_examples = probe_examples
        self.groups: dict[str, ChunkedGroup] = {}
        for name in groups:
            size = scalar_chunk if name == "scalars" else chunk
            group_codec = "zstd" if name in ("scalars", "state") else codec
            self.groups[name] = ChunkedGroup(
                root.require_group(name), chunk=size, codec=group_codec
            )
        self.nonfinite: dict[str, list[int]] = {}
        self.nonfinite_dirty = False
        self.snapshots = 0

    def _check(self, group: str, step: int, values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            # a float32 sum is finite whenever every value is (NaN and Inf propagate); only
            # when it is not (NaN/Inf, or a rare overflow) is the exact check paid for
            if (
                value.dtype.kind == "f"
                and not np.isfinite(value.sum())
                and not np.isfinite(value).all()
            ):
                key = f"{group}/{name}"
                if key not in self.nonfinite:
                    log.warning(
                        "dimlapse: non-finite values (NaN/Inf) in %s at step %d; recorded as is "
                        "and listed in the store's `nonfinite` attr",
                        key,
                        step,
                    )
                self.nonfinite.setdefault(key, []).append(step)
                self.nonfinite_dirty = True

    def snapshot(
        self,
        step: int,
        *,
        weights: dict[str, np.ndarray],
        state: dict[str, np.ndarray],
        activations: dict[str, np.ndarray] | None,
        taps: dict[str, Tap] | None = None,
    ) -> None:
        """Append one capture step to ``weights``, ``state`` and (when on) ``activations``."""
        snap = next((g for n, g in self.groups.items() if n != "scalars"), None)
        if "scalars" in self.groups and snap is not None and snap.count + 1 == snap.chunk:
            # this snapshot completes a chunk: commit the scalar rows up to it first (a partial,
            # tiny chunk), so a store holding snapshot S always holds the scalars up to S
            self.groups["scalars"].flush()
        for group, values in (("weights", weights), ("state", state)):
            if group not in self.groups:
                continue
            self._check(group, step, values)
            kind = "weight" if group == "weights" else "state"
            self.groups[group].append(
                step,
                values,
                attrs={n: {"layer": _owner(n), "kind": kind} for n in values},
                dims={
                    n: ("step", *(f"{n}.d{i}" for i in range(v.ndim))) for n, v in values.items()
                },
            )
        if activations is not None and "activations" in self.groups:
            self._check("activations", step, activations)
            attrs = {}
            for n in activations:
                meta = dict((taps[n].meta or {}) if taps and n in taps else {})
                attrs[n] = {
                    "layer": n,
                    "kind": "activation",
                    "probe_examples": self.probe_examples,
                    **meta,
                }
            self.groups["activations"].append(
                step,
                activations,
                attrs=attrs,
                dims={n: ("step", f"{n}.sample", f"{n}.feature") for n in activations},
            )
        self.snapshots += 1

    def scalars(self, rows: list[tuple[int, dict[str, Any]]]) -> None:
        """Append one row per optimizer step; tensor values are read in one batch."""
        if not rows or "scalars" not in self.groups:
            return
        tensors = [v for _, row in rows for v in row.values() if isinstance(v, torch.Tensor)]
        if tensors:  # one host transfer for the whole batch (device sync on this thread only)
            flat = torch.stack([t.reshape(()).to(torch.float64) for t in tensors]).cpu().tolist()
            it = iter(flat)
        group = self.groups["scalars"]
        for step, row in rows:
            values = {}
            for k, v in row.items():
                x = next(it) if isinstance(v, torch.Tensor) else v
                values[k] = np.asarray(x, dtype=np.float64 if k in _FLOAT64_SCALARS else np.float32)
            group.append(
                step,
                values,
                attrs={k: {"kind": "scalar"} for k in values},
                dims={k: ("step",) for k in values},
                dtypes={k: v.dtype for k, v in values.items()},
            )

    def flush(self) -> None:
        """Write every partial chunk and trim the arrays to the rows written (at close)."""
        for group in self.groups.values():
            group.flush(final=True)

    @property
    def bytes_raw(self) -> int:
        return sum(g.bytes_raw for g in self.groups.values())


def _lower_priority() -> None:
    """Give the training thread the edge when cores are contended (Linux: per-thread nice).

    Under backpressure="block" a writer that falls behind still gets its turn: the training
    thread waits on the full queue.
    """
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except OSError as exc:  # e.g. a sandbox forbidding it: capture works without it
            log.debug("dimlapse: could not lower the writer thread's priority: %s", exc)


class WriterThread(threading.Thread):
    """Consumes :class:`Item` s from a bounded queue until it receives ``None``."""

    def __init__(
        self,
        sink: SnapshotSink,
        work: queue.Queue[Item | None],
        *,
        names: list[str],
        stored: list[str],
        state: list[str],
        shadow: torch.nn.Module | None,
        taps: dict[str, Tap],
        probe: torch.Tensor | None,
        device: torch.device,
    ) -> None:
        super().__init__(name="dimlapse-writer", daemon=True)
        self.sink = sink
        self.work = work
        self.names = names
        self.stored = stored
        self.state_names = state
        self.shadow = shadow
        self.taps = taps
        self.probe = probe
        self.error: BaseException | None = None
        self.failed = False
        self.stream: Any = None
        self._shadow_tensors: dict[str, torch.Tensor] = {}
        if shadow is not None:
            self._shadow_tensors = {
                **dict(shadow.named_parameters()),
                **dict(shadow.named_buffers()),
            }
        if device.type == "cuda":  # this thread's own stream: the training stream never waits
            self.stream = torch.cuda.Stream(device)

    def run(self) -> None:
        _lower_priority()
        while True:
            item = self.work.get()
            if item is None:
                break
            if self.failed:
                continue  # capture is disabled: drain so the training thread never blocks
            try:
                self.process(item)
            except Exception as exc:  # any store/disk/codec error degrades capture
                self.fail(exc, item.step)
        if not self.failed:
            try:
                self.sink.flush()
            except Exception as exc:
                self.fail(exc, None)

    def fail(self, exc: BaseException, step: int | None) -> None:
        """Disable capture after an error: one clear log line, status ``degraded``."""
        self.error, self.failed = exc, True
        where = f" at step {step}" if step is not None else " at close"
        log.error(
            "dimlapse: capture disabled after a store error%s: %s: %s. Training continues; "
            "data written before stays valid (pass strict=True to raise instead).",
            where,
            type(exc).__name__,
            exc,
        )
        try:
            self.sink.root.update_attributes(
                {"status": "degraded", "errors": [f"{type(exc).__name__}: {exc}"]}
            )
        except Exception as exc2:  # best effort: the store may be the thing that broke
            log.warning("dimlapse: could not mark the store degraded either: %s", exc2)

    def process(self, item: Item) -> None:
        """Handle one queue item (runs on this thread)."""
        if self.stream is not None:
            with torch.cuda.stream(self.stream):
                if item.event is not None:
                    self.stream.wait_event(item.event)
                self._process(item)
        else:
            self._process(item)

    def _to_host(self, tensors: dict[Any, torch.Tensor]) -> dict[Any, np.ndarray]:
        """Host copies; on CUDA all copies go to pinned memory without blocking, then one
        sync of this thread's side stream (the training thread never waits)."""
        if self.stream is None:
            return {k: host(t) for k, t in tensors.items()}
        pinned = {}
        for key, t in tensors.items():
            t = t.detach()
            dtype = torch.float32 if t.is_floating_point() else t.dtype
            out = torch.empty(t.shape, dtype=dtype, pin_memory=True)
            out.copy_(t, non_blocking=True)
            pinned[key] = out
        self.stream.synchronize()
        return {k: t.numpy() for k, t in pinned.items()}

    def _process(self, item: Item) -> None:
        self.sink.scalars(item.scalars)
        if item.tensors is None:
            return
        snap = dict(zip(self.names, item.tensors, strict=True))
        acts = item.activations
        if acts is None and self.shadow is not None and self.probe is not None and self.taps:
            for name, tensor in snap.items():
                self._shadow_tensors[name].data = tensor  # swap, no copy
            with torch.no_grad():
                acts = probe_forward(self.shadow, self.probe, self.taps)
        tensors = {("weights", n): snap[n] for n in self.stored}
        tensors.update({("state", n): snap[n] for n in self.state_names})
        tensors.update({("activations", n): v for n, v in (acts or {}).items()})
        arrays = self._to_host(tensors)
        self.sink.snapshot(
            item.step,
            weights={n: a for (g, n), a in arrays.items() if g == "weights"},
            state={n: a for (g, n), a in arrays.items() if g == "state"},
            activations=None
            if acts is None
            else {n: a for (g, n), a in arrays.items() if g == "activations"},
            taps=self.taps,
        )
        if self.sink.nonfinite_dirty:
            self.sink.root.update_attributes({"nonfinite": self.sink.nonfinite})
            self.sink.nonfinite_dirty = False
