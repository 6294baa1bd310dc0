"""Where the analysis jobs' dask graphs run: local threads or a dask.distributed scheduler."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import dask
import dask.threaded
from dask.callbacks import Callback
from tqdm.auto import tqdm

from ._spectra import blas_single_thread

__all__ = [
    "SCHEDULER_TIMEOUT",
    "check_scheduler",
    "compute_job",
    "compute_jobs",
    "scheduler_context",
]

#: Default seconds to reach a dask.distributed scheduler before giving up.
SCHEDULER_TIMEOUT = 10.0


class _TaskBar(Callback):
    """A tqdm bar over the tasks of one local dask compute (threaded scheduler only)."""

    def __init__(self, desc: str, *, enabled: bool) -> None:
        super().__init__()
        self._desc, self._enabled, self._bar = desc, enabled, None

    def _start_state(self, dsk: Any, state: dict[str, Any]) -> None:
        total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        self._bar = tqdm(
            total=total, desc=self._desc, unit="task", leave=False, disable=not self._enabled
        )

    def _posttask(self, *args: Any) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def _finish(self, *args: Any) -> None:
        if self._bar is not None:
            self._bar.close()


def check_scheduler(address: str, *, timeout: float = SCHEDULER_TIMEOUT) -> None:
    """Fail fast when no dask scheduler answers at `address` within `timeout` seconds.

    ``Client(address)`` waits without bound on a peer that accepts the connection and never
    answers; this asks the scheduler for its identity under one wall-clock deadline.

    Raises
    ------
    ConnectionError
        Naming the address, the timeout and what to do instead.
    """
    import asyncio

    from distributed.core import rpc

    async def identity() -> Any:
        async with rpc(address, timeout=timeout) as remote:
            return await remote.identity()

    async def bounded() -> Any:
        return await asyncio.wait_for(identity(), timeout)

    try:
        reply = asyncio.run(bounded())
    except (TimeoutError, OSError, ValueError, TypeError) as exc:
        raise ConnectionError(
            f"No dask scheduler answered at {address!r} within {timeout:g} s "
            f"({type(exc).__name__}{': ' + str(exc) if str(exc) else ''}); check the address "
            "(start one with `dask scheduler`), or leave out --scheduler to use local threads"
        ) from exc
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        raise ConnectionError(
            f"The peer at {address!r} is not a dask scheduler (it answered {reply!r})"
        )


@contextlib.contextmanager
def scheduler_context(
    scheduler: Any = None, *, timeout: float = SCHEDULER_TIMEOUT
) -> Iterator[Any]:
    """Where the jobs' dask graphs run.

    None: the local threaded scheduler, one worker thread per core, with BLAS pinned to one
    thread (threadpoolctl) so worker threads do not oversubscribe the cores
    (docs/storage-notes.md, "Dask on 2 cores"). A string: the address of a
    ``dask.distributed`` scheduler, checked within `timeout` seconds
    (:func:`check_scheduler`), connected with ``Client(address)`` and closed afterwards. A
    ``distributed.Client``: used as is.
    """
    if scheduler is None:
        # the threaded scheduler's function, not its name: dask resolves a name by importing
        # dask.distributed to look for a client first (0.2-0.3 s of a small run's start-up)
        with blas_single_thread(), dask.config.set(scheduler=dask.threaded.get):
            yield None
        return
    from distributed import Client

    if isinstance(scheduler, Client):
        with dask.config.set(scheduler=scheduler.get):
            yield scheduler
        return
    if not isinstance(scheduler, str) or not scheduler:
        raise ValueError(
            "Expected `scheduler` to be None (local threads), a dask.distributed scheduler "
            f"address such as 'tcp://127.0.0.1:8786', or a Client, got {scheduler!r}"
        )
    check_scheduler(scheduler, timeout=timeout)
    client = Client(scheduler, timeout=timeout)
    try:
        with dask.config.set(scheduler=client.get):
            yield client
    finally:
        client.close()


def compute_job(obj: Any, desc: str, *, local: bool, progress: bool) -> Any:
    """One compute for one job, with a task bar on the local scheduler."""
    if local:
        with _TaskBar(desc, enabled=progress):
            return obj.compute()
    return obj.compute()


def compute_jobs(objs: dict[str, Any], *, local: bool, progress: bool) -> dict[str, Any]:
    """One ``dask.compute`` for several jobs' lazy results, with one task bar (local).

    Jobs built on the same store arrays share their read tasks (dask keys are content
    tokens), so a chunk is read, decompressed and checksummed once for all of them.
    """
    names = list(objs)
    if local:
        with _TaskBar("+".join(names), enabled=progress):
            values = dask.compute(*objs.values())
    else:
        values = dask.compute(*objs.values())
    return dict(zip(names, values, strict=True))
