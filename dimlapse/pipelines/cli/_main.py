"""``dimlapse <command>`` (also ``python -m dimlapse``): one command, a subcommand per task.

Each command's options and runner live with its workflow (``capture`` and ``replay`` in
:mod:`._capture`, ``analyze`` and ``report`` in :mod:`._analyze`, ``watch``, ``study``,
``intervene`` and ``bench`` in their sub-packages); only the invoked command's module is
imported, so ``dimlapse capture`` never loads the analysis stack.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._errors import CLIError

PROG = "dimlapse"
# command -> (module, add-arguments function, run function, help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "capture": ("dimlapse.pipelines.cli._capture", "add_capture_arguments", "run_capture",
                "train a recipe and capture it into a run store"),
    "replay": ("dimlapse.pipelines.cli._capture", "add_replay_arguments", "run_replay",
               "materialise a weights-only run's activations from its stored weights"),
    "ingest": ("dimlapse.pipelines.cli._ingest", "add_ingest_arguments", "run_ingest",
               "a run store from a series of checkpoints (torch, safetensors, HF, DCP)"),
    "analyze": ("dimlapse.pipelines.cli._analyze", "add_analyze_arguments", "run_analyze",
                "analyse a captured run: analysis.zarr, figures, report"),
    "report": ("dimlapse.pipelines.cli._analyze", "add_report_arguments", "run_report",
               "re-render a run's report and figures from its analysis.zarr"),
    "export": ("dimlapse.pipelines.cli._export", "add_export_arguments", "run_export",
               "export an analysed run to TensorBoard event files or Parquet / CSV tables"),
    "watch": ("dimlapse.pipelines.watch", "add_arguments", "main",
              "follow a run live: diagnoses, alerts, dashboard"),
    "study": ("dimlapse.pipelines.study", "add_arguments", "main",
              "compare architectures over seeds"),
    "intervene": ("dimlapse.pipelines.intervene", "add_arguments", "main",
                  "disrupt training in step windows; the lasting effect of each"),
    "bench": ("dimlapse.pipelines.bench", "add_arguments", "main",
              "benchmarks: capture, analyze, transitions, integrations, gpu"),
}  # fmt: skip


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """States every option's default: appended unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default is None or action.default is False:
            return text
        if action.default == argparse.SUPPRESS:
            return text
        if not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".strip()


def build_parser(lazy: dict[str, Callable[[argparse.ArgumentParser], None]] | None = None):
    """The argument parser. ``lazy`` maps an imported command to its add-arguments."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Record how a network's representations evolve during training, and "
        "analyse the recording.",
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, _, _, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=HelpFormatter)
        if lazy and name in lazy:
            lazy[name](p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dimlapse``; returns the exit status (2 for command-line errors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else None
    lazy: dict[str, Callable[[argparse.ArgumentParser], None]] = {}
    runner: Callable[[argparse.Namespace], Any] | None = None
    if command in COMMANDS:
        module_name, add_name, run_name, _ = COMMANDS[command]
        module = importlib.import_module(module_name)
        lazy[command] = getattr(module, add_name)
        runner = getattr(module, run_name)
    parser = build_parser(lazy)
    args = parser.parse_args(argv)
    assert runner is not None  # parse_args exits on an unknown command
    try:
        return int(runner(args) or 0)
    except CLIError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2
