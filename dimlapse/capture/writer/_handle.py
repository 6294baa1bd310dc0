"""Starting a writer and talking to it from the training thread.

:func:`start_writer` starts the writer as a separate *process* (no share of the training
process's GIL: a busy Python thread in the training process slowed the study MLP 1.22-1.65x,
a separate process doing the same work 0.98-1.00x; README "Measured"). On CPU the process is
forked (the shadow model and probe are inherited, nothing is pickled, the user's ``__main__``
is not re-imported); on CUDA it is spawned (CUDA cannot be used in a forked child), which
needs a picklable model and a ``if __name__ == "__main__":`` guard. It falls back to a writer
*thread* in the training process, with one logged warning saying why, when a process cannot
be used: an in-memory store (``memory://`` or a store object), a model that cannot be
pickled for spawning, or a platform without ``fork``.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
import zarr

from ..store import open_root
from ._ring import Ring
from ._serve import Serve, parent_watch
from ._sink import SnapshotSink
from ._work import Worker, WorkSpec

log = logging.getLogger("dimlapse.capture")


class WriterHandle:
    """The training thread's side: free slots, messages, failure flag, close."""

    def __init__(
        self,
        ring: Ring,
        *,
        send: Callable[[Any], None],
        acquire: Callable[[bool, float | None], bool],
        poll_reply: Callable[[float], Any],
        header: torch.Tensor,
        alive: Callable[[], bool],
        kind: str,
        join: Callable[[float], None],
        timeout: float = 60.0,
    ) -> None:
        self.ring, self._send, self._acquire = ring, send, acquire
        self._poll_reply, self.header, self._alive, self._join = poll_reply, header, alive, join
        self.kind = kind  # "process" | "thread"
        self.process: Any = None  # the writer process (process writers)
        self.timeout = timeout  # seconds without progress before the writer is given up
        self.next_slot = 0
        self.error: str | None = None
        self.closed = False

    @property
    def failed(self) -> bool:
        return bool(self.header[0])

    def _give_up(self, error: str) -> None:
        """The writer died or stalled: raise the failure flag with ``error`` (kept if set)."""
        self.error = self.error or error
        self.header[0] = 1

    def _stalled(self) -> str:
        pid = f" (pid {self.process.pid})" if self.process is not None else ""
        return (
            f"the writer{pid} made no progress for {self.timeout:g} s (stopped or hung; "
            "CaptureOptions.writer_timeout sets this bound)"
        )

    def acquire(self, *, block: bool) -> int | None:
        """The next free slot in ring order, or None: ``block=False`` and the ring is full, or
        the writer died or made no progress (processed no message) for ``timeout`` s."""
        if not block:
            if not self._acquire(False, None):
                if not self._alive():  # a dead writer frees no slot: say so, once
                    self._give_up("the writer process died")
                return None
        else:
            seen, since = int(self.header[1]), time.monotonic()
            while not self._acquire(True, 1.0):  # a dead or stopped writer must not hang us
                if not self._alive():
                    self._give_up("the writer process died")
                    return None
                if int(self.header[1]) != seen:
                    seen, since = int(self.header[1]), time.monotonic()
                elif time.monotonic() - since > self.timeout:
                    self._give_up(self._stalled())
                    return None
        slot = self.next_slot
        self.next_slot = (slot + 1) % self.ring.n_slots
        return slot

    def send(self, msg: Any) -> bool:
        """Send one message; False (and the failure flag raised) when the writer is gone."""
        try:
            self._send(msg)
        except (OSError, EOFError, ValueError) as exc:  # BrokenPipeError: a killed writer
            self._give_up(f"the writer process died ({type(exc).__name__}: {exc})")
            return False
        return True

    def read_error(self) -> str | None:
        """The writer's error message, once it has reported one."""
        while self.error is None:
            reply = self._poll_reply(1.0)
            if reply is None:
                break
            if reply[0] == "error":
                self.error = reply[1]
        return self.error

    def close(self, final: dict[str, Any]) -> dict[str, Any]:
        """Ask the writer to flush and finalise; wait for its stats.

        The wait ends when the writer replies, dies, or makes no progress for ``timeout``
        seconds (a stalled writer process is then ended: it holds nothing the store needs,
        as the step index written last keeps every complete row readable).
        """
        self.closed = True
        dead = {"error": self.error or "the writer process died", "snapshots": None}
        if not self._alive():
            self.header[0] = 1
            return dead
        if self.header[0] and self.error and "no progress" in self.error:
            self._end()  # already given up as stalled: do not wait again
            return {"error": self.error, "snapshots": None}
        if not self.send(("c", final)):
            return {"error": self.error, "snapshots": None}
        seen, since = int(self.header[1]), time.monotonic()
        while True:
            reply = self._poll_reply(1.0)
            if reply is not None and reply[0] == "error":
                self.error = self.error or reply[1]
                since = time.monotonic()
                continue
            if reply is not None and reply[0] == "closed":
                self._join(10.0)
                return dict(reply[1])
            if not self._alive():
                self.header[0] = 1
                return {**dead, "error": self.error or dead["error"]}
            if int(self.header[1]) != seen:  # still draining the ring
                seen, since = int(self.header[1]), time.monotonic()
            elif time.monotonic() - since > self.timeout:
                self._give_up(self._stalled())
                self._end()
                return {"error": self.error, "snapshots": None}

    def _end(self) -> None:
        """End a stalled writer process (SIGKILL also ends a stopped one); a thread cannot be."""
        if self.process is not None and self.process.is_alive():
            log.warning("dimlapse: ending the stalled writer process %d", self.process.pid)
            self.process.kill()
            self.process.join(5.0)


