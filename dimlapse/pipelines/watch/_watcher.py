"""``watch``: follow a run while it is written; diagnoses, alert log, hook, dashboard.

The monitor itself (incremental reading and diagnoses) is :mod:`dimlapse.analyze.watch`;
this module adds what a person or a training script sees: a terminal view, the alert log
``<results>/<run>/alerts.jsonl`` (one JSON object per line), an ``on_alert`` hook, an
``on_snapshot`` hook (the new metric values after each poll), live logging (``log_to``: a
TensorBoard folder's log, W&B or trackio runs, through
:class:`dimlapse.analyze.exports.LiveLog`) and the local web dashboard. The command is
:mod:`._command`.

Every wait is bounded: for a store that does not exist yet, by ``wait`` and ``timeout``
(saying what it waits for); for a run, by its final status, ``timeout`` or ``stop``. A
status no Recorder writes (a damaged or foreign store) is final too: nothing would ever
change it, so the watch reads what is complete and stops, saying why.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dimlapse import RESULTS_DIR
from dimlapse.analyze.watch import FINISHED, STATUSES

if TYPE_CHECKING:
    from dimlapse.analyze.watch import Alert, DiagnosisOptions, Monitor, NewSnapshots

log = logging.getLogger("dimlapse.watch")

WAITING = {"status": "waiting", "layers": [], "alerts": [], "steps": [], "snapshots": 0}


@dataclass
class WatchResult:
    """What a watch saw: the run's final status, snapshots read, alerts, why it stopped."""

    store: str
    status: str
    snapshots: int
    last_step: int | None
    alerts: list[Alert] = field(default_factory=list)
    stopped: str = "finished"  # finished | unknown-status | timeout | stopped | interrupted
    alert_log: str | None = None
    note: str = ""  # why it stopped, when that needs saying


def alert_log_path(store: Any, results_dir: str | Path = RESULTS_DIR) -> Path:
    """``<results_dir>/<run>/alerts.jsonl`` with ``<run>`` the store's name without .zarr."""
    from dimlapse.analyze import run_name

    return Path(results_dir) / run_name(str(store)) / "alerts.jsonl"


