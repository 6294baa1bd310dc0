"""The Recorder: three lines in a training loop; on a capture step, one copy into a ring slot.

Data flow (docs/store-layout.md; README "How capture works")::

    rec.step() --copy into a free slot--> shared-memory ring (bytes-bounded)
        --> writer process: probe forward in its own copy of the model, spectra, chunk
            buffers, compression, Zarr writes --> run.zarr

Everything but that copy happens in the writer (``writer/``), a separate process by default,
so the training process's GIL is not shared with Zarr, codecs or the probe forward.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import operator
import os
import threading
import time
from typing import Any

import torch
from torch import nn

from . import _budget, _distributed, _exit, _lock, _store, _validate
from ._attrs import check_resumable, root_attrs
from ._probe import probe_batch_size
from ._resume import trim_for_resume
from ._schedule import Schedule, as_schedule, typical_interval
from ._select import ModuleSelector, ParamSelector, make_taps, select_modules, select_params
from .writer._chunks import DEFAULT_CODEC, parse_codec
from .writer._handle import WriterHandle, start_writer
from .writer._ring import DEFAULT_MAX_BUFFER_BYTES, Ring, SlotLayout, slot_count
from .writer._sink import SnapshotSink
from .writer._work import SlotValue, WorkSpec

log = logging.getLogger("dimlapse.capture")
_REFUSALS = (_store.RunExistsError, _store.RunNotFoundError, _lock.RunLockedError, ValueError)
MODES = ("full", "weights", "spectra")
FLUSH_BYTES = 128 * 2**20  # target size of one flush's snapshot buffer


def auto_flush_every(model: nn.Module) -> int:
    """Snapshots per flush: about FLUSH_BYTES of parameters and buffers, clamped to [1, 64].

    Deterministic in the model, so a resumed run gets the same chunking. A model of over
    FLUSH_BYTES gets one snapshot per chunk, written straight from the ring slot (no chunk
    buffer in the writer).
    """
    tensors = [*model.parameters(), *model.buffers()]
    snapshot = sum(t.numel() * 4 for t in tensors) or 1  # stored as float32
    return max(1, min(64, FLUSH_BYTES // snapshot))


class CaptureError(RuntimeError):
    """Capture failed (raised on the training thread when ``strict=True``, or on misuse)."""


class Recorder:
    """Record weights, probe activations and scalars of a training run into a Zarr store.

    Construct it before training (this captures step 0, the initial state), call
    :meth:`step` after every ``optimizer.step()``, and :meth:`close` it (or use ``with``).
    On a capture step the training thread copies the parameters and buffers into a free slot
    of a shared-memory ring (no allocation); a writer process runs the probe forward in its
    own copy of the model, computes spectra (``mode="spectra"``), compresses and writes.

    Parameters
    ----------
    model : torch.nn.Module
        The model being trained.
    store : str, os.PathLike or zarr store
        Where the run goes: a local path or any fsspec URL. In-memory stores
        (``memory://``, store objects) are written from a thread instead of a process.
    every : int or callable
        Capture interval, or a schedule ``step -> bool`` (``every_n``, ``log_then_dense``).
    probe : torch.Tensor, optional
        Fixed probe batch ``(n, ...)``, n >= 2; without one, no activations are recorded.
        It is run through the model once at construction: a probe the model cannot take is
        refused here, naming the module where it failed.
    probe_targets : torch.Tensor, optional
        Targets of the probe batch (stored).
    modules : None, list of types, glob str, list of globs or callable
        Modules whose outputs are recorded (default: Linear, Conv1d/2d, MultiheadAttention,
        transformer layers, Embedding).
    params : str, list of str, callable or None
        Parameter globs (among parameters with ndim >= 2), or ``callable(name, param)``.
    mode : {"full", "weights", "spectra"}
        ``full``: weights, state and probe activations at every capture step. ``weights``:
        no activations (replay them later with :func:`replay`). ``spectra``: the singular
        values of every recorded weight matrix and of every module's sample-centred probe
        activations at every capture step, and full snapshots every ``full_every`` steps
        only: for big models (under 1 % of full mode's bytes per snapshot).
    activations : bool
        ``False`` is ``mode="weights"`` (kept for older code).
    full_every : int
        Spectra mode: steps between full snapshots (step 0 is always full).
    positions, tokens : int
        Spatial positions / token positions sampled (fixed, seeded) per module.
    flush_every : int, optional
        Snapshots per chunk and flush (default: about 128 MiB of parameters, 1 to 64).
    max_buffer_bytes : int
        Size of the shared-memory ring of snapshot slots (default 256 MiB, between 2 and 128
        slots). It bounds the memory capture may hold while the writer catches up.
    backpressure : {"block", "drop"}
        When every slot is taken: wait, or drop the snapshot and count it.
    codec : str, optional
        ``lz4`` (lossless, the default for new runs; a resumed run keeps its own), ``zstd``,
        ``blosc-zstd``, ``none``, ``float16`` or ``bitround-<bits>``.
    writer : {"auto", "process", "thread"}
        Where the writer runs. ``auto``: a process, or a thread (with a logged warning) where
        a process cannot be used.
    total_steps : int, optional
        Planned optimizer steps: the projected bytes of the whole run are logged, and a run
        that would not fit the store's filesystem is refused, naming the modes that fit.
    overwrite, resume : bool
        Replace an existing run, or continue it after its last complete snapshot.
    start_step : int, optional
        Step number of the current model state (default 0, or the last snapshot on resume).
    strict : bool
        Re-raise writer errors on the training thread instead of degrading.
    attrs : dict, optional
        JSON values merged into the root attrs (config, seed, dataset, ...); keys the
        Recorder owns (``status``, ``layout_version``, ...) are refused.
    rank : int
        In a ``torch.distributed`` job, the rank that records (the process group is found
        by itself); every other rank's Recorder does nothing. DDP wrappers are unwrapped.
    average_scalars : bool
        Distributed jobs: store the mean over ranks of each scalar (one ``all_reduce`` per
        step, in every rank).

    Examples
    --------
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> with Recorder(model, "memory://doc.zarr", every=2, probe=torch.randn(8, 4)) as rec:
    ...     for _ in range(4):
    ...         captured = rec.step(loss=0.5)
    >>> rec.stats["snapshots"]
    3
    """

    def __init__(
        self,
        model: nn.Module,
        store: Any,
        *,
        every: int | Schedule = 5,
        probe: Any = None,
        probe_targets: torch.Tensor | None = None,
        modules: ModuleSelector = None,
        params: ParamSelector = "*",
        mode: str = "full",
        activations: bool | None = None,
        full_every: int = 500,
        positions: int = 16,
        tokens: int = 4,
        flush_every: int | None = None,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        backpressure: str = "block",
        codec: str | None = None,
        writer: str = "auto",
        total_steps: int | None = None,
        overwrite: bool = False,
        resume: bool = False,
        start_step: int | None = None,
        strict: bool = False,
        attrs: dict[str, Any] | None = None,
        rank: int = 0,
        average_scalars: bool = False,
    ) -> None:
        self._closed, self._active, self.status = True, False, "running"
        self._pid = os.getpid()
        self._noop = False
        self._scalar_names: set[str] = {"loss"}
        self._final: dict[str, Any] | None = None
        self._handle: WriterHandle | None = None
        self._dropped = self._captured = 0
        self._train_seconds = self._ring_wait = 0.0
        if not isinstance(model, nn.Module):
            raise ValueError(f"Expected `model` to be a torch.nn.Module, got {model!r}")
        model = _distributed.unwrap(model)
        this_rank, self._world = _distributed.rank_and_world()
        if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < self._world:
            raise ValueError(
                f"Expected `rank` to be the rank that records, in 0..{self._world - 1}, got "
                f"{rank!r}"
            )
        self._average = bool(average_scalars) and self._world > 1
        self._device = next(model.parameters(), torch.zeros(())).device
        self.current_step = 0
        if this_rank != rank:  # replicated weights: one rank records, the others do nothing
            self.model, self.store, self.strict, self.mode = model, store, strict, mode
            self.status, self._closed, self._noop = "other rank", False, True
            return
        self.schedule: Schedule = as_schedule(every)
        if mode not in MODES:
            raise ValueError(f"Expected `mode` to be one of {MODES}, got {mode!r}")
        if activations is False:
            mode = "weights"
        if flush_every is None:
            flush_every = auto_flush_every(model)
        for name, value in {
            "positions": positions,
            "tokens": tokens,
            "flush_every": flush_every,
            "max_buffer_bytes": max_buffer_bytes,
        }.items():
            _validate.positive_int(name, value)
        _validate.positive_int("full_every", full_every, minimum=0)
        for name, opt in (("start_step", start_step), ("total_steps", total_steps)):
            if opt is not None:
                _validate.positive_int(name, opt, minimum=0)
        if backpressure not in ("block", "drop"):
            raise ValueError(
                f"Expected `backpressure` to be 'block' or 'drop', got {backpressure!r}"
            )
        if writer not in ("auto", "process", "thread"):
            raise ValueError(
                f"Expected `writer` to be 'auto', 'process' or 'thread', got {writer!r}"
            )
        if codec is None:  # a resumed run keeps its codec; a new one gets the default
            codec = _stored_attr(store, "codec", DEFAULT_CODEC) if resume else DEFAULT_CODEC
        codec = parse_codec(codec)
        if overwrite and resume:
            raise ValueError("Expected at most one of `overwrite`, `resume` to be True, got both")
        user_attrs = _validate.check_user_attrs(_store.check_json(attrs))
        self.model, self.store, self.strict, self.mode = model, store, strict, mode
        self._backpressure = backpressure
        self.stored = select_params(model, params)
        self._taps: dict[str, Any] = {}
        self.modules: list[str] = []
        if resume and probe is None and mode != "weights":
            probe, probe_targets = _stored_probe(store)  # continue with the run's own probe
        n_probe = self._check_probe(probe, probe_targets, modules, positions, tokens)
        if self.mode == "full" and not self._taps:
            self.mode = "weights"  # nothing to record on a probe: say so in the store
        named = [*model.named_parameters(), *model.named_buffers()]
        self._tensors = [t for _, t in named]  # what a snapshot copies, in this order
        self._live = [*model.parameters(), *model.buffers()]  # to notice replaced parameters
        self._maybe_changed = False
        _exit.watch_registrations(self)
        self._names = [n for n, _ in named]
        state = [n for n in self._names if n not in set(self.stored)]
        self._cuda = bool(self._tensors) and self._tensors[0].device.type == "cuda"
        scalar_chunk = flush_every * typical_interval(self.schedule)
        self._scalar_chunk = scalar_chunk
        layout = SlotLayout.of(named, scalar_capacity=4 * scalar_chunk + 16)
        projected = self._project(layout, n_probe, codec, full_every, total_steps, store)

        self.current_step = 0
        self._pending: list[tuple[int, dict[str, Any]]] = []
        self._error: str | None = None
        self._prior_dropped = 0
        self._lease: dict[str, Any] | None = None
        self._inflight: list[tuple[Any, tuple[Any, ...], Any]] = []  # CUDA copies in flight
        self._stream: Any = None
        self._closed = False
        try:
            self.root = _store.open_store(store, overwrite=overwrite, resume=resume)
            if resume:
                check_resumable(self.root, codec=codec, flush_every=flush_every, probe=probe)
            self._start(
                layout=layout,
                probe=probe,
                targets=probe_targets,
                n_probe=n_probe,
                state=state,
                codec=codec,
                flush_every=flush_every,
                full_every=full_every,
                resume=resume,
                start_step=start_step,
                user_attrs=user_attrs,
                max_buffer_bytes=max_buffer_bytes,
                writer=writer,
                projected=projected,
            )
        except _REFUSALS:
            self._closed = True
            self._release()
            raise
        except Exception as exc:
            self._release()
            if strict:
                self._closed = True
                raise
            self._disable(f"{type(exc).__name__}: {exc}")
            return
        _exit.OPEN.add(self)
        _exit.handle_sigterm()

    # -- construction ------------------------------------------------------------------------
    def _check_probe(
        self, probe: Any, targets: Any, modules: ModuleSelector, positions: int, tokens: int
    ) -> int:
        """Validate the probe by running it once (on the model, eval + no_grad, modes and RNG
        restored); select the recorded modules. Returns the number of probe examples."""
        if probe is None:
            if targets is not None:
                raise ValueError("Expected `probe_targets` only with a `probe`, got no probe")
            return 0
        n = probe_batch_size(probe)
        if targets is not None and (
            not isinstance(targets, torch.Tensor) or targets.shape[:1] != (n,)
        ):
            raise ValueError(
                "Expected `probe_targets` to be a tensor with one entry per probe example "
                f"({n}), got {targets!r:.80}"
            )
        chosen = select_modules(self.model, modules) if self.mode != "weights" else []
        self._taps = make_taps(self.model, chosen, positions=positions, tokens=tokens)
        self.modules = list(self._taps)
        modes = [(m, m.training) for m in self.model.modules()]
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        try:
            self.model.eval()
            _validate.check_probe(self.model, probe, self._taps, n)
        finally:
            for m, was in modes:
                m.training = was
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
        return n

    def _project(
        self,
        layout: SlotLayout,
        n_probe: int,
        codec: str,
        full_every: int,
        total_steps: int | None,
        store: Any,
    ) -> dict[str, Any]:
        shapes = dict(zip(layout.names, layout.shapes, strict=True))
        acts = [tuple(t.value.shape) for t in self._taps.values() if t.value is not None]
        w_bytes = sum(4 * _numel(shapes[n]) for n in self.stored)
        sizes = _budget.Sizes(
            weights=w_bytes,
            state=sum(4 * _numel(shapes[n]) for n in layout.names) - w_bytes,
            activations=sum(4 * _numel(s) for s in acts),
            weight_spectra=_budget.spectrum_bytes([shapes[n] for n in self.stored]),
            activation_spectra=_budget.spectrum_bytes(acts),
        )
        for tap in self._taps.values():
            tap.reset()
        every = typical_interval(self.schedule)
        n = _budget.captures(self.schedule, total_steps) if total_steps is not None else None
        return _budget.project(
            sizes,
            mode=self.mode,
            codec=codec,
            every=every,
            full_every=full_every,
            n_captures=n,
            store=store,
        )

    def _start(self, *, layout: SlotLayout, probe: Any, targets: Any, n_probe: int,
               state: list[str], codec: str, flush_every: int, full_every: int, resume: bool,
               start_step: int | None, user_attrs: dict[str, Any], max_buffer_bytes: int,
               writer: str, projected: dict[str, Any]) -> None:  # fmt: skip
        root: Any = self.root
        created = _store.utcnow()
        prior: dict[str, Any] = dict(root.attrs) if resume else {}
        self._lease = _lock.acquire_lock(self.store, since=created)
        if resume and prior.get("activations") is False and self.mode == "full":
            self.mode, self._taps, self.modules = "weights", {}, []  # stays weights-only
        if resume and prior.get("mode", "full") != self.mode:
            raise ValueError(
                f"Expected `mode` to match the run being resumed ({prior.get('mode')!r}), "
                f"got {self.mode!r}"
            )
        groups: tuple[str, ...] = ("scalars",)
        if self.mode == "spectra":
            groups += ("spectra/weights",) + (("spectra/activations",) if self._taps else ())
        groups += ("weights", "state") + (("activations",) if self._taps else ())
        sink_kwargs: dict[str, Any] = {
            "chunk": flush_every,
            "scalar_chunk": self._scalar_chunk,
            "codec": codec,
            "probe_examples": n_probe,
            "groups": groups,
            "sparse_chunk": 1 if self.mode == "spectra" else None,
        }
        sink = SnapshotSink(root, **sink_kwargs)  # creates the groups and step indexes
        resume_at, recapture = trim_for_resume(sink, start_step) if resume else (None, True)
        created = prior.get("created", created)
        self._t0 = time.perf_counter() - (
            time.time() - dt.datetime.fromisoformat(created).timestamp()
        )
        attrs = root_attrs(
            model=self.model,
            schedule=self.schedule,
            probe=probe,
            has_targets=targets is not None,
            codec=codec,
            flush_every=flush_every,
            scalar_chunk=self._scalar_chunk,
            modules=self.modules,
            params=self.stored,
            user_attrs=user_attrs,
            prior=prior,
            created=created,
            mode=self.mode,
            full_every=full_every,
            projected=projected,
        )
        if resume:
            attrs["resumed"] = [*prior.get("resumed", []), {"at_step": resume_at}]
        self._prior_dropped = int(prior.get("dropped_snapshots", 0))
        root.update_attributes(attrs)  # also drops consolidated metadata of a resumed run
        if probe is not None and not (resume and "probe" in root):
            _store.write_probe(root, probe, targets)
        ring = Ring(layout, slot_count(layout, max_buffer_bytes))
        device = str(self._tensors[0].device) if self._cuda else "cpu"
        spec = WorkSpec(
            stored=self.stored,
            state=state,
            mode=self.mode,
            full_every=full_every,
            taps=self._taps,
            probe=probe,
            device=device,
        )
        if self._cuda:
            ring.pin()
            self._stream = torch.cuda.Stream(self._tensors[0].device)
        self._handle = start_writer(
            store=self.store,
            root=root,
            ring=ring,
            spec=spec,
            sink_kwargs=sink_kwargs,
            prefer=writer,
            cuda=self._cuda,
            shadow=lambda kind: self._shadow(kind, probe),
        )
        self.writer_kind = self._handle.kind
        proc = getattr(self._handle, "process", None)
        if proc is not None and proc.pid is not None:
            _lock.add_pid(self.store, self._lease, proc.pid)
        self.current_step = (start_step or 0) if resume_at is None else resume_at
        self._active = True
        if recapture:  # step 0 (the initial state), or a resume point between snapshots
            self._capture(self.current_step)

    def _shadow(self, kind: str, probe: Any) -> tuple[nn.Module | None, Any]:
        """The writer's copy of the model: a forked process inherits it (copy-on-write, no
        cost here); a thread or a spawned process gets a deep copy (on the CPU to spawn)."""
        if not self._taps:
            return None, None
        if kind == "fork":
            return self.model, probe
        shadow = copy.deepcopy(self.model)
        if kind == "spawn":
            return shadow.cpu(), _to_cpu(probe)
        return shadow.eval().requires_grad_(False), probe

    def _disable(self, error: str) -> None:
        self._active, self.status, self._error = False, "degraded", error
        log.error(
            "dimlapse: capture disabled: %s. Training continues (pass strict=True to raise "
            "instead); everything recorded before is kept.",
            error,
        )

    # -- the training-thread API -------------------------------------------------------------
    def step(self, loss: Any = None, **scalars: Any) -> bool:
        """Record one optimizer step; snapshot it when the schedule says so.

        Call after ``optimizer.step()``. ``loss`` and extra ``scalars`` (numbers or
        one-element tensors, kept on their device) are recorded for every step.

        Returns
        -------
        bool
            Whether this step was captured (handed to the writer).
        """
        t0 = time.perf_counter()  # the hot path: keep it to a few microseconds
        if self._closed:
            raise CaptureError(
                "Recorder.step() was called after close(); construct a new Recorder (or pass "
                "resume=True) to record more steps"
            )
        row: dict[str, Any] = {}
        if scalars:  # validated before anything is recorded: a bad name records nothing
            for k, v in scalars.items():
                if k not in self._scalar_names:
                    self._scalar_names.add(_validate.check_scalar_name(k))
                row[k] = _validate.scalar_value(k, v)
        if loss is not None:
            row["loss"] = _validate.scalar_value("loss", loss)
        if self._average:  # every rank joins, in the same order
            row = _distributed.average(row, world=self._world, device=self._device)
        self.current_step = step = self.current_step + 1
        if self._noop:
            return False
        if not self._active:
            return self._inactive()
        handle = self._handle
        if handle is None or handle.header[0]:
            return self._inactive()
        row["wall_time"] = t0 - self._t0
        self._pending.append((step, row))
        if self._inflight:
            self._send_ready(wait=False)
        captured = self.schedule(step)
        if captured:
            captured = self._capture(step)
        elif len(self._pending) >= self._scalar_chunk:
            self._hand_over(step, snapshot=False, block=True)
        self._train_seconds += time.perf_counter() - t0
        return bool(captured)

    def _inactive(self) -> bool:
        handle = self._handle
        if handle is not None and handle.header[0] and self._active:
            self._disable(f"writer error: {handle.read_error() or 'the writer failed'}")
        if self.strict and self._error is not None:
            raise CaptureError(f"capture failed: {self._error}")
        return False

    def _params_changed(self) -> bool:
        """Whether any parameter or buffer object was replaced or added (identity check:
        microseconds per capture for the study's MLP)."""
        live = [*self.model.parameters(), *self.model.buffers()]
        return len(live) != len(self._live) or not all(map(operator.is_, live, self._live))

    def _reresolve(self) -> bool:
        """The model's parameters were replaced: follow them by name, or stop capture."""
        named = dict([*self.model.named_parameters(), *self.model.named_buffers()])
        handle = self._handle
        assert handle is not None  # only called while capturing
        layout = handle.ring.layout  # the shapes and dtypes the run was started with
        old = {
            n: (s, d) for n, s, d in zip(layout.names, layout.shapes, layout.dtypes, strict=True)
        }
        gone = [n for n in self._names if n not in named]
        changed = [
            n for n in self._names
            if n in named and (tuple(named[n].shape), named[n].dtype) != old[n]
        ]  # fmt: skip
        if gone or changed:
            what = ", ".join(
                [f"{n!r} was removed" for n in gone]
                + [
                    f"{n!r} changed from {old[n][0]} {old[n][1]} to "
                    f"{tuple(named[n].shape)} {named[n].dtype}"
                    for n in changed
                ]
            )
            self._disable(
                f"the model's parameters changed after the Recorder was constructed ({what}); "
                "the run keeps every snapshot before it. Record the changed model into a new run"
            )
            self._inactive()
            return False
        added = [n for n in named if n not in old]
        if added:
            log.warning(
                "dimlapse: parameters %s were added to the model after the Recorder was "
                "constructed and are not recorded; construct the Recorder after the model is "
                "complete to record them",
                added,
            )
        self._tensors = [named[n] for n in self._names]
        self._live = [*self.model.parameters(), *self.model.buffers()]
        log.info("dimlapse: model parameters were replaced; recording the new ones by name")
        return True

    def _capture(self, step: int) -> bool:
        if self._maybe_changed:  # set by torch's registration hooks (see _exit.py)
            self._maybe_changed = False
            if self._params_changed() and not self._reresolve():
                return False
        return self._hand_over(step, snapshot=True, block=self._backpressure == "block")

    def _hand_over(self, step: int, *, snapshot: bool, block: bool) -> bool:
        """Copy a snapshot (and/or the pending scalar rows) into a free slot; tell the writer."""
        handle = self._handle
        assert handle is not None  # only called while active
        t0 = time.perf_counter()
        slot = handle.acquire(block=block)
        self._ring_wait += time.perf_counter() - t0
        if slot is None:
            if handle.header[0]:
                return self._inactive()
            self._dropped += 1  # pending scalar rows go with the next message
            return False
        rows, self._pending = self._pending, []
        try:
            if self._cuda:
                self._copy_cuda(slot, step, rows, snapshot)
            else:
                if snapshot:
                    with torch.no_grad():
                        torch._foreach_copy_(handle.ring.views[slot], self._tensors)
                handle.send(("s", slot, step, rows, snapshot))
        except RuntimeError:  # a parameter changed shape or dtype in place (``.data = ...``)
            handle.send(("s", slot, step, rows, False))  # keep the rows, free the slot
            if self._reresolve():
                raise  # not a change of the model: a real error
            return False
        self._captured += snapshot
        return True

    def _copy_cuda(self, slot: int, step: int, rows: list[Any], snapshot: bool) -> None:
        """Device-to-pinned-host copies on a side stream; the message is sent once they are
        done (checked without blocking at later steps). The training stream waits for the
        copies on the device only, before the next optimizer step can change a parameter."""
        handle = self._handle
        assert handle is not None and self._stream is not None
        stream, main = self._stream, torch.cuda.current_stream()
        values = [(i, k, v) for i, (_, r) in enumerate(rows) for k, v in r.items()
                  if isinstance(v, torch.Tensor)]  # fmt: skip
        keep: Any = None
        stream.wait_stream(main)
        with torch.cuda.stream(stream), torch.no_grad():
            if snapshot:
                torch._foreach_copy_(handle.ring.views[slot], self._tensors, non_blocking=True)
            if values:
                keep = torch.stack([v.reshape(()).to(torch.float64) for _, _, v in values])
                handle.ring.scalars[slot][: len(values)].copy_(keep, non_blocking=True)
        main.wait_stream(stream)
        for j, (i, k, _) in enumerate(values):
            rows[i][1][k] = SlotValue(j)
        event = torch.cuda.Event()
        event.record(stream)
        self._inflight.append((event, ("s", slot, step, rows, snapshot), keep))

    def _send_ready(self, *, wait: bool) -> None:
        handle = self._handle
        while self._inflight and handle is not None:
            event, msg, _ = self._inflight[0]
            if not wait and not event.query():
                return
            event.synchronize()
            handle.send(msg)
            self._inflight.pop(0)

    # -- closing -------------------------------------------------------------------------------
    def close(self, *, status: str = "complete") -> None:
        """Flush everything, stop the writer, mark the run ``complete`` (or ``status``)."""
        if self._closed:
            return
        self._closed = True
        if self._noop:
            return
        _exit.OPEN.discard(self)
        handle = self._handle
        if handle is None:
            self._inactive()  # raises when strict
            return
        try:
            if self._active and not handle.header[0] and self._pending:
                self._hand_over(self.current_step, snapshot=False, block=True)
            self._send_ready(wait=True)
            final: dict[str, Any] = {
                "status": "degraded" if self._error else status,
                "dropped_snapshots": self._prior_dropped + self._dropped,
                "stats": self._trainer_stats(),
            }
            if self._error:
                final["errors"] = [self._error]
            self._final = handle.close(final)
        finally:
            if self._cuda:
                handle.ring.unpin()
            self._release()
        error = self._final.get("error") if self._final else None
        if error or self._error:
            if self._active:
                self._disable(f"writer error: {error}")
            self._active, self.status = False, "degraded"
            if self._final and self._final.get("snapshots") is None:
                self._mark_degraded()  # the writer died before writing the final attrs
            if self.strict:
                raise CaptureError(f"capture failed: {self._error}")
            return
        self._active, self.status = False, status

    def _mark_degraded(self) -> None:
        try:
            self.root.update_attributes({"status": "degraded", "errors": [self._error]})
        except Exception as exc:  # the store may be the thing that broke
            log.error("dimlapse: could not mark the store degraded: %s", exc)

    def _release(self) -> None:
        _lock.release_lock(self.store, self._lease)
        self._lease = None

    def _trainer_stats(self) -> dict[str, Any]:
        return {
            "dropped": self._dropped,
            "train_thread_capture_seconds": self._train_seconds,
            "ring_wait_seconds": self._ring_wait,
            "writer": getattr(self, "writer_kind", None),
        }

    @property
    def stats(self) -> dict[str, Any]:
        """Capture statistics; the writer's figures (bytes, CPU) are known once closed."""
        final = self._final or {}
        snapshots = final.get("snapshots")
        return {
            "snapshots": self._captured if snapshots is None else snapshots,
            "bytes_raw": final.get("bytes_raw"),
            "bytes_stored": final.get("bytes_stored"),
            "compression_ratio": final.get("compression_ratio"),
            "writer_cpu_seconds": final.get("writer_cpu_seconds"),
            **self._trainer_stats(),
            "status": self.status,
        }

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close(status="crashed")
        except CaptureError as err:  # never mask the exception that ended training
            log.error("dimlapse: %s", err)

    def __del__(self) -> None:
        # garbage-collected without close(): flush and finish the run (a forked writer would
        # also finish on its own when the pipe closes, but as "crashed"). A collection can run
        # on any thread, zarr's own I/O loop included, and close() waits for a writer that may
        # need that very loop to flush: off the main thread a daemon thread closes it instead
        # (its reference keeps the object alive until then), so the collector never waits.
        if getattr(self, "_closed", True) or getattr(self, "_pid", None) != os.getpid():
            return
        log.warning("dimlapse: a Recorder was garbage-collected without close(); closing it")
        if threading.current_thread() is threading.main_thread():
            self._close_collected()
        else:
            threading.Thread(
                target=self._close_collected, name="dimlapse-close", daemon=True
            ).start()

    def _close_collected(self) -> None:
        try:
            self.close()
        except Exception as exc:
            log.error("dimlapse: closing a collected Recorder failed: %s", exc)

    def __repr__(self) -> str:
        return f"Recorder(store={self.store!r}, step={self.current_step}, status={self.status!r})"


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


def _stored_attr(store: Any, key: str, default: Any) -> Any:
    import zarr

    try:
        return zarr.open_group(store, mode="r", use_consolidated=False).attrs.get(key, default)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return default


def _stored_probe(store: Any) -> tuple[Any, Any]:
    import zarr

    try:
        root: Any = zarr.open_group(store, mode="r", use_consolidated=False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None, None
    if "probe" in root and any(True for _ in root["probe"].arrays()):
        return _store.read_probe(root)
    return None, None