def _open_sink(root: zarr.Group, sink_kwargs: dict[str, Any]) -> SnapshotSink:
    sink = SnapshotSink(root, **sink_kwargs)
    sink.reload()
    return sink


def _writer_main(
    store: Any,
    path: str,
    ring: Ring,
    spec: WorkSpec,
    sink_kwargs: dict[str, Any],
    header: torch.Tensor,
    work_recv: Any,
    work_send: Any,
    reply_recv: Any,
    reply_send: Any,
    free: Any,
    timeout: float,
) -> None:
    """Entry point of the writer process."""
    _fresh_logging()  # first: before anything here can log
    work_send.close()  # only the trainer writes: its death must read as end-of-file here
    reply_recv.close()
    torch.set_num_threads(1)  # one core for the writer: the others are the trainer's
    try:
        os.nice(10)  # under contention the trainer gets the edge; backpressure still bounds
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the trainer, which closes us
    if sink_kwargs.get("shard") is not None:
        # a sharded job's launcher (torchrun) tears a failed job down by signalling each
        # rank's whole process group, SIGTERM then SIGKILL: the writer leaves that group so it
        # outlives its trainer to flush its rows and write its record. Its trainer's close or
        # end-of-file ends it, and the orphan watch below bounds it.
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, _terminated)
    header[2] = os.getpid()
    _watch_orphan(header, grace=2 * timeout)
    if spec.shadow is not None:  # the child's own copy: the trainer's model is untouched
        spec.shadow.eval().requires_grad_(False)
        if spec.device != "cpu":
            spec.shadow.to(spec.device)
            spec.probe = _to_device(spec.probe, spec.device)

    def make_worker() -> Worker:
        root = open_root(store, path=path or None, mode="r+")
        return Worker(spec, ring, _open_sink(root, sink_kwargs))

    def recv(timeout: float) -> Any:
        if not work_recv.poll(timeout):
            return None
        return work_recv.recv()

    serve = Serve(
        make_worker,
        recv=parent_watch(recv),
        reply=reply_send.send,
        release=free.release,
        header=header,
        cpu_time=time.process_time,
    )
    try:
        serve.run()
    except _Terminated:
        serve.finish({"status": "crashed"}, 0.0)


def _fresh_logging() -> None:
    """Drop every logging handler the fork copied, and log to stderr instead.

    A fork copies the locks other threads held at that moment: a handler's lock, or the
    queue of a ``QueueHandler`` a thread was writing to, would stay held for ever in this
    process, and the first log line here would deadlock it. The copied handler objects are
    dropped without being closed (closing may take those locks). Python re-initialises the
    logging module's own lock at fork. Costs microseconds (README "Measured").
    """
    manager = logging.Logger.manager
    loggers = [logging.getLogger(), *manager.loggerDict.values()]
    for logger in loggers:
        if isinstance(logger, logging.Logger):
            logger.handlers = []
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s (dimlapse writer, pid %(process)d)"))
    log.addHandler(handler)
    log.propagate = False


def _watch_orphan(header: torch.Tensor, *, grace: float) -> None:
    """End this writer if its trainer is gone and it makes no progress for ``grace`` s.

    After the trainer dies the writer flushes what it holds and exits by itself; this daemon
    thread bounds that, whatever the writer is stuck on (a lock, a hung filesystem).
    """
    parent = os.getppid()

    def watch() -> None:
        seen, since = int(header[1]), None
        while True:
            time.sleep(0.5)
            if os.getppid() == parent:
                continue
            if since is None or int(header[1]) != seen:
                seen, since = int(header[1]), time.monotonic()
            elif time.monotonic() - since > grace:
                sys.stderr.write(
                    f"dimlapse: the writer (pid {os.getpid()}) made no progress for {grace:g} s "
                    "after its trainer ended; exiting\n"
                )
                os._exit(1)

    threading.Thread(target=watch, name="dimlapse-orphan-watch", daemon=True).start()


def _to_device(probe: Any, device: str) -> Any:
    if isinstance(probe, torch.Tensor):
        return probe.to(device)
    if isinstance(probe, dict):
        return {k: _to_device(v, device) for k, v in probe.items()}
    if isinstance(probe, tuple | list):
        return type(probe)(_to_device(v, device) for v in probe)
    return probe


class _Terminated(BaseException):
    pass


def _terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


