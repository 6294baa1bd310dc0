"""One writer per run store: a lease file with the owner's host and pids.

The lease lives beside the store, as a hidden file ``.<name>.lock`` in the store's parent
folder (inside the store, zarr would warn about an object that is not part of the
hierarchy). On local disks it is created exclusively (``O_EXCL``); on other fsspec
filesystems it is checked then written (best effort: object stores have no atomic create);
in-memory stores are locked within this process. A lease whose owners are gone (same host,
no pid running) is stale and taken over with a logged warning, so a run killed with
``kill -9`` can be resumed. A lease held by a live process, or by another host, refuses the
second writer with :class:`RunLockedError` naming the live pids and what to do. A lease that
cannot be read (empty or damaged: a failed write on a full disk, or read between its
exclusive create and its write) is live until proven dead: it is re-read for
``UNREADABLE_WAIT`` seconds, then refused with a message saying how to clear it; it is never
taken over.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any

log = logging.getLogger("dimlapse.capture")
_IN_PROCESS: dict[int, dict[str, Any]] = {}  # id(store object) -> lease, for memory stores
UNREADABLE_WAIT = 2.0  # seconds an unreadable lease is re-read (its create-then-write window)
FINISHING_WAIT = 60.0  # default bound on waiting for a dead trainer's writer to flush


class RunLockedError(RuntimeError):
    """Another live writer holds the run store."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_location(store: Any) -> tuple[Any, str] | None:
    """(fsspec filesystem or None for local, lease path) for a store; None when in memory."""
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if not isinstance(store, str) or store.startswith("memory://"):
        return None
    if "://" in store and not store.startswith("file://"):
        import fsspec

        fs, path = fsspec.core.url_to_fs(store)
        path = path.rstrip("/")
        parent, name = path.rsplit("/", 1) if "/" in path else ("", path)
        return fs, f"{parent}/.{name}.lock" if parent else f".{name}.lock"
    path = os.path.abspath(store.removeprefix("file://")).rstrip(os.sep)
    return None, os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lock")


def read_lock(store: Any) -> dict[str, Any] | None:
    """The lease of a store's current writer, or None."""
    where = lock_location(store)
    if where is None:
        return _IN_PROCESS.get(id(store))
    fs, path = where
    try:
        if fs is None:
            with open(path, "rb") as f:
                data = f.read()
        else:
            data = fs.cat_file(path)
    except FileNotFoundError:
        return None
    try:
        return dict(json.loads(data))
    except (ValueError, TypeError):
        return {"host": "?", "pid": -1, "corrupt": True, "bytes": len(data)}


def lease_is_live(lease: dict[str, Any]) -> bool:
    """Whether the lease's owner may still be writing (other hosts and unreadable leases
    count as live)."""
    if lease.get("corrupt"):
        return True
    if lease.get("host") != socket.gethostname():
        return True
    return any(_pid_alive(int(p)) for p in lease.get("pids", [lease.get("pid", -1)]) if int(p) > 0)


def _live_pids(lease: dict[str, Any]) -> list[int]:
    pids = [int(p) for p in lease.get("pids", [lease.get("pid", -1)]) if int(p) > 0]
    return [p for p in pids if _pid_alive(p)] or pids


def _readable_lease(store: Any) -> dict[str, Any] | None:
    """The lease, re-read for up to ``UNREADABLE_WAIT`` seconds while it cannot be parsed."""
    deadline = time.monotonic() + UNREADABLE_WAIT
    lease = read_lock(store)
    while lease is not None and lease.get("corrupt") and time.monotonic() < deadline:
        time.sleep(0.05)
        lease = read_lock(store)
    return lease


