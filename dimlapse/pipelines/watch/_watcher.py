"""``watch``: follow a run while it is written; diagnoses, alert log, hook, dashboard.

The monitor itself (incremental reading and diagnoses) is :mod:`dimlapse.analyze.watch`;
this module adds what a person or a training script sees: a terminal view, the alert log
``<results>/<run>/alerts.jsonl`` (one JSON object per line), an ``on_alert`` hook and the
local web dashboard.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dimlapse import RESULTS_DIR, RUNS_DIR

if TYPE_CHECKING:
    from dimlapse.analyze.watch import Alert, DiagnosisOptions, Monitor

log = logging.getLogger("dimlapse.watch")


@dataclass
class WatchResult:
    """What a watch saw: the run's final status, snapshots read, alerts, why it stopped."""

    store: str
    status: str
    snapshots: int
    last_step: int | None
    alerts: list[Alert] = field(default_factory=list)
    stopped: str = "finished"  # finished | timeout | stopped | interrupted
    alert_log: str | None = None


def alert_log_path(store: Any, results_dir: str | Path = RESULTS_DIR) -> Path:
    """``<results_dir>/<run>/alerts.jsonl`` with ``<run>`` the store's name without .zarr."""
    from dimlapse.analyze import run_name

    return Path(results_dir) / run_name(str(store)) / "alerts.jsonl"


def watch(
    store: Any,
    *,
    on_alert: Callable[[Alert], Any] | None = None,
    interval: float = 1.0,
    timeout: float | None = None,
    results_dir: str | Path | None = RESULTS_DIR,
    options: DiagnosisOptions | None = None,
    kind: str = "auto",
    view: Any = None,
    dashboard: Any = None,
    stop: threading.Event | None = None,
    wait: float = 30.0,
) -> WatchResult:
    """Follow a run store until its status is final, ``timeout`` passes or ``stop`` is set.

    Each poll reads only the snapshots completed since the last one, extends every layer's
    stable rank and participation ratio, and runs the diagnoses (see
    :class:`dimlapse.analyze.watch.DiagnosisOptions`). Every new alert is appended to the
    alert log, shown by ``view`` and ``dashboard``, and passed to ``on_alert``.

    Parameters
    ----------
    store : str, os.PathLike or zarr store
        The run (it may not have written its first snapshot yet, but must exist).
    on_alert : callable, optional
        ``on_alert(alert)`` for every new alert, called on the watching thread. An exception
        it raises stops the watch and propagates.
    interval : float
        Seconds between polls.
    timeout : float, optional
        Stop after this many seconds even if the run is still being written.
    results_dir : str or Path, optional
        Where ``<run>/alerts.jsonl`` goes; ``None`` writes no log.
    options : DiagnosisOptions, optional
        Windows and thresholds.
    kind : {"auto", "activation", "weight"}
        Which matrices are tracked.
    view : TerminalView, optional
        Drawn after every poll.
    dashboard : Dashboard, optional
        Receives the state after every poll.
    stop : threading.Event, optional
        Set it (from another thread) to end the watch after the current poll.
    wait : float
        Seconds to wait for the store to become a readable run (a Recorder being
        constructed writes its root attrs last); its last error is raised after that.

    Returns
    -------
    WatchResult

    Examples
    --------
    >>> def on_alert(alert):  # doctest: +SKIP
    ...     if alert.kind == "instability":
    ...         for group in optimizer.param_groups:
    ...             group["lr"] *= 0.1
    >>> watch("data/runs/mlp-mnist1d-s0.zarr", on_alert=on_alert)  # doctest: +SKIP
    """
    if not (isinstance(interval, int | float) and interval > 0):
        raise ValueError(
            f"Expected `interval` to be a positive number of seconds, got {interval!r}"
        )
    if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
        raise ValueError(f"Expected `timeout` to be a positive number or None, got {timeout!r}")
    if on_alert is not None and not callable(on_alert):
        raise ValueError(f"Expected `on_alert` to be callable(alert) or None, got {on_alert!r}")
    start = time.monotonic()
    monitor = _wait_for_run(store, options, kind, wait, interval, stop)
    path = None if results_dir is None else alert_log_path(store, results_dir)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")  # one log per watch
    stopped = "finished"
    try:
        while True:
            finished = monitor.finished  # read before the poll: a final status is written last
            alerts = monitor.poll()
            _publish(monitor, alerts, path, on_alert, view, dashboard)
            if finished and not monitor.backlog:
                break
            if timeout is not None and time.monotonic() - start >= timeout:
                stopped = "timeout"
                break
            if stop is not None and stop.is_set():
                stopped = "stopped"
                break
            if monitor.backlog:
                continue  # catching up on a run that was ahead of us: no sleep
            if stop is not None:
                stop.wait(interval)
            else:
                time.sleep(interval)
    except KeyboardInterrupt:
        stopped = "interrupted"
    tr = monitor.trajectories
    return WatchResult(
        store=str(store),
        status=monitor.status,
        snapshots=int(tr.steps.size),
        last_step=int(tr.steps[-1]) if tr.steps.size else None,
        alerts=list(monitor.alerts),
        stopped=stopped,
        alert_log=None if path is None else str(path),
    )