def watch(
    store: Any,
    *,
    on_alert: Callable[[Alert], Any] | None = None,
    on_snapshot: Callable[[NewSnapshots], Any] | None = None,
    interval: float = 1.0,
    timeout: float | None = None,
    results_dir: str | Path | None = RESULTS_DIR,
    options: DiagnosisOptions | None = None,
    kind: str = "auto",
    view: Any = None,
    dashboard: Any = None,
    stop: threading.Event | None = None,
    wait: float = 30.0,
    log_to: Any = None,
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
    on_snapshot : callable, optional
        ``on_snapshot(new)`` after every poll that read snapshots or scalar rows, with a
        :class:`dimlapse.analyze.watch.NewSnapshots` (``steps (k,)`` and
        ``metrics[layer][metric] (k,)``, ``kind``, plus the new scalar rows). Called on the
        watching thread, after ``on_alert``; an exception it raises stops the watch and
        propagates.
    interval : float
        Seconds between polls.
    timeout : float, optional
        Stop after this many seconds even if the run is still being written; it also bounds
        the wait for a store that does not exist yet.
    results_dir : str or Path, optional
        Where ``<run>/alerts.jsonl`` goes; ``None`` writes no log.
    options : DiagnosisOptions, optional
        Windows and thresholds.
    kind : {"auto", "activation", "weight"}
        Which matrices are tracked.
    view : TerminalView, optional
        Drawn after every poll; its ``waiting(store, seconds)`` is called once while the
        store does not exist yet.
    dashboard : Dashboard, optional
        Receives the state after every poll, and the final state (with ``ended``) when the
        watch ends; it keeps serving it until its owner closes it.
    stop : threading.Event, optional
        Set it (from another thread) to end the watch after the current poll.
    wait : float
        Seconds to wait for the store to become a readable run (a Recorder being
        constructed writes its root attrs last), at most ``timeout``; its last error, with
        the time waited, is raised after that.
    log_to : object with ``log(dict, step=int)``, a sequence of them, or LiveLog, optional
        Live logging: a W&B run (``wandb.init(mode="offline")`` writes no network), a
        trackio run, a :class:`dimlapse.analyze.exports.TensorBoardLog`. Each gets, per
        step, ``dimensionality/<kind>/<layer>/<metric>``, ``scalars/<name>`` and an
        ``alerts`` Markdown table, in step order (see :class:`LiveLog`); rows still held
        back when the watch ends are sent then. The caller finishes its runs. Give the
        watch runs of its own: it lags training, and W&B drops steps below the last one
        logged, so a training loop logging to the same run would hide the watch's rows.

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

    Live logging to W&B, kept on disk (``wandb sync`` uploads it later):

    >>> run = wandb.init(project="dimlapse", mode="offline")  # doctest: +SKIP
    >>> watch("data/runs/mlp-mnist1d-s0.zarr", log_to=run)  # doctest: +SKIP
    >>> run.finish()  # doctest: +SKIP
    """
    if not (isinstance(interval, int | float) and interval > 0):
        raise ValueError(
            f"Expected `interval` to be a positive number of seconds, got {interval!r}"
        )
    if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
        raise ValueError(f"Expected `timeout` to be a positive number or None, got {timeout!r}")
    if on_alert is not None and not callable(on_alert):
        raise ValueError(f"Expected `on_alert` to be callable(alert) or None, got {on_alert!r}")
    if on_snapshot is not None and not callable(on_snapshot):
        raise ValueError(
            f"Expected `on_snapshot` to be callable(new_snapshots) or None, got {on_snapshot!r}"
        )
    if not (isinstance(wait, int | float) and wait >= 0):
        raise ValueError(f"Expected `wait` to be a number of seconds >= 0, got {wait!r}")
    live = _live_log(log_to)
    start = time.monotonic()
    bound = wait if timeout is None else min(wait, timeout)
    monitor = _wait_for_run(store, options, kind, bound, interval, stop, view, dashboard)
    path = None if results_dir is None else alert_log_path(store, results_dir)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")  # one log per watch
    stopped, note = "finished", ""
    try:
        while True:
            status = monitor.status  # read before the poll: a final status is written last
            alerts = monitor.poll()
            _publish(monitor, alerts, path, on_alert, view, dashboard)
            read = monitor.last.steps.size or monitor.last.scalar_steps.size
            if live is not None and (read or alerts):
                live.update(monitor.last, alerts)
            if on_snapshot is not None and read:
                on_snapshot(monitor.last)
            if status not in STATUSES and not monitor.backlog:
                stopped = "unknown-status"
                note = (
                    f"the run's status {status!r} is not one a Recorder writes "
                    f"({', '.join(STATUSES)}), so nothing will finish it: stopped after "
                    "reading every complete snapshot"
                )
                log.warning("dimlapse watch: %s: %s", store, note)
                break
            if status in FINISHED and not monitor.backlog:
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
    if live is not None:  # what waited for the other stream: the watch has read all it will
        live.flush()
    if dashboard is not None:  # the page says the watch has ended, and why
        dashboard.publish({**monitor.state(), "ended": True, "stopped": stopped, "note": note})
    tr = monitor.trajectories
    return WatchResult(
        store=str(store),
        status=monitor.status,
        snapshots=int(tr.steps.size),
        last_step=int(tr.steps[-1]) if tr.steps.size else None,
        alerts=list(monitor.alerts),
        stopped=stopped,
        alert_log=None if path is None else str(path),
        note=note,
    )


def _live_log(log_to: Any) -> Any:
    """``log_to`` as a LiveLog (validated before the watch waits for anything), or None."""
    if log_to is None:
        return None
    from dimlapse.analyze.exports import LiveLog

    if isinstance(log_to, LiveLog):
        return log_to
    try:
        return LiveLog(log_to)
    except ValueError as e:
        raise ValueError(str(e).replace("`sinks`", "`log_to`")) from e


def _wait_for_run(
    store: Any,
    options: DiagnosisOptions | None,
    kind: str,
    wait: float,
    interval: float,
    stop: threading.Event | None,
    view: Any,
    dashboard: Any,
) -> Monitor:
    """A Monitor on ``store``, retrying for ``wait`` s while it is missing or not yet a run."""
    from dimlapse.analyze.watch import Monitor

    start = time.monotonic()
    told = False
    while True:
        try:
            return Monitor(store, options=options, kind=kind)
        except (FileNotFoundError, ValueError) as e:
            waited = time.monotonic() - start
            if waited >= wait or (stop is not None and stop.is_set()):
                if not waited:
                    raise
                raise type(e)(f"{e} (waited {waited:.0f} s)") from e
            if not told:  # say what is awaited, once: the store is not a run (yet)
                told = True
                if view is not None and hasattr(view, "waiting"):
                    view.waiting(str(store), wait)
                if dashboard is not None:
                    dashboard.publish({**WAITING, "run": str(store), "note": str(e)})
        time.sleep(min(interval, 0.2, max(0.0, wait - (time.monotonic() - start))))


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
    >>> stop_training = threading.Event()
    >>> def on_alert(alert):
    ...     if alert.severity == "critical":
    ...         stop_training.set()  # the loop checks it after each step
    >>> with Recorder(model, store, probe=probe) as rec, Watcher(  # doctest: +SKIP
    ...     store, on_alert=on_alert
    ... ):
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