def check_unlocked(store: Any, *, timeout: float = FINISHING_WAIT) -> None:
    """Raise :class:`RunLockedError` when a live writer (or an unreadable lease) holds
    ``store``; a dead trainer's writer still flushing is waited for, ``timeout`` s at most."""
    wait_for_finishing_writer(store, timeout=timeout)
    lease = _readable_lease(store)
    where = lock_location(store)
    if lease is not None and lease.get("corrupt"):
        raise RunLockedError(
            f"The writer lease of {store!r} ({where[1] if where else 'in memory'}) cannot be "
            f"read ({lease.get('bytes')} bytes, not a lease: a failed write, e.g. on a full "
            "disk?), so a writer may still hold the run. If no process is writing it, delete "
            f"{where[1] if where else 'the lease'!r} and start again."
        )
    if lease is not None and lease_is_live(lease):
        pids = ", ".join(str(p) for p in _live_pids(lease))
        raise RunLockedError(
            f"The run store {store!r} is being written by pid {pids} on host "
            f"{lease.get('host')!r} (since {lease.get('since')}); one writer per store: wait "
            "for it to finish, or record into another path."
            + (f" If that process is gone, delete {where[1]!r}." if where else "")
        )


def _write(store: Any, lease: dict[str, Any], *, exclusive: bool) -> bool:
    where = lock_location(store)
    if where is None:
        if exclusive and id(store) in _IN_PROCESS:
            return False
        _IN_PROCESS[id(store)] = lease
        return True
    fs, path = where
    data = json.dumps(lease).encode()
    if fs is None:
        os.makedirs(os.path.dirname(path), exist_ok=True)  # the store's parent, as zarr would
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
        try:
            fd = os.open(path, flags, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    if exclusive and fs.exists(path):
        return False
    fs.pipe_file(path, data)
    return True


def _delete(store: Any) -> None:
    where = lock_location(store)
    if where is None:
        _IN_PROCESS.pop(id(store), None)
        return
    fs, path = where
    try:
        os.remove(path) if fs is None else fs.rm_file(path)
    except FileNotFoundError:
        pass


def wait_for_finishing_writer(store: Any, *, timeout: float = FINISHING_WAIT) -> None:
    """A writer process whose trainer died flushes what it holds, then exits: wait for it
    (``timeout`` seconds at most; :func:`check_unlocked` then names it if still live)."""
    lease = read_lock(store)
    if lease is None or lease.get("host") != socket.gethostname():
        return
    if _pid_alive(int(lease.get("pid", -1))) or not lease_is_live(lease):
        return
    log.info(
        "dimlapse: waiting (%g s at most) for the writer of a dead run to finish flushing %r",
        timeout,
        store,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = read_lock(store)
        if current is None or not lease_is_live(current):
            return
        time.sleep(0.1)


def acquire_lock(store: Any, *, since: str, timeout: float = FINISHING_WAIT) -> dict[str, Any]:
    """Take the lease of ``store`` for this process (stale leases are taken over; unreadable
    ones never are). ``timeout``: the bound on waiting for a dead trainer's writer."""
    wait_for_finishing_writer(store, timeout=timeout)
    pid = os.getpid()
    lease = {"host": socket.gethostname(), "pid": pid, "pids": [pid], "since": since}
    for _ in range(3):
        if _write(store, lease, exclusive=True):
            return lease
        old = _readable_lease(store)
        if old is not None and lease_is_live(old):
            check_unlocked(store, timeout=timeout)
        if old is not None:
            log.warning(
                "dimlapse: taking over a stale writer lease of %r (pid %s on %s is gone)",
                store,
                old.get("pid"),
                old.get("host"),
            )
        _delete(store)
    check_unlocked(store, timeout=timeout)
    raise RunLockedError(f"Could not take the writer lease of {store!r}; try again")


def add_pid(store: Any, lease: dict[str, Any], pid: int) -> None:
    """Add the writer process to the lease (the lease stays live while either runs)."""
    lease["pids"] = [*lease["pids"], pid]
    _write(store, lease, exclusive=False)


def release_lock(store: Any, lease: dict[str, Any] | None) -> None:
    """Drop the lease if it is still ours."""
    if lease is None:
        return
    try:
        current = read_lock(store)
        if current is not None and (current.get("since"), current.get("pid")) == (
            lease.get("since"),
            lease.get("pid"),
        ):
            _delete(store)
    except Exception as exc:  # the store may be gone; nothing else to release
        log.info("dimlapse: could not release the writer lease: %s", exc)
