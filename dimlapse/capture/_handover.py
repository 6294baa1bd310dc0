"""The hand-over: the Recorder's hot path on the training thread.

Every step, :meth:`HandOver.step` validates the scalars and queues one row; on a capture step
it copies every parameter and buffer into a free slot of the shared-memory ring (one
``_foreach_copy_``, no allocation; on CUDA device-to-pinned-host copies on a side stream) and
tells the writer. Pending scalar rows ride along with the next message. Nothing else happens
here: the probe forward, spectra and Zarr writes are the writer's (``writer/``).

It also holds the state of capture as the training thread sees it (``active``, ``status``,
``error``): a writer failure seen here disables capture with one logged error, or raises
(``strict``).
"""

from __future__ import annotations

import logging
import operator
import time
from typing import Any

import torch
from torch import nn

from . import _distributed, _validate
from ._schedule import Schedule
from .writer import SlotValue, WriterHandle

log = logging.getLogger("dimlapse.capture")


class CaptureError(RuntimeError):
    """Capture failed (raised on the training thread when ``strict=True``, or on misuse)."""


class HandOver:
    """Scalar rows and snapshots from the training thread into the writer's ring.

    Parameters
    ----------
    model : torch.nn.Module
        The (unwrapped) model being trained.
    strict : bool
        Raise :class:`CaptureError` on a writer error instead of degrading.
    world : int
        Ranks of the ``torch.distributed`` job (1 outside one).
    average : bool
        Average each scalar row over the ranks (every rank calls :meth:`step`).
    """

    def __init__(self, model: nn.Module, *, strict: bool, world: int, average: bool) -> None:
        self.model, self.strict = model, strict
        self.closed, self.noop, self.active = True, False, False
        self.status: str = "running"
        self.error: str | None = None
        self.scalar_names: set[str] = {"loss"}
        self.world, self.average = world, average
        self.device = next(model.parameters(), torch.zeros(())).device
        self.current_step = 0
        self.handle: WriterHandle | None = None
        self.dropped = self.captured = self.dropped_rows = 0
        self.train_seconds = self.ring_wait = 0.0
        # sharded models: run at every capture step on every rank, also with capture off
        # (FSDP2's forward is a collective; ``_sharded.ShardedHandOver``)
        self.lockstep: Any = None

    def bind(
        self, *, schedule: Schedule, backpressure: str, scalar_chunk: int, timeout: float = 60.0
    ) -> None:
        """Record this rank: what a snapshot copies (every parameter and buffer, in order).

        ``scalar_chunk``: pending scalar rows that make a message of their own; ``timeout``:
        seconds a blocked hand-over waits for a writer that makes no progress."""
        self.timeout = timeout
        named = [*self.model.named_parameters(), *self.model.named_buffers()]
        self.schedule, self.backpressure, self.scalar_chunk = schedule, backpressure, scalar_chunk
        self.names = [n for n, _ in named]
        self.tensors = [t for _, t in named]  # what a snapshot copies, in this order
        self.live = [*self.model.parameters(), *self.model.buffers()]  # to notice replacements
        self.maybe_changed = False  # set by torch's registration hooks (see _exit.py)
        self.cuda = bool(self.tensors) and self.tensors[0].device.type == "cuda"
        self.t0 = 0.0  # perf_counter at the run's creation: wall_time's origin
        self.pending: list[tuple[int, dict[str, Any]]] = []
        self.inflight: list[tuple[Any, tuple[Any, ...], Any]] = []  # CUDA copies in flight
        self.stream: Any = None

    def disable(self, error: str) -> None:
        """Stop capturing after an error; training continues."""
        self.active, self.status, self.error = False, "degraded", error
        log.error(
            "dimlapse: capture disabled: %s. Training continues (pass strict=True to raise "
            "instead); everything recorded before is kept.",
            error,
        )

    # -- the training-thread API -------------------------------------------------------------
    def step(self, loss: Any, scalars: dict[str, Any]) -> bool:
        """:meth:`Recorder.step <dimlapse.capture.Recorder.step>`'s body."""
        t0 = time.perf_counter()  # the hot path: keep it to a few microseconds
        if self.closed:
            raise CaptureError(
                "Recorder.step() was called after close(); construct a new Recorder (or pass "
                "resume=True) to record more steps"
            )
        row: dict[str, Any] = {}
        if scalars:  # validated before anything is recorded: a bad name records nothing
            for k, v in scalars.items():
                if k not in self.scalar_names:
                    self.scalar_names.add(_validate.check_scalar_name(k))
                row[k] = _validate.scalar_value(k, v)
        if loss is not None:
            row["loss"] = _validate.scalar_value("loss", loss)
        if self.average:  # every rank joins, in the same order
            row = _distributed.average(row, world=self.world, device=self.device)
        self.current_step = step = self.current_step + 1
        if self.noop:
            return False
        if self.lockstep is not None and self.schedule(step):
            self.lockstep(step)
        if not self.active:
            return self.inactive()
        handle = self.handle
        if handle is None or handle.header[0]:
            return self.inactive()
        row["wall_time"] = t0 - self.t0
        self.pending.append((step, row))
        if self.inflight:
            self.send_ready(wait=False)
        captured = self.schedule(step)
        if captured:
            captured = self.capture(step)
        elif len(self.pending) >= self.scalar_chunk:
            self.hand_over(step, snapshot=False, block=self.backpressure == "block")
        self.train_seconds += time.perf_counter() - t0
        return bool(captured)

    def inactive(self) -> bool:
        """Capture is off: notice a writer failure, raise it when strict; records nothing."""
        handle = self.handle
        if handle is not None and handle.header[0] and self.active:
            self.disable(f"writer error: {handle.read_error() or 'the writer failed'}")
        if self.strict and self.error is not None:
            raise CaptureError(f"capture failed: {self.error}")
        return False

    def _params_changed(self) -> bool:
        """Whether any parameter or buffer object was replaced or added (identity check:
        microseconds per capture for the study's MLP)."""
        live = [*self.model.parameters(), *self.model.buffers()]
        return len(live) != len(self.live) or not all(map(operator.is_, live, self.live))

    def _reresolve(self) -> bool:
        """The model's parameters were replaced: follow them by name, or stop capture."""
        named = dict([*self.model.named_parameters(), *self.model.named_buffers()])
        handle = self.handle
        assert handle is not None  # only called while capturing
        layout = handle.ring.layout  # the shapes and dtypes the run was started with
        old = {
            n: (s, d) for n, s, d in zip(layout.names, layout.shapes, layout.dtypes, strict=True)
        }
        gone = [n for n in self.names if n not in named]
        changed = [
            n for n in self.names
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
            self.disable(
                f"the model's parameters changed after the Recorder was constructed ({what}); "
                "the run keeps every snapshot before it. Record the changed model into a new run"
            )
            self.inactive()
            return False
        added = [n for n in named if n not in old]
        if added:
            log.warning(
                "dimlapse: parameters %s were added to the model after the Recorder was "
                "constructed and are not recorded; construct the Recorder after the model is "
                "complete to record them",
                added,
            )
        self.tensors = [named[n] for n in self.names]
        self.live = [*self.model.parameters(), *self.model.buffers()]
        log.info("dimlapse: model parameters were replaced; recording the new ones by name")
        return True

    def capture(self, step: int) -> bool:
        """Hand the snapshot of ``step`` (and the pending rows) to the writer."""
        if self.maybe_changed:  # set by torch's registration hooks (see _exit.py)
            self.maybe_changed = False
            if self._params_changed() and not self._reresolve():
                return False
        return self.hand_over(step, snapshot=True, block=self.backpressure == "block")

    def hand_over(self, step: int, *, snapshot: bool, block: bool) -> bool:
        """Copy a snapshot (and/or the pending scalar rows) into a free slot; tell the writer."""
        handle = self.handle
        assert handle is not None  # only called while active
        t0 = time.perf_counter()
        slot = handle.acquire(block=block)
        self.ring_wait += time.perf_counter() - t0
        if slot is None:
            if handle.header[0]:
                return self.inactive()
            self.dropped += snapshot  # pending scalar rows go with the next message
            if len(self.pending) > 4 * self.scalar_chunk:  # "drop" holds a bounded backlog
                cut = len(self.pending) - 2 * self.scalar_chunk
                self.pending, self.dropped_rows = self.pending[cut:], self.dropped_rows + cut
            return False
        rows, self.pending = self.pending, []
        try:
            if self.cuda:
                self._copy_cuda(slot, step, rows, snapshot)
            else:
                if snapshot and self.tensors:  # a sharded rank may hold nothing it writes
                    with torch.no_grad():
                        torch._foreach_copy_(handle.ring.views[slot], self.tensors)
                if not handle.send(("s", slot, step, rows, snapshot)):
                    return self.inactive()  # the writer is gone
        except RuntimeError:  # a parameter changed shape or dtype in place (``.data = ...``)
            if not handle.send(("s", slot, step, rows, False)):  # keep the rows, free the slot
                return self.inactive()
            if self._reresolve():
                raise  # not a change of the model: a real error
            return False
        self.captured += snapshot
        return True

    def _copy_cuda(self, slot: int, step: int, rows: list[Any], snapshot: bool) -> None:
        """Device-to-pinned-host copies on a side stream; the message is sent once they are
        done (checked without blocking at later steps). The training stream waits for the
        copies on the device only, before the next optimizer step can change a parameter."""
        handle = self.handle
        assert handle is not None and self.stream is not None
        stream, main = self.stream, torch.cuda.current_stream()
        values = [(i, k, v) for i, (_, r) in enumerate(rows) for k, v in r.items()
                  if isinstance(v, torch.Tensor)]  # fmt: skip
        keep: Any = None
        stream.wait_stream(main)
        with torch.cuda.stream(stream), torch.no_grad():
            if snapshot and self.tensors:
                torch._foreach_copy_(handle.ring.views[slot], self.tensors, non_blocking=True)
            if values:
                keep = torch.stack([v.reshape(()).to(torch.float64) for _, _, v in values])
                handle.ring.scalars[slot][: len(values)].copy_(keep, non_blocking=True)
        main.wait_stream(stream)
        for j, (i, k, _) in enumerate(values):
            rows[i][1][k] = SlotValue(j)
        event = torch.cuda.Event()
        event.record(stream)
        self.inflight.append((event, ("s", slot, step, rows, snapshot), keep))

    def send_ready(self, *, wait: bool) -> None:
        """Send the messages whose CUDA copies are done (all of them when ``wait``)."""
        handle = self.handle
        while self.inflight and handle is not None:
            event, msg, _ = self.inflight[0]
            if not wait and not event.query():
                return
            event.synchronize()
            self.inflight.pop(0)
            if not handle.send(msg):
                self.inflight.clear()
                self.inactive()
                return

    def flush(self) -> None:
        """Before close: hand over the pending rows, wait for the CUDA copies in flight."""
        handle = self.handle
        assert handle is not None
        if self.active and not handle.header[0] and self.pending:
            self.hand_over(self.current_step, snapshot=False, block=True)
        self.send_ready(wait=True)

    def stats(self, writer_kind: str | None) -> dict[str, Any]:
        """The training thread's share of the capture statistics."""
        return {
            "dropped": self.dropped,
            "dropped_scalar_rows": self.dropped_rows,
            "train_thread_capture_seconds": self.train_seconds,
            "ring_wait_seconds": self.ring_wait,
            "writer": writer_kind,
        }
