"""The one careful path from a name to a file: open only regular files for
reading (a FIFO or a device would hang or stream forever), and resolve a name
given by a data set inside the folder it must stay in, following every link
(a symlinked folder inside the output must not lead out of it).

Every reader of the package (images, label PNGs, class and label lists, split
files, manifests) opens through :func:`open_regular`; every path built from a
data set's names is checked with :func:`inside` before any work.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

from .._errors import UserError

__all__ = [
    "PathEscapeError",
    "check_plain_name",
    "file_kind",
    "inside",
    "name_limit",
    "open_regular",
    "read_text",
]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class PathEscapeError(UserError, ValueError):
    """A name from a data set leads outside the folder it must stay in."""


def file_kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words (``"a FIFO (named pipe)"``)."""
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def open_regular(path: str | os.PathLike[str], what: str = "file") -> IO[bytes]:
    """Open ``path`` for binary reading, refusing anything but a regular file.

    The file is opened without blocking, so a FIFO with no writer cannot hang
    the call, and checked on the open descriptor (no race with a rename).

    Args:
        path (str or os.PathLike): The file (a link to a regular file is fine).
        what (str, optional): What the file is, for the message (``"image"``).
            Default: ``"file"``

    Returns:
        IO[bytes]: The open file.

    Raises:
        FileNotFoundError: When it does not exist.
        ValueError: When it is a folder, a FIFO, a socket or a device, or
            cannot be opened; the message names the file and why.

    Examples::

        >>> import os, tempfile
        >>> fifo = os.path.join(tempfile.mkdtemp(), "pipe.png")
        >>> os.mkfifo(fifo)
        >>> try:
        ...     open_regular(fifo, "image")
        ... except ValueError as error:
        ...     print(str(error).split(": ", 1)[1])
        it is a FIFO (named pipe), not a regular file
    """
    name = os.fspath(path)
    try:
        handle = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"no such {what}: {name}") from None
    except IsADirectoryError:
        raise ValueError(f"cannot read {what} {name}: it is a directory") from None
    except OSError as error:
        raise ValueError(f"cannot read {what} {name}: {error.strerror or error}") from None
    try:
        mode = os.fstat(handle).st_mode
        if stat.S_ISDIR(mode):
            raise ValueError(f"cannot read {what} {name}: it is a directory")
        if not stat.S_ISREG(mode):
            raise ValueError(
                f"cannot read {what} {name}: it is {file_kind(mode)}, not a regular file"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(handle, True)
        return os.fdopen(handle, "rb")
    except BaseException:
        os.close(handle)
        raise


def read_text(path: str | os.PathLike[str], what: str = "file") -> str:
    """A regular UTF-8 text file's content, without a byte-order mark (see
    :func:`open_regular`).

    Raises:
        FileNotFoundError: When it does not exist.
        ValueError: When it is not a regular file, or not UTF-8 text.
    """
    with open_regular(path, what) as stream:
        data = stream.read()
    try:
        # utf-8-sig: spreadsheets and Windows editors start the file with a byte-order mark.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"cannot read {what} {os.fspath(path)}: not UTF-8 text ({error.reason} at byte "
            f"{error.start})"
        ) from None


def check_plain_name(name: str, source: str) -> str:
    """Refuse a job name that is not a relative path down its folder.

    A name is a relative POSIX path: not empty, not absolute, no ``..``, ``.``
    or empty part, no backslash (a separator on Windows), no NUL.

    Args:
        name (str): The name (an image id, a labels file's path).
        source (str): Where it comes from, for the message.

    Returns:
        str: ``name``.

    Raises:
        PathEscapeError: When it is not a plain name.
    """
    parts = name.split("/")
    if (
        not name
        or "\0" in name
        or "\\" in name
        or name.startswith("/")
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise PathEscapeError(
            f"{source}: {name!r} is not a plain name inside the folder (no absolute path, "
            "no '..', '.' or empty part, no backslash)"
        )
    return name


def inside(folder: str | os.PathLike[str], path: str | os.PathLike[str], what: str) -> Path:
    """``path`` with every link resolved, checked to lie inside ``folder``'s real path.

    Args:
        folder (str or os.PathLike): The folder it must stay in.
        path (str or os.PathLike): The path (need not exist yet).
        what (str): What the path is, for the message.

    Returns:
        Path: The resolved path.

    Raises:
        PathEscapeError: When a link (or ``..``) leads it out of the folder.
    """
    base = Path(os.path.realpath(folder))
    resolved = Path(os.path.realpath(path))
    if resolved != base and base not in resolved.parents:
        raise PathEscapeError(
            f"{what} {os.fspath(path)} resolves to {resolved}, outside {os.fspath(folder)} "
            "(through a symbolic link or '..'); refusing to use it"
        )
    return resolved


def name_limit(folder: str | os.PathLike[str]) -> int:
    """The longest file name, in bytes, that the disk holding ``folder`` takes.

    ``folder`` need not exist yet: its nearest existing parent is asked (255 where
    the system cannot tell).

    Examples::

        >>> name_limit("/tmp") >= 14
        True
    """
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255
