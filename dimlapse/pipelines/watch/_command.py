"""``dimlapse watch``: the command over :func:`._watcher.watch`; live logging's sinks.

``--tensorboard DIR`` writes a TensorBoard event file into ``DIR/<run>/`` while the run is
watched (``tensorboard --logdir DIR``); ``--wandb [PROJECT]`` logs to a W&B run kept on
disk under ``<results-dir>/<run>/wandb/`` (offline unless ``WANDB_MODE`` says otherwise;
``wandb sync`` uploads it). Both get what :class:`dimlapse.analyze.exports.LiveLog` sends.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dimlapse import RESULTS_DIR, RUNS_DIR

from ._watcher import watch

#: W&B project of ``--wandb`` given without one.
WANDB_PROJECT = "dimlapse"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``dimlapse watch``."""
    p.add_argument("--run", help=f"run name, store path or URL (default: newest in {RUNS_DIR})")
    p.add_argument("--runs-dir", default=RUNS_DIR, help=f"where runs are (default {RUNS_DIR})")
    p.add_argument("--results-dir", default=RESULTS_DIR, help="alert log goes to <dir>/<run>/")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls (1)")
    p.add_argument(
        "--timeout",
        type=float,
        help="stop after this many seconds, waiting for the run included (default: none; a "
        "run that ended keeps its dashboard until Ctrl-C)",
    )
    p.add_argument("--port", type=int, default=8765, help="dashboard port (8765; 0: any free)")
    p.add_argument("--no-dashboard", action="store_true", help="no web dashboard")
    p.add_argument("--plain", action="store_true", help="plain log lines, no redrawn panel")
    p.add_argument("--kind", default="auto", help="auto (default), activation or weight")
    p.add_argument(
        "--wait",
        type=float,
        default=120.0,
        help="seconds to wait for --run to appear (120; at most --timeout)",
    )
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="live log: a TensorBoard event file in DIR/<run>/, viewed with tensorboard --logdir "
        "DIR (default: none)",
    )
    p.add_argument(
        "--wandb",
        nargs="?",
        const=WANDB_PROJECT,
        metavar="PROJECT",
        help=f"live log: a W&B run in project PROJECT ({WANDB_PROJECT} when the flag has no "
        "value), kept in <results-dir>/<run>/wandb/; offline (no network) unless "
        "WANDB_MODE=online; needs pip install 'dimlapse[wandb]' (default: none)",
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
    """``watch``: follow a run until it ends (or Ctrl-C / --timeout), print a summary.

    With the dashboard on, a run that ended keeps being served (its final state, marked as
    ended) until Ctrl-C or the rest of ``--timeout``. Live logs are closed (the W&B run
    finished) when the watch ends, before the dashboard lingers.
    """
    from ..cli import CLIError, resolve_store
    from ._view import TerminalView
    from .dashboard import Dashboard

    if args.wait < 0:
        raise CLIError(f"Expected `--wait` to be >= 0 seconds, got {args.wait!r}")
    if args.timeout is not None and not args.timeout > 0:
        raise CLIError(
            f"Expected `--timeout` to be a positive number of seconds, got {args.timeout!r}"
        )
    start = time.monotonic()
    store = _store_arg(args.run, args.runs_dir) or resolve_store(None, args.runs_dir)
    view = TerminalView(live=False if args.plain else None)
    board = None
    try:
        if not args.no_dashboard:
            board = Dashboard(port=args.port)
            print(f"dashboard: {board.url}  (Ctrl-C stops watching)", flush=True)
        with contextlib.ExitStack() as stack:
            result = watch(
                store,
                interval=args.interval,
                timeout=args.timeout,
                results_dir=args.results_dir,
                kind=args.kind,
                wait=args.wait,
                view=view,
                dashboard=board,
                log_to=_sinks(stack, args, store, CLIError) or None,
            )
            print(  # before the live logs close (the W&B run says where it is then)
                f"{store}: {result.stopped} ({result.status}), {result.snapshots} snapshots to "
                f"step {result.last_step}, {len(result.alerts)} alert(s) in {result.alert_log}"
                + (f"; {result.note}" if result.note else ""),
                flush=True,
            )
        if board is not None and result.stopped in ("finished", "unknown-status"):
            _linger(board, None if args.timeout is None else start + args.timeout)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise CLIError(str(e)) from e
    finally:
        if board is not None:
            board.close()
    return 0


def _linger(board: Any, deadline: float | None) -> None:
    """Keep serving the ended run's final state until Ctrl-C or ``deadline``."""
    until = "Ctrl-C" if deadline is None else "Ctrl-C or the end of --timeout"
    left = "" if deadline is None else f" ({max(0.0, deadline - time.monotonic()):.0f} s left)"
    print(
        f"run ended: the dashboard keeps serving its final state at {board.url} until "
        f"{until}{left}",
        flush=True,
    )
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2 if deadline is None else min(0.2, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass


def _sinks(
    stack: contextlib.ExitStack, args: argparse.Namespace, store: str, error: type[Exception]
) -> list[Any]:
    """The live logs ``--tensorboard`` / ``--wandb`` ask for, closed by `stack`."""
    from dimlapse.analyze import run_name

    name = run_name(str(store))
    sinks: list[Any] = []
    if args.tensorboard:
        sinks.append(stack.enter_context(_tensorboard(Path(args.tensorboard), name, error)))
    if args.wandb:
        folder = Path(args.results_dir) / name
        sinks.append(stack.enter_context(_wandb(args.wandb, name, folder, str(store), error)))
    return sinks


@contextlib.contextmanager
def _tensorboard(logdir: Path, name: str, error: type[Exception]) -> Iterator[Any]:
    try:
        from dimlapse.analyze import exports

        tensorboard_log: Any = exports.TensorBoardLog  # imports tensorboard
    except ImportError as e:
        raise error(
            f"--tensorboard needs the tensorboard package ({e}): pip install 'dimlapse[export]'"
        ) from e
    folder = logdir / name
    earlier = sorted(p.name for p in folder.glob("events.out.tfevents.*"))
    if earlier:  # a second file in one run folder would show every point twice
        raise error(
            f"{folder} already holds TensorBoard event files ({', '.join(earlier)}): choose "
            "another --tensorboard folder, or remove them"
        )
    with tensorboard_log(folder, flush_secs=5.0) as log:
        print(f"live log: tensorboard --logdir {logdir}  (run {name})", flush=True)
        yield log


@contextlib.contextmanager
def _wandb(
    project: str, name: str, folder: Path, store: str, error: type[Exception]
) -> Iterator[Any]:
    try:
        import wandb
    except ImportError as e:
        raise error(f"--wandb needs the wandb package ({e}): pip install 'dimlapse[wandb]'") from e
    mode: Any = os.environ.get("WANDB_MODE") or "offline"  # no network unless asked for
    folder.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=project,
        name=name,
        dir=str(folder),
        mode=mode,
        config={"dimlapse_store": store},
        settings=wandb.Settings(console="off", silent=True),  # the watch owns the terminal
    )
    where = Path(run.dir).parent  # run.dir is the run folder's files/
    print(f"live log: W&B run {name} ({mode}) in {where}", flush=True)
    ok = False
    try:
        yield run
        ok = True
    finally:
        run.finish(exit_code=0 if ok else 1)
        if mode == "offline":
            print(f"W&B: upload with `wandb sync {where}`", flush=True)
