"""The Recorder: three lines in a training loop, everything heavy off the training thread."""

from __future__ import annotations

import datetime as dt
import logging
import queue
import time
from typing import Any

import torch
from torch import nn

from . import _setup, _store
from .writer._chunks import parse_codec
from ._schedule import Schedule, as_schedule, typical_interval
from ._select import ModuleSelector, ParamSelector, make_taps, select_modules, select_params
from .writer._sink import Item, SnapshotSink, WriterThread

log = logging.getLogger("dimlapse.capture")
_REFUSALS = (_store.RunExistsError, _store.RunNotFoundError, ValueError)


FLUSH_BYTES = 128 * 2**20  # target size of one flush's snapshot buffer


def auto_flush_every(model: nn.Module) -> int:
    """Snapshots per flush: about FLUSH_BYTES of parameters and buffers, clamped to [4, 64].

    Deterministic in the model, so a resumed run gets the same chunking.
    """
    tensors = [*model.parameters(), *model.buffers()]
    snapshot = sum(t.numel() * 4 for t in tensors) or 1  # stored as float32
    return max(4, min(64, FLUSH_BYTES // snapshot))


class CaptureError(RuntimeError):
    """Capture failed on the writer thread (raised on the training thread when strict=True)."""


class Recorder:
    """Record weights, probe activations and scalars of a training run into a Zarr store.

    Construct it before training (this captures step 0, the initial state), call
    :meth:`step` after every ``optimizer.step()``, and :meth:`close` it (or use ``with``).
    The training thread only clones parameters and buffers on capture steps and enqueues
    them; the probe forward (in a shadow copy of the model), compression and writes run on
    one writer thread. See docs/store-layout.md for what is written.

    Parameters
    ----------
    model : torch.nn.Module
        The model being trained.
    store : str, os.PathLike or zarr store
        Where the run goes: a local path, any fsspec URL (``memory://run.zarr``) or a store.
    every : int or callable
        Capture interval, or a schedule ``step -> bool`` (``every_n``, ``log_then_dense``).
    probe : torch.Tensor, optional
        Fixed probe batch ``(n, ...)``; without one, no activations are recorded.
    probe_targets : torch.Tensor, optional
        Targets of the probe batch (stored).
    modules : None, list of types, glob str, list of globs or callable
        Modules whose outputs are recorded (default: Linear, Conv1d/2d, MultiheadAttention,
        transformer layers, Embedding).
    params : str, list of str, callable or None
        Parameter globs (among parameters with ndim >= 2), or ``callable(name, param)``.
    activations : bool
        False records weights only (replay activations later with :func:`replay`).
    positions, tokens : int
        Spatial positions / token positions sampled (fixed, seeded) per module.
    flush_every : int, optional
        Snapshots per chunk and flush. Default: as many as fit in about 128 MiB of
        parameters and buffers, between 4 and 64 (64 for the study's MLP). Fewer, larger
        flushes cost the training thread less (each flush is a burst of Zarr work on the
        writer thread); a crash loses at most the snapshots of the flush in progress.
    queue_size : int
        Snapshots held in the bounded queue.
    backpressure : {"block", "drop"}
        When the queue is full: wait, or drop the snapshot and count it.
    codec : str
        ``zstd`` (lossless), ``none``, ``float16`` or ``bitround-<bits>``.
    overwrite, resume : bool
        Replace an existing store, or continue it after its last complete snapshot.
    start_step : int, optional
        Step number of the current model state (default 0, or the last snapshot on resume).
    strict : bool
        Re-raise writer errors on the training thread instead of degrading.
    attrs : dict, optional
        JSON values merged into the root attrs (config, seed, dataset, ...).

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
        probe: torch.Tensor | None = None,
        probe_targets: torch.Tensor | None = None,
        modules: ModuleSelector = None,
        params: ParamSelector = "*",
        activations: bool = True,
        positions: int = 16,
        tokens: int = 4,
        flush_every: int | None = None,
        queue_size: int = 64,
        backpressure: str = "block",
        codec: str = "zstd",
        overwrite: bool = False,
        resume: bool = False,
        start_step: int | None = None,
        strict: bool = False,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"Expected `model` to be a torch.nn.Module, got {model!r}")
        self.schedule: Schedule = as_schedule(every)
        if flush_every is None:
            flush_every = auto_flush_every(model)
        checks = {"positions": positions, "tokens": tokens, "flush_every": flush_every}
        for name, value in {**checks, "queue_size": queue_size}.items():
            _setup.positive_int(name, value)
        if start_step is not None:
            _setup.positive_int("start_step", start_step, minimum=0)
        if backpressure not in ("block", "drop"):
            raise ValueError(
                f"Expected `backpressure` to be 'block' or 'drop', got {backpressure!r}"
            )
        codec = parse_codec(codec)
        if probe is not None and not isinstance(probe, torch.Tensor):
            raise ValueError(f"Expected `probe` to be a tensor (n, ...) or None, got {probe!r}")
        if probe_targets is not None and (
            not isinstance(probe_targets, torch.Tensor)
            or probe is None
            or probe_targets.shape[:1] != probe.shape[:1]
        ):
            raise ValueError(
                "Expected `probe_targets` to be a tensor with one entry per probe example "
                f"({None if probe is None else probe.shape[0]}), got {probe_targets!r:.80}"
            )
        if overwrite and resume:
            raise ValueError("Expected at most one of `overwrite`, `resume` to be True, got both")
        user_attrs = _store.check_json(attrs)
        self.model, self.store, self.strict = model, store, strict
        self._backpressure, self._flush_every, self._codec = backpressure, flush_every, codec
        self.stored = select_params(model, params)
        self._want_activations = activations
        self._select = (modules, positions, tokens)
        if activations:
            select_modules(model, modules)  # validate now, before any store is touched
        params_all = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        self._names = [*params_all, *buffers]  # what a snapshot clones, in this order
        self._tensors = [*params_all.values(), *buffers.values()]
        self._state = [n for n in self._names if n not in set(self.stored)]
        self.current_step = 0
        self._pending: list[tuple[int, dict[str, Any]]] = []
        self._scalar_chunk = flush_every * typical_interval(self.schedule)
        self._queue: queue.Queue[Item | None] = queue.Queue(maxsize=queue_size)
        self._dropped, self._train_seconds, self._queue_wait = 0, 0.0, 0.0
        self._closed, self._active, self.status = False, True, "running"
        self._writer: WriterThread | None = None
        self._sink: SnapshotSink | None = None
        self._error: BaseException | None = None
        self._bytes_stored: int | None = None
        self._prior_dropped = 0
        self.modules: list[str] = []
        try:
            self.root = _store.open_store(store, overwrite=overwrite, resume=resume)
            if resume:
                _setup.check_resumable(self.root, codec=codec, flush_every=flush_every, probe=probe)
            self._start(probe, probe_targets, resume, start_step, user_attrs)
        except _REFUSALS:
            raise
        except Exception as exc:
            if strict:
                raise
            self._disable(exc)
            return
        _setup._OPEN.add(self)

    def _disable(self, exc: BaseException) -> None:
        self._active, self.status, self._error = False, "degraded", exc
        msg = "dimlapse: capture disabled, store error at %r: %s: %s. Training continues (pass "
        log.error(msg + "strict=True to raise instead).", self.store, type(exc).__name__, exc)

    def _start(
        self,
        probe: torch.Tensor | None,
        targets: torch.Tensor | None,
        resume: bool,
        start_step: int | None,
        user_attrs: dict[str, Any],
    ) -> None:
        root: Any = self.root
        prior: dict[str, Any] = dict(root.attrs) if resume else {}
        if resume and probe is None and "probe" in root and "inputs" in root["probe"]:
            probe, targets = _store.read_probe(root)  # continue with the run's own probe
        modules, positions, tokens = self._select
        if resume and prior.get("activations") is False:
            self._want_activations = False  # a weights-only run stays weights-only
        chosen = (
            select_modules(self.model, modules)
            if self._want_activations and probe is not None
            else []
        )
        self.modules = [n for n, _ in chosen]
        self._taps = make_taps(self.model, chosen, positions=positions, tokens=tokens)
        groups = ("scalars", "weights", "state") + (("activations",) if self._taps else ())
        self._sink = sink = SnapshotSink(
            root,
            chunk=self._flush_every,
            scalar_chunk=self._scalar_chunk,
            codec=self._codec,
            probe_examples=0 if probe is None else int(probe.shape[0]),
            groups=groups,
        )
        resume_at, recapture = _setup.trim_for_resume(sink, start_step) if resume else (None, True)
        created = prior.get("created", _store.utcnow())
        self._t0 = time.perf_counter() - (
            time.time() - dt.datetime.fromisoformat(created).timestamp()
        )
        attrs = _setup.root_attrs(
            model=self.model,
            schedule=self.schedule,
            probe=probe,
            has_targets=targets is not None,
            codec=self._codec,
            flush_every=self._flush_every,
            scalar_chunk=self._scalar_chunk,
            modules=self.modules,
            params=self.stored,
            user_attrs=user_attrs,
            prior=prior,
            created=created,
        )
        if resume:
            attrs["resumed"] = [*prior.get("resumed", []), {"at_step": resume_at}]
            sink.nonfinite = dict(attrs["nonfinite"])
        self._prior_dropped = int(prior.get("dropped_snapshots", 0))
        root.update_attributes(attrs)
        if probe is not None and not (resume and "probe" in root):
            _store.write_probe(root, probe, targets)
        shadow = _setup.make_shadow(self.model) if self._taps else None
        self._inline = bool(self._taps) and shadow is None
        device = self._tensors[0].device if self._tensors else torch.device("cpu")
        self._cuda = device.type == "cuda"
        self._probe = None if probe is None else probe.to(device)
        self._writer = WriterThread(
            sink,
            self._queue,
            names=self._names,
            stored=self.stored,
            state=self._state,
            shadow=shadow,
            taps={} if self._inline else self._taps,
            probe=self._probe,
            device=device,
        )
        self._writer.start()
        self.current_step = (start_step or 0) if resume_at is None else resume_at
        if recapture:  # step 0 (the initial state), or a resume point between snapshots
            self._capture(self.current_step)

    # -- the training-thread API -------------------------------------------------------------
    def step(self, loss: Any = None, **scalars: Any) -> bool:
        """Record one optimizer step; snapshot it when the schedule says so.

        Call after ``optimizer.step()``. ``loss`` and extra ``scalars`` (numbers or
        one-element tensors, kept on their device) are recorded for every step.

        Returns
        -------
        bool
            Whether this step was captured (queued for writing).
        """
        t0 = time.perf_counter()  # the hot path: keep it to a few microseconds
        self.current_step = step = self.current_step + 1
        if not self._active or self._writer is None or self._writer.failed:
            return self._inactive()
        row = {k: _setup.scalar_value(k, v) for k, v in scalars.items()} if scalars else {}
        if loss is not None:
            row["loss"] = _setup.scalar_value("loss", loss)
        row["wall_time"] = t0 - self._t0
        self._pending.append((step, row))
        captured = self.schedule(step)
        if captured:
            captured = self._capture(step)
        elif len(self._pending) >= self._scalar_chunk:
            self._put(Item(step, scalars=self._pending, event=self._event()), block=True)
            self._pending = []
        self._train_seconds += time.perf_counter() - t0
        return bool(captured)

    def _event(self) -> Any:
        """CUDA: an event after the work queued so far; the writer's stream waits on it."""
        if not self._cuda:
            return None
        event = torch.cuda.Event()
        event.record()
        return event

    def _inactive(self) -> bool:
        writer = self._writer
        if writer is not None and writer.failed:
            self._active, self.status, self._error = False, "degraded", writer.error
        if self.strict and self._error is not None:
            raise CaptureError(f"capture failed: {self._error}") from self._error
        return False

    def _capture(self, step: int) -> bool:
        if self._backpressure == "drop" and self._queue.full():
            self._dropped += 1
            return False
        acts = None
        with torch.no_grad():
            tensors = [t.detach().clone() for t in self._tensors]  # device-side copy
            if self._inline:
                probe = self._probe
                assert probe is not None  # inline mode implies a probe
                acts = _setup.inline_forward(self.model, probe, self._taps, cuda=self._cuda)
        item = Item(
            step, tensors=tensors, activations=acts, scalars=self._pending, event=self._event()
        )
        if not self._put(item, block=self._backpressure == "block"):
            self._dropped += 1
            return False
        self._pending = []
        return True

    def _put(self, item: Item, *, block: bool) -> bool:
        if not block:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                return False
            return True
        t0 = time.perf_counter()
        self._queue.put(item)
        self._queue_wait += time.perf_counter() - t0
        return True

    # -- closing -------------------------------------------------------------------------------
    def close(self, *, status: str = "complete") -> None:
        """Flush everything, stop the writer, mark the run ``complete`` (or ``status``)."""
        if self._closed:
            return
        self._closed = True
        _setup._OPEN.discard(self)
        writer = self._writer
        if writer is None:
            self._inactive()  # raises when strict
            return
        if self._pending and not writer.failed:
            item = Item(self.current_step, scalars=self._pending, event=self._event())
            self._put(item, block=True)
            self._pending = []
        self._queue.put(None)
        writer.join()
        if writer.failed:
            self._inactive()  # degraded; raises when strict
            return
        self.status = status
        sink = self._sink
        assert sink is not None  # a started writer implies a sink
        self._bytes_stored = _setup.stored_bytes(self.root, list(sink.groups))
        final: dict[str, Any] = {"status": status, "finished": _store.utcnow()}
        final["nonfinite"] = sink.nonfinite
        final["dropped_snapshots"] = self._prior_dropped + self._dropped
        try:
            self.root.update_attributes({**final, "stats": self.stats})
            _setup.consolidate(self.root)
        except Exception as exc:
            writer.fail(exc, None)
            self.status = "degraded"
            if self.strict:
                raise CaptureError(f"could not finalise the store: {exc}") from exc

    @property
    def stats(self) -> dict[str, Any]:
        """Capture statistics (bytes_stored is known once the recorder is closed)."""
        sink = self._sink
        raw = sink.bytes_raw if sink is not None else 0
        stored = self._bytes_stored
        return {
            "snapshots": sink.snapshots if sink is not None else 0,
            "dropped": self._dropped,
            "bytes_raw": raw,
            "bytes_stored": stored,
            "compression_ratio": raw / stored if stored else None,
            "train_thread_capture_seconds": self._train_seconds,
            "queue_wait_seconds": self._queue_wait,
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

    def __repr__(self) -> str:
        return f"Recorder(store={self.store!r}, step={self.current_step}, status={self.status!r})"
