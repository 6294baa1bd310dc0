"""Closing recorders the user did not close: at interpreter exit, on SIGTERM, and when a
Recorder is garbage-collected (its writer's end-of-file does that, see writer/_serve.py)."""

from __future__ import annotations

import concurrent.futures.thread  # noqa: F401 - its exit hook must be registered before ours
import logging
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger("dimlapse.capture")
OPEN: weakref.WeakSet[Any] = weakref.WeakSet()


def _close_open_recorders() -> None:
    """Flush recorders the user never closed, while Zarr's worker threads still run."""
    status = "crashed" if hasattr(sys, "last_value") else "complete"
    for rec in list(OPEN):
        if getattr(rec, "_pid", None) != os.getpid():
            continue  # inherited by a forked writer: not ours to close
        try:
            rec.close(status=status)
        except Exception as exc:  # at exit nobody can handle it: log instead
            log.error("dimlapse: closing %r at exit failed: %s", rec, exc)


# threading's exit hooks run before concurrent.futures shuts its pools down (those pools do
# Zarr's encoding); plain atexit hooks would run too late to write anything.
_register: Callable[[Callable[[], None]], None] = getattr(
    threading, "_register_atexit", __import__("atexit").register
)
_register(_close_open_recorders)


class Terminated(SystemExit):
    """SIGTERM, raised in the main thread so ``with Recorder(...)`` closes the run as crashed."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated(128 + signum)


def handle_sigterm() -> None:
    """Turn SIGTERM into an exception (like Ctrl-C's KeyboardInterrupt) when nobody else
    handles it: the run is closed as ``crashed`` instead of left ``running``."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError) as exc:  # embedded interpreters, restricted platforms
        log.debug("dimlapse: could not install a SIGTERM handler: %s", exc)


_WATCHING: weakref.WeakSet[Any] = weakref.WeakSet()  # recorders told of any registration
_hooks_installed = False


def _registered(*args: Any) -> None:
    """A module, parameter or buffer was (re)assigned somewhere: recheck at the next capture."""
    for rec in list(_WATCHING):
        rec.maybe_changed = True


def watch_registrations(rec: Any) -> None:
    """Flag ``rec`` (the Recorder's hand-over) whenever any module registers a module,
    parameter or buffer (torch's global registration hooks), so the per-capture identity
    check runs only after one."""
    global _hooks_installed
    _WATCHING.add(rec)
    if not _hooks_installed:
        from torch.nn.modules import module as m

        m.register_module_module_registration_hook(_registered)
        m.register_module_parameter_registration_hook(_registered)
        m.register_module_buffer_registration_hook(_registered)
        _hooks_installed = True
