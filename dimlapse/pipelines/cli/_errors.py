"""The command line's one error type."""


class CLIError(Exception):
    """A user error on the command line: printed as one line, exit status 2."""
