"""Atomic file writes shared by the command line and the pseudo-mask pipeline:
a file appears complete under its name, or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def open_temporary(path: str | os.PathLike[str]) -> tuple[int, str]:
    """Create ``.<name>.<random>.tmp`` next to ``path``; raises OSError if it cannot.

    The same folder makes :func:`os.replace` an atomic rename on one file system.
    """
    target = Path(path)
    return tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")


@contextlib.contextmanager
def replace_when_done(
    handle: int, temporary: str, path: str | os.PathLike[str]
) -> Iterator[IO[bytes]]:
    """Yield the temporary file; rename it to ``path`` on success, remove it on error."""
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes files private (0600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """:func:`open_temporary` then :func:`replace_when_done`; errors stay OSError."""
    with replace_when_done(*open_temporary(path), path) as stream:
        yield stream


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