def _wait_for_run(
    store: Any,
    options: DiagnosisOptions | None,
    kind: str,
    wait: float,
    interval: float,
    stop: threading.Event | None,
) -> Monitor:
    """A Monitor on ``store``, retrying while the store is missing or not yet a run."""
    from dimlapse.analyze.watch import Monitor

    deadline = time.monotonic() + wait
    while True:
        try:
            return Monitor(store, options=options, kind=kind)
        except (FileNotFoundError, ValueError):
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                raise
        time.sleep(min(interval, 0.2))


def _publish(
    monitor: Monitor,
    alerts: list[Alert],
    path: Path | None,
    on_alert: Callable[[Alert], Any] | None,
    view: Any,
    dashboard: Any,
) -> None:
    if path is not None and alerts:
        with path.open("a") as f:
            for a in alerts:
                f.write(json.dumps(a.to_dict(), allow_nan=False, default=_json_default) + "\n")
    for a in alerts:
        log.info("dimlapse watch: %s: %s", a.kind, a.message)
    if view is not None or dashboard is not None:
        state = monitor.state()
        if dashboard is not None:
            dashboard.publish(state)
        if view is not None:
            view.update(state, dashboard=None if dashboard is None else dashboard.url)
    if on_alert is not None:
        for a in alerts:
            on_alert(a)


def _json_default(x: Any) -> Any:
    return float(x) if hasattr(x, "__float__") else str(x)


class Watcher:
    """``watch`` on a background thread, for a training script to act on alerts.

    Parameters
    ----------
    store : str, os.PathLike or zarr store
        The run the script is writing (create the Recorder first).
    **kwargs
        Options of :func:`watch` (``on_alert``, ``interval``, ``options``, ...).

    Examples
    --------
    >>> stop_training = threading.Event()  # doctest: +SKIP
    >>> def on_alert(alert):  # doctest: +SKIP
    ...     if alert.severity == "critical":
    ...         stop_training.set()  # the loop checks it after each step
    >>> with Recorder(model, store, probe=x), Watcher(store, on_alert=on_alert):  # doctest: +SKIP
    ...     for batch in data:
    ...         ...
    ...         if stop_training.is_set():
    ...             break
    """

    def __init__(self, store: Any, **kwargs: Any) -> None:
        self.stop_event = kwargs.pop("stop", None) or threading.Event()
        self.result: WatchResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(store,), kwargs=kwargs, name="dimlapse-watch", daemon=True
        )
        self._thread.start()

    def _run(self, store: Any, **kwargs: Any) -> None:
        try:
            self.result = watch(store, stop=self.stop_event, **kwargs)
        except BaseException as exc:  # handed to the caller by stop()
            self.error = exc

    def stop(self, *, wait: float | None = 60.0) -> WatchResult | None:
        """Ask the watch to end after its current poll, wait for it, re-raise its error."""
        self.stop_event.set()
        self._thread.join(wait)
        if self.error is not None:
            raise self.error
        return self.result

    def join(self, timeout: float | None = None) -> WatchResult | None:
        """Wait until the watch ends by itself (the run finished, or its timeout)."""
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.result

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``dimlapse watch``."""
    p.add_argument("--run", help=f"run name, store path or URL (default: newest in {RUNS_DIR})")
    p.add_argument("--runs-dir", default=RUNS_DIR, help=f"where runs are (default {RUNS_DIR})")
    p.add_argument("--results-dir", default=RESULTS_DIR, help="alert log goes to <dir>/<run>/")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls (1)")
    p.add_argument("--timeout", type=float, help="stop after this many seconds")
    p.add_argument("--port", type=int, default=8765, help="dashboard port (8765; 0: any free)")
    p.add_argument("--no-dashboard", action="store_true", help="no web dashboard")
    p.add_argument("--plain", action="store_true", help="plain log lines, no redrawn panel")
    p.add_argument("--kind", default="auto", help="auto (default), activation or weight")
    p.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for --run to appear (120)"
    )


def _store_arg(run: str | None, runs_dir: str) -> str | None:
    """``--run`` as a store path or URL, which may not exist yet (watch waits for it)."""
    if not run:
        return None
    if "://" in run or Path(run).exists() or "/" in run:
        return run
    name = run if run.endswith(".zarr") else f"{run}.zarr"
    if "://" in runs_dir:
        return f"{runs_dir.rstrip('/')}/{name}"
    return str(Path(runs_dir) / name)


def main(args: argparse.Namespace) -> int:
    """``watch``: follow a run until it ends (or Ctrl-C / --timeout), print a summary."""
    from ..cli import CLIError, resolve_store
    from ._view import TerminalView
    from .dashboard import Dashboard

    if args.wait < 0:
        raise CLIError(f"Expected `--wait` to be >= 0 seconds, got {args.wait!r}")
    store = _store_arg(args.run, args.runs_dir) or resolve_store(None, args.runs_dir)
    view = TerminalView(live=False if args.plain else None)
    board = None
    try:
        if not args.no_dashboard:
            board = Dashboard(port=args.port)
            print(f"dashboard: {board.url}  (Ctrl-C stops watching)", flush=True)
        result = watch(
            store,
            interval=args.interval,
            timeout=args.timeout,
            results_dir=args.results_dir,
            kind=args.kind,
            wait=args.wait,
            view=view,
            dashboard=board,
        )
    except (ValueError, FileNotFoundError, OSError) as e:
        raise CLIError(str(e)) from e
    finally:
        if board is not None:
            board.close()
    print(
        f"{store}: {result.stopped} ({result.status}), {result.snapshots} snapshots to step "
        f"{result.last_step}, {len(result.alerts)} alert(s) in {result.alert_log}"
    )
    return 0
