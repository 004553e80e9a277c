"""The package's errors for its users: one line that names what to fix (a name, a
path, a file, a missing package)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem the user can fix: a bad option, path or file, a locked or full disk.

    Its message is one line that names the problem. The command line prints it as
    ``captum-shallow: error: ...`` and exits with :attr:`exit_code` (2), without a
    traceback; the library raises it where a command and the Python API share a
    step (writing files, running a pseudo-mask job), and a traceback is kept for
    real bugs.
    """

    exit_code = 2


class WriteError(UserError, OSError):
    """A file could not be written (a missing or read-only folder, a full disk).

    It is an :class:`OSError` too, with the ``errno``, ``strerror`` and
    ``filename`` of the failed call, so a caller can tell a full disk apart.
    """

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal that asks a program to end: Ctrl-C's ``SIGINT``,
    or a cluster scheduler's ``SIGTERM``, ``SIGHUP``, ``SIGUSR1``, ``SIGUSR2`` or
    ``SIGXCPU``.

    It is a :class:`KeyboardInterrupt`, so cleanup written for Ctrl-C (temporary
    files removed, a manifest marked interrupted) runs for every such signal;
    ``signum`` says which one (the exit status is ``128 + signum``).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum


def signal_name(signum: int) -> str:
    """``"SIGTERM"`` for 15, ``"signal 99"`` for a number without a name."""
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class MissingDependencyError(ImportError):
    """An optional package is not installed; the message names the extra to install."""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> ValueError:
    """A :class:`ValueError` for an unknown name, suggesting the close known names.

    Args:
        kind (str): What the name is meant to name, e.g. ``"model"``.
        name (str): The name that was not found.
        choices (Iterable[str]): The known names.

    Returns:
        ValueError: ``unknown <kind> '<name>'`` followed by up to three close names
        (by :func:`difflib.get_close_matches`), or by every choice when there are
        at most eight and none is close.
    """
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    if not close:
        # Case and separators are the usual slips: "ResNet_50" for "resnet50".
        folded = {_fold(choice): choice for choice in choices}
        close = [folded[key] for key in difflib.get_close_matches(_fold(name), folded, n=3)]
    if close:
        hint = "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    elif len(choices) <= 8:
        hint = "; choose from " + ", ".join(repr(c) for c in choices)
    else:
        hint = ""
    return ValueError(f"unknown {kind} {name!r}{hint}")


def _fold(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def one_line(error: BaseException) -> str:
    """An exception's message on one line: the package's one error formatter.

    Args:
        error (BaseException): The exception.

    Returns:
        str: Its message with runs of whitespace (newlines too) made one space,
        a :class:`KeyError`'s quotes dropped, or the exception's type name when
        it has no message.

    Examples::

        >>> one_line(ValueError("bad   input"))
        'bad input'
    """
    text = " ".join(str(error).split())
    if isinstance(error, KeyError) and text.startswith("'"):
        text = text.strip("'")
    return text or type(error).__name__
