"""The one error type of the command line."""

from __future__ import annotations

from .._errors import UserError

#: A user error: ``main`` prints it as one ``captum-shallow: error: ...`` line, exit 2.
#: Subcommands raise it for anything the user can fix (a missing file, an unknown
#: name, a bad option); a traceback is kept for real bugs. It is the library's
#: :class:`~captum_shallow._errors.UserError`, so the errors of the steps that the
#: command line shares with the library (writing files, a pseudo-mask job) print
#: the same way.
CLIError = UserError
