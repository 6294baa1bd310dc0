"""What capture says: one line when a run starts, one when it closes, seen by default.

Python drops INFO from a library logger unless the user configured logging, so a Recorder in
a plain script would say nothing. The ``dimlapse.capture`` logger is therefore set to INFO
(when the user has not set its level) and given a fallback handler that writes to stderr only
when no other handler would receive the record, as ``logging.lastResort`` does for warnings:
users who configured logging get the lines through their own handlers, once; users who did
not see them on stderr. Silence them with the logging level, the standard switch that also
covers the callbacks and the CLI::

    logging.getLogger("dimlapse.capture").setLevel(logging.WARNING)
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger("dimlapse.capture")


class _Fallback(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """stderr, only for records no other handler on the logger's path receives."""

    def emit(self, record: logging.LogRecord) -> None:
        logger: logging.Logger | None = log
        while logger is not None:
            if any(h is not self for h in logger.handlers):
                return  # the user's logging configuration shows it
            if not logger.propagate:
                break
            logger = logger.parent
        self.setStream(sys.stderr)  # the current stderr (tests and notebooks replace it)
        super().emit(record)


def install() -> None:
    """Make the start and close lines visible by default (idempotent)."""
    if not any(isinstance(h, _Fallback) for h in log.handlers):
        log.addHandler(_Fallback(sys.stderr))
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)


def _human(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def start_line(store: Any, *, mode: str, codec: str, writer: str | None, projected: dict) -> None:
    """``dimlapse: recording into <store> (mode, codec, writer): <bytes> per snapshot, per
    run`` (per run when ``total_steps`` is known)."""
    per_run = projected.get("per_run")
    run = (
        f", {_human(per_run)} for {projected.get('captures')} snapshots"
        if per_run is not None
        else " (per run: unknown; pass CaptureOptions(total_steps=...) to project it)"
    )
    log.info(
        "dimlapse: recording into %s (mode %s, codec %s, writer %s): projected %s per snapshot%s",
        store,
        mode,
        codec,
        writer,
        _human(projected.get("per_snapshot")),
        run,
    )


def close_line(store: Any, *, steps: int, stats: dict[str, Any]) -> None:
    """The summary at close: status, steps, snapshots, bytes, compression, drops, CPU."""
    ratio = stats.get("compression_ratio")
    log.info(
        "dimlapse: %s %s: %d steps, %s snapshots, %s written (%s raw, compression %s), "
        "%d dropped, %.2f s in the training thread, writer CPU %s",
        store,
        stats.get("status"),
        steps,
        stats.get("snapshots"),
        _human(stats.get("bytes_stored")),
        _human(stats.get("bytes_raw")),
        f"{ratio:.2f}x" if ratio else "?",
        stats.get("dropped") or 0,
        stats.get("train_thread_capture_seconds") or 0.0,
        f"{stats['writer_cpu_seconds']:.2f} s" if stats.get("writer_cpu_seconds") else "?",
    )
