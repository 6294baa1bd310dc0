"""The Recorder: three lines in a training loop; on a capture step, one copy into a ring slot.

Data flow (docs/store-layout.md; README "How capture works")::

    rec.step() --copy into a free slot--> shared-memory ring (bytes-bounded)
        --> writer process: probe forward in its own copy of the model, spectra, chunk
            buffers, compression, Zarr writes --> run.zarr

The Recorder is a thin shell: it validates its arguments (the options are a
:class:`CaptureOptions`), checks the probe, and joins two objects of their own lifetimes, the
run session (``_session.py``: store, lease, attrs, resume, writer start and close) and the
hand-over (``_handover.py``: the hot path). Everything but the copy into the ring happens in
the writer (``writer/``), a separate process by default, so the training process's GIL is not
shared with Zarr, codecs or the probe forward.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import torch
from torch import nn

from . import _distributed, _exit, _logs, _sharded, _validate
from . import store as run_store
from ._handover import CaptureError, HandOver
from ._options import CaptureOptions, check_options
from ._schedule import Schedule, as_schedule, typical_interval
from ._select import select_params
from ._session import RunSession, projection
from .writer import DEFAULT_CODEC, SlotLayout, parse_codec

log = logging.getLogger("dimlapse.capture")
_REFUSALS = (
    run_store.RunExistsError,
    run_store.RunNotFoundError,
    run_store.RunLockedError,
    ValueError,
)
FLUSH_BYTES = 128 * 2**20  # target size of one flush's snapshot buffer
# rows per chunk of scalars/ at most (512 KiB of float64 per scalar): flush_every * every
# would make a chunk of 6.4e13 rows at every=10**12
MAX_SCALAR_CHUNK = 2**16
# scalar rows per hand-over message at most: bounds the ring's scalar area (CUDA values),
# whatever `every` is, and the bytes a message puts in the pipe
ROWS_PER_MESSAGE = 256

__all__ = ["CaptureError", "Recorder", "auto_flush_every"]


def auto_flush_every(model: nn.Module) -> int:
    """Snapshots per flush: about FLUSH_BYTES of parameters and buffers, clamped to [1, 64].

    Deterministic in the model, so a resumed run gets the same chunking. A model of over
    FLUSH_BYTES gets one snapshot per chunk, written straight from the ring slot (no chunk
    buffer in the writer).
    """
    tensors = [*model.parameters(), *model.buffers()]
    snapshot = sum(t.numel() * 4 for t in tensors) or 1  # stored as float32
    return max(1, min(64, FLUSH_BYTES // snapshot))


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
        The model being trained (DDP wrappers are unwrapped). A model sharded with FSDP2
        (``fully_shard``, also HSDP on a 2-D mesh) or parallelized with tensor parallelism
        (``parallelize_module`` on a 1-D mesh) is recorded by every rank of the job, each
        writing its local shards and its share of the probe's activations into one run
        (``_sharded.py``); pass the full probe on every rank.
    store : str, os.PathLike or zarr store
        Where the run goes: a local path or any fsspec URL. In-memory stores
        (``memory://``, store objects) are written from a thread instead of a process.
    every : int or callable
        Capture interval, or a schedule ``step -> bool`` (``every_n``, ``log_then_dense``).
    probe : torch.Tensor, dict or tuple of tensors, optional
        Fixed probe batch ``(n, ...)``, n >= 2; without one, no activations are recorded.
        It is run through the model once at construction: a probe the model cannot take is
        refused here, naming the module where it failed.
    probe_targets : torch.Tensor, optional
        Targets of the probe batch ``(n, ...)`` (stored).
    options : CaptureOptions, optional
        What is recorded and how: modules, parameters, mode, codec, chunking, ring size,
        backpressure, writer, strictness, distributed rank (default ``CaptureOptions()``).
    attrs : dict, optional
        JSON values merged into the root attrs (config, seed, dataset, ...); keys the
        Recorder owns (``status``, ``layout_version``, ...) are refused.
    overwrite, resume : bool
        Replace an existing run, or continue it after its last complete snapshot.
    start_step : int, optional
        Step number of the current model state (default 0, or the last snapshot on resume).

    Examples
    --------
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> with Recorder(model, "memory://doc.zarr", every=2, probe=torch.randn(8, 4)) as rec:
    ...     for _ in range(4):
    ...         captured = rec.step(loss=0.5)
    >>> rec.stats["snapshots"]
    3
    """

    _ho: HandOver  # the hand-over to the writer (set by __init__, or by _sharded.construct)

    def __init__(
        self,
        model: nn.Module,
        store: Any,
        *,
        every: int | Schedule = 5,
        probe: Any = None,
        probe_targets: torch.Tensor | None = None,
        options: CaptureOptions | None = None,
        attrs: dict[str, Any] | None = None,
        overwrite: bool = False,
        resume: bool = False,
        start_step: int | None = None,
    ) -> None:
        self._pid = os.getpid()
        self._final: dict[str, Any] | None = None
        opts = check_options(options)
        if not isinstance(model, nn.Module):
            raise ValueError(f"Expected `model` to be a torch.nn.Module, got {model!r}")
        store = run_store.check_location(store)  # before anything is touched
        model = _distributed.unwrap(model)
        if _sharded.is_sharded(model):  # DTensor parameters: every rank records its shards
            _sharded.construct(
                self, model, store, opts=opts, every=every, probe=probe,
                probe_targets=probe_targets, attrs=attrs, overwrite=overwrite, resume=resume,
                start_step=start_step,
            )  # fmt: skip
            _exit.watch_registrations(self._ho)
            _exit.OPEN.add(self)
            _exit.handle_sigterm()
            return
        _validate.materialised(model)
        this_rank, world = _distributed.rank_and_world()
        rank = opts.rank
        if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < world:
            raise ValueError(
                f"Expected `rank` to be the rank that records, in 0..{world - 1}, got {rank!r}"
            )
        self.model, self.store, self.options = model, store, opts
        self.strict, self.mode = opts.strict, opts.mode
        self._session = RunSession(store)
        self._ho = ho = HandOver(
            model, strict=opts.strict, world=world, average=bool(opts.average_scalars) and world > 1
        )
        if this_rank != rank:  # replicated weights: one rank records, the others do nothing
            ho.status, ho.closed, ho.noop = "other rank", False, True
            return
        self.schedule: Schedule = as_schedule(every)
        flush_every = opts.flush_every or auto_flush_every(model)
        if start_step is not None:
            _validate.positive_int("start_step", start_step, minimum=0)
        codec = opts.codec
        if codec is None:  # a resumed run keeps its codec; a new one gets the default
            codec = (
                run_store.stored_attr(store, "codec", DEFAULT_CODEC) if resume else DEFAULT_CODEC
            )
        codec = parse_codec(codec)
        if overwrite and resume:
            raise ValueError("Expected at most one of `overwrite`, `resume` to be True, got both")
        user_attrs = _validate.check_user_attrs(run_store.check_json(attrs))
        self.stored = select_params(model, opts.params)
        if resume and probe is None and self.mode != "weights":
            probe, probe_targets = run_store.stored_probe(store)  # continue with its own probe
        n_probe, self._taps = _validate.probe_taps(
            model,
            probe,
            probe_targets,
            modules=opts.modules,
            positions=opts.positions,
            tokens=opts.tokens,
            mode=self.mode,
        )
        self.modules: list[str] = list(self._taps)
        if self.mode == "full" and not self._taps:
            self.mode = "weights"  # nothing to record on a probe: say so in the store
        scalar_chunk = min(MAX_SCALAR_CHUNK, flush_every * typical_interval(self.schedule))
        per_message = min(scalar_chunk, ROWS_PER_MESSAGE)
        ho.bind(
            schedule=self.schedule,
            backpressure=opts.backpressure,
            scalar_chunk=per_message,
            timeout=opts.writer_timeout,
        )
        _exit.watch_registrations(ho)
        named = [*model.named_parameters(), *model.named_buffers()]
        state = [n for n in ho.names if n not in set(self.stored)]
        layout = SlotLayout.of(named, scalar_capacity=4 * per_message + 16)
        projected = projection(
            layout,
            stored=self.stored,
            taps=self._taps,
            schedule=self.schedule,
            mode=self.mode,
            codec=codec,
            full_every=opts.full_every,
            total_steps=opts.total_steps,
            store=store,
        )
        ho.closed = False
        try:
            self._session.open(
                overwrite=overwrite,
                resume=resume,
                codec=codec,
                flush_every=flush_every,
                probe=probe,
                timeout=opts.writer_timeout,
            )
            started = self._session.start(
                model=model, schedule=self.schedule, mode=self.mode, taps=self._taps,
                stored=self.stored, state=state, layout=layout, probe=probe,
                targets=probe_targets, n_probe=n_probe, codec=codec, flush_every=flush_every,
                scalar_chunk=scalar_chunk, full_every=opts.full_every, resume=resume,
                start_step=start_step, user_attrs=user_attrs,
                max_buffer_bytes=opts.max_buffer_bytes, writer=opts.writer,
                projected=projected, tensors=ho.tensors, cuda=ho.cuda,
                timeout=opts.writer_timeout,
            )  # fmt: skip
            self.mode, self._taps = started.mode, started.taps
            self.modules = list(self._taps)
            ho.handle, ho.t0 = self._session.handle, started.t0
            if ho.cuda:
                ho.stream = torch.cuda.Stream(ho.tensors[0].device)
            ho.current_step = (start_step or 0) if started.resume_at is None else started.resume_at
            ho.active = True
            _logs.start_line(
                store, mode=self.mode, codec=codec, writer=self.writer_kind, projected=projected
            )
            if started.recapture:  # step 0 (the initial state), or a resume point in between
                ho.capture(ho.current_step)
        except _REFUSALS:
            ho.closed = True
            self._session.release()
            raise
        except Exception as exc:
            ho.handle = self._session.handle  # a started writer is still closed by close()
            self._session.release()
            if opts.strict:
                ho.closed = True
                raise
            ho.disable(f"{type(exc).__name__}: {exc}")
            return
        _exit.OPEN.add(self)
        _exit.handle_sigterm()

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
        return self._ho.step(loss, scalars)

    @property
    def current_step(self) -> int:
        """The step of the model's current state (0 before the first :meth:`step`)."""
        return self._ho.current_step

    @property
    def status(self) -> str:
        """``running``, ``complete``, ``crashed``, ``degraded`` or ``other rank``."""
        return self._ho.status

    @property
    def writer_kind(self) -> str | None:
        """Where the writer runs: ``"process"`` or ``"thread"`` (None before it started)."""
        return self._session.writer_kind

    # -- closing -------------------------------------------------------------------------------
    def close(self, *, status: str = "complete") -> None:
        """Flush everything, stop the writer, mark the run ``complete`` (or ``status``)."""
        ho = self._ho
        if ho.closed:
            return
        ho.closed = True
        if ho.noop:
            return
        _exit.OPEN.discard(self)
        if ho.handle is None:
            ho.inactive()  # raises when strict
            return
        try:
            ho.flush()
            final: dict[str, Any] = {
                "status": "degraded" if ho.error else status,
                "dropped_snapshots": self._session.prior_dropped + ho.dropped,
                "stats": ho.stats(self.writer_kind),
            }
            if ho.error:
                final["errors"] = [ho.error]
            self._final = self._session.finish(final)
        finally:
            self._session.stop(unpin=ho.cuda)
        error = self._final.get("error") if self._final else None
        try:
            self._say_closed(status="degraded" if error or ho.error else status)
        except Exception as exc:  # a log line never fails a close
            log.debug("dimlapse: could not log the summary: %s", exc)
        if error or ho.error:
            if ho.active:
                ho.disable(f"writer error: {error}")
            ho.active, ho.status = False, "degraded"
            if self._final and self._final.get("snapshots") is None:
                self._session.mark_degraded(ho.error)  # the writer died before its final attrs
            if self.strict:
                raise CaptureError(f"capture failed: {ho.error}")
            return
        ho.active, ho.status = False, status

    def _say_closed(self, status: str) -> None:
        _logs.close_line(self.store, steps=self._ho.current_step, stats={**self.stats,
                         "status": status})  # fmt: skip

    @property
    def stats(self) -> dict[str, Any]:
        """Capture statistics; the writer's figures (bytes, CPU) are known once closed."""
        final = self._final or {}
        snapshots = final.get("snapshots")
        return {
            "snapshots": self._ho.captured if snapshots is None else snapshots,
            "bytes_raw": final.get("bytes_raw"),
            "bytes_stored": final.get("bytes_stored"),
            "compression_ratio": final.get("compression_ratio"),
            "writer_cpu_seconds": final.get("writer_cpu_seconds"),
            **self._ho.stats(self.writer_kind),
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
        ho = getattr(self, "_ho", None)
        if ho is None or ho.closed or getattr(self, "_pid", None) != os.getpid():
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
