"""The run session: one run store from its opening to its close.

Opening (:meth:`RunSession.open`): the store is created, replaced or reopened for a resume
(``store.open_store``) and the resume settings checked. Starting (:meth:`RunSession.start`):
the writer lease is taken, the groups created (and on resume trimmed to the last complete
snapshot), the root attrs and the probe written, and the writer started on a ring sized in
bytes. Closing (:meth:`RunSession.finish`): the writer flushes, writes the final attrs and
stops, and the lease is released. The disk budget (:func:`projection`) is checked before
anything is opened.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import _budget
from . import store as run_store
from ._schedule import Schedule, typical_interval
from ._taps import Tap, probe_forward
from .writer import Ring, SlotLayout, SnapshotSink, WorkSpec, WriterHandle, slot_count, start_writer

log = logging.getLogger("dimlapse.capture")


@dataclass
class Started:
    """What the Recorder learns from starting a session."""

    mode: str  # may become "weights" on resuming a weights-only run
    taps: dict[str, Tap]  # emptied with it
    resume_at: int | None  # the step training continues from (resume), else None
    recapture: bool  # whether the state at that step must be captured now
    t0: float  # perf_counter at the run's creation: the origin of ``wall_time``


def projection(
    layout: SlotLayout,
    *,
    stored: list[str],
    taps: dict[str, Tap],
    schedule: Schedule,
    mode: str,
    codec: str,
    full_every: int,
    total_steps: int | None,
    store: Any,
) -> dict[str, Any]:
    """Projected bytes per snapshot and per run (``_budget.project``); raises
    ``StoreTooSmallError`` when the run cannot fit the store's filesystem. The taps hold the
    probe's reduced outputs ``(rows, feature)`` from the construction-time check."""
    shapes = dict(zip(layout.names, layout.shapes, strict=True))
    acts = [tuple(t.value.shape) for t in taps.values() if t.value is not None]
    w_bytes = sum(4 * _numel(shapes[n]) for n in stored)
    sizes = _budget.Sizes(
        weights=w_bytes,
        state=sum(4 * _numel(shapes[n]) for n in layout.names) - w_bytes,
        activations=sum(4 * _numel(s) for s in acts),
        weight_spectra=_budget.spectrum_bytes([shapes[n] for n in stored]),
        activation_spectra=_budget.spectrum_bytes(acts),
    )
    for tap in taps.values():
        tap.reset()
    every = typical_interval(schedule)
    n = _budget.captures(schedule, total_steps) if total_steps is not None else None
    return _budget.project(
        sizes,
        mode=mode,
        codec=codec,
        every=every,
        full_every=full_every,
        n_captures=n,
        store=store,
    )


