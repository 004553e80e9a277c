"""Signals that ask a run to end, and the data-loading workers they reach first.

A cluster scheduler (SLURM's ``SIGTERM`` and ``--signal``'s ``SIGUSR1``/``SIGUSR2``,
SGE's ``SIGUSR1``/``SIGUSR2`` and ``SIGXCPU``) or a closed terminal (``SIGHUP``) asks
a whole process group to end. :func:`stop_signals_interrupt` turns each into
:class:`~captum_shallow._errors.Interrupted` in the main process, as Ctrl-C's
``SIGINT`` is a ``KeyboardInterrupt``, so cleanup written for one runs for all.

The same signal kills the group's DataLoader workers, and torch's ``SIGCHLD``
handler then raises ``RuntimeError("DataLoader worker (pid N) is killed by signal:
Terminated.")`` in the main process: during the cleanup, or before the main process
sees the signal itself. The first is silenced (once a stop signal arrived, ``SIGCHLD``
gets a handler that does nothing, until the block ends); the second is read back as
the interruption it is by :func:`stopped_worker`.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from ._errors import Interrupted, UserError

__all__ = ["STOP_SIGNALS", "stop_signals_interrupt", "stopped_worker"]

#: Signals that ask a program to end, as cluster schedulers send them: each stops a
#: command the way Ctrl-C does.
STOP_SIGNALS = ("SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGXCPU")

#: torch's message when a DataLoader worker dies of a signal (``strsignal`` text).
_WORKER_KILLED = re.compile(r"DataLoader worker \(pid (\d+)\) is killed by signal: (.+?)\.?\s*$")
#: torch's message when a worker is gone and nothing says why.
_WORKER_EXITED = re.compile(r"DataLoader worker \(pid\(s\) ([\d, ]+)\) exited unexpectedly")

#: ``SIGCHLD`` handlers replaced while a stop is under way, restored after the block.
_saved_sigchld: list[Any] = []


def _numbers() -> list[int]:
    return [getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)]


def _ignore_child(signum: int, frame: FrameType | None) -> None:
    """A dead worker while the run stops: nothing to do."""


def _quiet() -> None:
    """Ignore further stop signals (the cleanup is not interrupted) and dead workers."""
    if threading.current_thread() is not threading.main_thread():
        return
    for number in _numbers():
        signal.signal(number, signal.SIG_IGN)
    if hasattr(signal, "SIGCHLD") and not _saved_sigchld:
        # A Python no-op, not SIG_DFL: a SIGCHLD already caught but not yet handled
        # would otherwise be reported as "ignored due to race condition".
        _saved_sigchld.append(signal.signal(signal.SIGCHLD, _ignore_child))


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Turn :data:`STOP_SIGNALS` into :class:`Interrupted` for the block.

    In the main thread only; the handlers (``SIGCHLD``'s too) are put back after.

    Examples::

        >>> with stop_signals_interrupt():
        ...     pass
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        _quiet()  # the first one stops the run
        raise Interrupted(signum)

    previous = {number: signal.signal(number, stop) for number in _numbers()}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if _saved_sigchld:
            signal.signal(signal.SIGCHLD, _saved_sigchld.pop())


def stopped_worker(error: BaseException) -> BaseException | None:
    """What torch's error about a dead DataLoader worker means for the user.

    Args:
        error (BaseException): An error raised while the workers ran.

    Returns:
        :class:`Interrupted` when a worker died of a stop signal (the group's, which
        reached it first: further stop signals are then ignored); a one-line
        :class:`~captum_shallow._errors.UserError` when it died of another signal or
        exited unexpectedly (the out-of-memory killer's ``SIGKILL``, say); None
        for any other error.

    Examples::

        >>> stopped_worker(ValueError("no worker here")) is None
        True
    """
    if not isinstance(error, RuntimeError):
        return None
    text = str(error).strip()
    killed = _WORKER_KILLED.search(text)
    if killed is not None:
        by_text = {signal.strsignal(n): n for n in _numbers()}
        signum = by_text.get(killed.group(2).strip())
        if signum is not None:
            _quiet()
            return Interrupted(signum)
        return UserError(
            f"a data-loading worker (process {killed.group(1)}) was killed by signal "
            f"'{killed.group(2).strip()}' (out of memory?); rerun with fewer --workers "
            "(0 loads in the main process): the same command resumes"
        )
    exited = _WORKER_EXITED.search(text)
    if exited is not None:
        return UserError(
            f"a data-loading worker (process {exited.group(1).strip()}) exited unexpectedly "
            "(out of memory?); rerun with fewer --workers (0 loads in the main process): "
            "the same command resumes"
        )
    return None