def local_store(store: Any) -> tuple[Any, str] | None:
    """(store URL or path, group path) a writer process can open, or None (in-memory store)."""
    if isinstance(store, os.PathLike):
        return os.fspath(store), ""
    if isinstance(store, str):
        if store.startswith("memory://"):
            return None
        return store, ""
    return None


def start_writer(
    *,
    store: Any,
    root: zarr.Group,
    ring: Ring,
    spec: WorkSpec,
    sink_kwargs: dict[str, Any],
    prefer: str,
    cuda: bool,
    shadow: Callable[[str], tuple[torch.nn.Module | None, Any]],
    timeout: float = 60.0,
) -> WriterHandle:
    """Start the writer (process, or the thread fallback) and return the trainer's handle.

    ``shadow(kind)`` gives the writer's copy of the model and its probe for ``kind`` in
    ``fork`` (the live model: the child's copy-on-write image is the copy), ``spawn`` (a CPU
    deep copy, pickled) and ``thread`` (a deep copy).
    """
    reason = None
    target = local_store(store)
    if prefer == "thread":
        reason = "writer='thread' was asked for"
    elif target is None:
        reason = f"the store {store!r} lives in this process's memory"
    elif not cuda and "fork" not in mp.get_all_start_methods():
        reason = "this platform cannot fork"
    if reason is None:
        assert target is not None
        kind = "spawn" if cuda else "fork"
        try:
            spec_p = dataclasses.replace(spec)
            spec_p.shadow, spec_p.probe = shadow(kind)
            return _start_process(target, ring, spec_p, sink_kwargs, cuda=cuda, timeout=timeout)
        except Exception as exc:  # e.g. an unpicklable model under spawn
            reason = f"a writer process could not be started ({type(exc).__name__}: {exc})"
    if prefer == "process":
        raise RuntimeError(f"Expected to start a writer process (writer='process'), but {reason}")
    if prefer == "auto":
        log.warning(
            "dimlapse: writing from a thread in the training process because %s; it shares "
            "the training thread's GIL (slower training). Use a local or remote store path.",
            reason,
        )
    spec.shadow, spec.probe = shadow("thread")
    handle = _start_thread(root, ring, spec, sink_kwargs)
    handle.timeout = timeout
    return handle


def _start_process(
    target: tuple[Any, str],
    ring: Ring,
    spec: WorkSpec,
    sink_kwargs: dict[str, Any],
    *,
    cuda: bool,
    timeout: float,
) -> WriterHandle:
    ctx: Any = mp.get_context("spawn" if cuda else "fork")
    work_recv, work_send = ctx.Pipe(duplex=False)
    reply_recv, reply_send = ctx.Pipe(duplex=False)
    free = ctx.Semaphore(ring.n_slots)
    header = torch.zeros(4, dtype=torch.int64).share_memory_()
    proc = ctx.Process(
        target=_writer_main,
        args=(
            *target,
            ring,
            spec,
            sink_kwargs,
            header,
            work_recv,
            work_send,
            reply_recv,
            reply_send,
            free,
            timeout,
        ),
        name="dimlapse-writer",
        daemon=True,
    )
    proc.start()
    work_recv.close()
    reply_send.close()

    def poll_reply(timeout: float) -> Any:
        try:
            return reply_recv.recv() if reply_recv.poll(timeout) else None
        except EOFError:
            return None

    handle = WriterHandle(
        ring,
        send=work_send.send,
        acquire=lambda block, timeout: free.acquire(block, timeout),
        poll_reply=poll_reply,
        header=header,
        alive=proc.is_alive,
        kind="process",
        join=proc.join,
        timeout=timeout,
    )
    handle.process = proc
    return handle


def _start_thread(
    root: zarr.Group, ring: Ring, spec: WorkSpec, sink_kwargs: dict[str, Any]
) -> WriterHandle:
    work: queue.SimpleQueue[Any] = queue.SimpleQueue()
    replies: queue.SimpleQueue[Any] = queue.SimpleQueue()
    free = threading.Semaphore(ring.n_slots)
    header = torch.zeros(4, dtype=torch.int64)

    def recv(timeout: float) -> Any:
        try:
            return work.get(timeout=timeout)
        except queue.Empty:
            return None

    serve = Serve(
        lambda: Worker(spec, ring, _open_sink(root, sink_kwargs)),
        recv=recv,
        reply=replies.put,
        release=free.release,
        header=header,
        cpu_time=time.thread_time,
    )
    thread = threading.Thread(target=serve.run, name="dimlapse-writer", daemon=True)
    thread.start()

    def poll_reply(timeout: float) -> Any:
        try:
            return replies.get(timeout=timeout) if timeout else replies.get_nowait()
        except queue.Empty:
            return None

    return WriterHandle(
        ring,
        send=work.put,
        acquire=lambda block, timeout: free.acquire(block, timeout),
        poll_reply=poll_reply,
        header=header,
        alive=thread.is_alive,
        kind="thread",
        join=thread.join,
    )
