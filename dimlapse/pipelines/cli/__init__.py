"""The ``dimlapse`` command: ``dimlapse capture|replay|analyze|report|watch|study|intervene|bench``.

``main`` is the console script; ``COMMANDS`` is the one table of subcommands (add a command
by adding a row); ``CLIError`` is a user error printed as one line with exit status 2. The
run-locating helpers are shared by the workflows' commands.
"""

from ._analyze import resolve_store
from ._capture import newest_run, store_for
from ._errors import CLIError
from ._main import COMMANDS, HelpFormatter, build_parser, main

__all__ = [
    "COMMANDS",
    "CLIError",
    "HelpFormatter",
    "build_parser",
    "main",
    "newest_run",
    "resolve_store",
    "store_for",
]
