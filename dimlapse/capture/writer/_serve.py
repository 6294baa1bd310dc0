"""The writer's loop, shared by the writer process and the fallback writer thread.

Messages from the training thread (in ring order)::

    ("s", slot, step, rows, has_snapshot)   scalar rows, and a snapshot in ``slot`` when set
    ("c", final)                            close: flush, write the final attrs, reply

Every slot is released (its semaphore count given back) once the writer is done with it,
also after an error, so the training thread never waits on a writer that has given up.

Failure policy: the first error stops processing; every snapshot already processed is
flushed ("flush what is good"), the run is marked ``degraded`` with the error, and the error
is reported to the training thread (``strict=True`` raises it there). If the training
process dies (kill -9 included), the pipe reports end-of-file (or the parent pid changes):
the writer flushes what it has, marks the run ``crashed`` and exits by itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from ..store import NOT_FOUND, consolidate, open_root, stored_bytes, utcnow
from ._chunks import quiet_numcodecs
from ._work import Worker

log = logging.getLogger("dimlapse.capture")

POLL_SECONDS = 0.5  # how often an idle writer checks that its trainer is alive


class Serve:
    """State of one writer: the worker, the failure flag, and the replies."""

    def __init__(
        self,
        make_worker: Callable[[], Worker],
        *,
        recv: Callable[[float], Any],
        reply: Callable[[Any], None],
        release: Callable[[], None],
        header: Any,
        cpu_time: Callable[[], float],
    ) -> None:
        self.make_worker = make_worker
        self.recv, self.reply, self.release = recv, reply, release
        self.header = header  # shared int64[4]: failed, processed, writer pid, unused
        self.cpu_time = cpu_time
        self.worker: Worker | None = None
        self.error: str | None = None
        self.errors: list[str] = []

    def run(self) -> None:
        try:
            self.worker = self.make_worker()
        except Exception as exc:
            self.fail(exc, None)
        t0 = self.cpu_time()  # writer CPU per snapshot excludes its start-up
        while True:
            try:
                msg = self.recv(POLL_SECONDS)
            except EOFError:  # the training process is gone: keep what is good
                log.error("dimlapse: the training process ended without closing the run")
                self.finish({"status": "crashed"}, t0)
                return
            if msg is None:
                continue
            if msg[0] == "c":
                self.reply(("closed", self.finish(msg[1], t0)))
                return
            _, slot, step, rows, has_snapshot = msg
            if self.error is None and self.worker is not None:
                try:
                    self.worker.rows(slot, rows)
                    if has_snapshot:
                        self.worker.snapshot(slot, step)
                        self._note_nonfinite()
                except Exception as exc:
                    self.fail(exc, step)
            self.release()
            self.header[1] += 1

    def _note_nonfinite(self) -> None:
        sink = self.worker.sink if self.worker else None
        if sink is not None and sink.nonfinite_dirty:  # a new array with NaN/Inf: say so now
            sink.attrs_group.update_attributes({"nonfinite": sink.nonfinite})
            sink.nonfinite_dirty = False

    def fail(self, exc: BaseException, step: int | None) -> None:
        """Stop processing after an error; keep (flush) every snapshot processed before it."""
        where = f" at step {step}" if step is not None else ""
        self.error = f"{type(exc).__name__}: {exc}{where}"
        self.errors.append(self.error)
        log.debug("dimlapse: writer error: %s", self.error)  # the trainer logs it, once
        self.reply(("error", self.error))
        self.header[0] = 1  # after the reply: a trainer seeing the flag finds the message
        if self.worker is None:
            return
        self.worker.sink.flush_what_is_good()
        try:
            self.worker.sink.attrs_group.update_attributes(
                {
                    "status": "degraded",
                    "errors": self.errors,
                    "nonfinite": self.worker.sink.nonfinite,
                }
            )
        except Exception as exc2:  # best effort: the store may be the thing that broke
            log.warning("dimlapse: could not mark the store degraded either: %s", exc2)

    def finish(self, final: dict[str, Any], t0: float) -> dict[str, Any]:
        """Flush, check the store still holds what was written, write the final attrs."""
        worker = self.worker
        if worker is None:
            return {"snapshots": 0, "error": self.error, "writer_cpu_seconds": 0.0}
        sink = worker.sink
        if self.error is None:
            try:
                sink.flush()
                self._verify(sink)
            except Exception as exc:
                self.fail(exc, None)
        status = "degraded" if self.error is not None else final.get("status", "complete")
        stats = {
            "snapshots": sink.snapshots,
            "bytes_raw": sink.bytes_raw,
            # a sharded rank's groups hold every rank's chunks: rank 0 sizes the whole run
            "bytes_stored": stored_bytes(sink.root, list(sink.groups))
            if sink.shard is None
            else None,
            "writer_cpu_seconds": self.cpu_time() - t0,
            "error": self.error,
        }
        attrs = {k: v for k, v in final.items() if k != "stats"}
        stats_all = {**final.get("stats", {}), **stats, "status": status}
        raw, stored = stats_all.get("bytes_raw"), stats_all.get("bytes_stored")
        stats_all["compression_ratio"] = raw / stored if raw and stored else None
        try:
            prior: Any = sink.attrs_group.attrs.get("contents")
            contents = dict(prior) if isinstance(prior, dict) else {}
            if self.error is None:  # what a reader must find: every array, every row
                with quiet_numcodecs():  # listing arrays parses a bitround codec's metadata
                    contents["arrays"] = {
                        n: sorted(g.group.array_keys()) for n, g in sink.groups.items()
                    }
                contents["rows"] = {n: g.rows for n, g in sink.groups.items()}
            sink.attrs_group.update_attributes(
                {
                    **attrs,
                    "contents": contents,
                    "status": status,
                    "finished": utcnow(),
                    "nonfinite": sink.nonfinite,
                    "errors": [*final.get("errors", []), *self.errors],
                    "stats": stats_all,
                }
            )
            if sink.shard is not None and sink.shard.rank == 0 and status != "complete":
                sink.root.update_attributes({"status": status})  # a job ends complete only
                # when every rank did: rank 0's Recorder says so after its closing barrier
            if self.error is None and sink.shard is None:
                consolidate(sink.root)
        except Exception as exc:
            log.error("dimlapse: could not finalise the store: %s", exc)
            self.error = self.error or f"{type(exc).__name__}: {exc}"
            stats_all["status"] = "degraded"
        stats_all["error"] = self.error
        return stats_all

    def _verify(self, sink: Any) -> None:
        """A store that vanished or lost rows under us (deleted directory, ...) is an error."""
        store = sink.root.store
        try:
            root: Any = open_root(store, path=sink.root.path, mode="r")
        except NOT_FOUND as exc:
            raise FileNotFoundError(
                f"the run store vanished while being written (deleted or unmounted?): {exc}"
            ) from exc
        for name, group in sink.groups.items():
            where = group.group.path.removeprefix(sink.root.path).lstrip("/")
            if where not in root or "step" not in root[where]:
                raise FileNotFoundError(f"the store lost its {name!r} group while being written")
            n = root[where]["step"].shape[0]
            if n != group.rows:
                raise OSError(
                    f"the store's {name!r} group holds {n} rows, {group.rows} were written"
                )


def parent_watch(recv: Callable[[float], Any]) -> Callable[[float], Any]:
    """Wrap a pipe's poll+recv so a changed parent pid also counts as end-of-file."""
    parent = os.getppid()

    def wrapped(timeout: float) -> Any:
        msg = recv(timeout)
        if msg is None and os.getppid() != parent:
            raise EOFError("the training process is gone")
        return msg

    return wrapped
