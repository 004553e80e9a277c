"""The one error type of the command line."""

from __future__ import annotations


class CLIError(Exception):
    """A user error: ``main`` prints it as one ``captum-shallow: error: ...`` line, exit 2.

    Subcommands raise it for anything the user can fix (a missing file, an
    unknown name, a bad option); a traceback is kept for real bugs.
    """

    exit_code = 2