class RunSession:
    """A run store opened for writing, its writer lease and its writer."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.root: Any = None
        self.lease: dict[str, Any] | None = None
        self.handle: WriterHandle | None = None
        self.prior_dropped = 0

    def open(
        self,
        *,
        overwrite: bool,
        resume: bool,
        codec: str,
        flush_every: int,
        probe: Any,
        timeout: float,
    ) -> None:
        """Take the writer lease, then create, replace or reopen the store (so two racing
        starts cannot both replace it); refuse a resume that would change it. ``timeout``
        bounds the wait for a dead trainer's writer that still flushes."""
        self.created = run_store.utcnow()
        self.lease = run_store.acquire_lock(self.store, since=self.created, timeout=timeout)
        self.root = run_store.open_store(
            self.store, overwrite=overwrite, resume=resume, locked=True
        )
        if resume:
            run_store.check_resumable(self.root, codec=codec, flush_every=flush_every, probe=probe)

    def start(self, *, model: nn.Module, schedule: Schedule, mode: str, taps: dict[str, Tap],
              stored: list[str], state: list[str], layout: SlotLayout, probe: Any, targets: Any,
              n_probe: int, codec: str, flush_every: int, scalar_chunk: int, full_every: int,
              resume: bool, start_step: int | None, user_attrs: dict[str, Any],
              max_buffer_bytes: int, writer: str, projected: dict[str, Any],
              tensors: list[torch.Tensor], cuda: bool, timeout: float) -> Started:  # fmt: skip
        """Take the lease, lay out (or trim) the groups, write the attrs, start the writer."""
        root: Any = self.root
        created = self.created
        prior: dict[str, Any] = dict(root.attrs) if resume else {}
        if resume and prior.get("activations") is False and mode == "full":
            mode, taps = "weights", {}  # stays weights-only
        if resume and prior.get("mode", "full") != mode:
            raise ValueError(
                f"Expected `mode` to match the run being resumed ({prior.get('mode')!r}), "
                f"got {mode!r}"
            )
        groups: tuple[str, ...] = ("scalars",)
        if mode == "spectra":
            groups += ("spectra/weights",) + (("spectra/activations",) if taps else ())
        groups += ("weights", "state") + (("activations",) if taps else ())
        sink_kwargs: dict[str, Any] = {
            "chunk": flush_every,
            "scalar_chunk": scalar_chunk,
            "codec": codec,
            "probe_examples": n_probe,
            "groups": groups,
            "sparse_chunk": 1 if mode == "spectra" else None,
        }
        sink = SnapshotSink(root, **sink_kwargs)  # creates the groups and step indexes
        resume_at, recapture = (
            run_store.trim_for_resume(sink, start_step) if resume else (None, True)
        )
        created = prior.get("created", created)
        t0 = time.perf_counter() - (time.time() - dt.datetime.fromisoformat(created).timestamp())
        attrs = run_store.root_attrs(
            model=model,
            schedule=schedule,
            probe=probe,
            has_targets=targets is not None,
            codec=codec,
            flush_every=flush_every,
            scalar_chunk=scalar_chunk,
            modules=list(taps),
            params=stored,
            user_attrs=user_attrs,
            prior=prior,
            created=created,
            mode=mode,
            full_every=full_every,
            projected=projected,
            groups=groups,
        )
        if resume:
            attrs["resumed"] = [*prior.get("resumed", []), {"at_step": resume_at}]
        self.prior_dropped = int(prior.get("dropped_snapshots", 0))
        root.update_attributes(attrs)  # also drops consolidated metadata of a resumed run
        if probe is not None and not (resume and "probe" in root):
            run_store.write_probe(root, probe, targets)
        ring = Ring(layout, slot_count(layout, max_buffer_bytes))
        device = str(tensors[0].device) if cuda else "cpu"
        spec = WorkSpec(
            stored=stored,
            state=state,
            mode=mode,
            full_every=full_every,
            taps=taps,
            probe=probe,
            device=device,
            forward=probe_forward,
        )
        if cuda:
            ring.pin()
        self.handle = start_writer(
            store=self.store,
            root=root,
            ring=ring,
            spec=spec,
            sink_kwargs=sink_kwargs,
            prefer=writer,
            cuda=cuda,
            shadow=lambda kind: _shadow(model, taps, kind, probe),
            timeout=timeout,
        )
        proc = getattr(self.handle, "process", None)
        if proc is not None and proc.pid is not None and self.lease is not None:
            run_store.add_pid(self.store, self.lease, proc.pid)
        return Started(mode=mode, taps=taps, resume_at=resume_at, recapture=recapture, t0=t0)

    @property
    def writer_kind(self) -> str | None:
        """``"process"`` or ``"thread"`` once the writer started."""
        return self.handle.kind if self.handle is not None else None

    def finish(self, final: dict[str, Any]) -> dict[str, Any]:
        """Ask the writer to flush, write the final attrs (``final``) and stop; returns its
        statistics (``error`` set when it failed). Call :meth:`stop` after it, always."""
        assert self.handle is not None
        return self.handle.close(final)

    def stop(self, *, unpin: bool) -> None:
        """Unpin the ring (CUDA) and release the lease, also after a failed :meth:`finish`."""
        if unpin and self.handle is not None:
            self.handle.ring.unpin()
        if self.handle is not None and (self.handle.kind == "process" or not self.handle.failed):
            self.handle.ring.release()  # a failed writer thread may still read its slot
        self.release()

    def mark_degraded(self, error: str | None) -> None:
        """The writer died before writing the final attrs: say so in the store (best effort)."""
        try:
            self.root.update_attributes({"status": "degraded", "errors": [error]})
        except Exception as exc:  # the store may be the thing that broke
            log.error("dimlapse: could not mark the store degraded: %s", exc)

    def release(self) -> None:
        """Drop the writer lease, if held."""
        run_store.release_lock(self.store, self.lease)
        self.lease = None


def _shadow(model: nn.Module, taps: dict[str, Tap], kind: str, probe: Any) -> tuple[Any, Any]:
    """The writer's copy of the model: a forked process inherits it (copy-on-write, no
    cost here); a thread or a spawned process gets a deep copy (on the CPU to spawn)."""
    if not taps:
        return None, None
    if kind == "fork":
        return model, probe
    shadow = copy.deepcopy(model)
    if kind == "spawn":
        return shadow.cpu(), _to_cpu(probe)
    return shadow.eval().requires_grad_(False), probe


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _to_cpu(probe: Any) -> Any:
    if isinstance(probe, torch.Tensor):
        return probe.cpu()
    if isinstance(probe, dict):
        return {k: _to_cpu(v) for k, v in probe.items()}
    if isinstance(probe, tuple | list):
        return type(probe)(_to_cpu(v) for v in probe)
    return probe
