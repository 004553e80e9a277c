"""Atomic file writes, the one writer of the command line, the pseudo-mask
pipeline and the library:
a file appears complete under its name, or not at all; the lock that keeps
one run at a time in an output folder; and the space a run sets aside for its
report, so that a full disk does not leave it untold.

Every temporary file the package creates is named
``.captum-shallow-<name>.<random>.tmp``, so that the leftovers of a killed run
can be told apart from a user's own files and only they are removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from .._errors import UserError, WriteError
from ._paths import file_kind

#: The start of every temporary file name the package creates.
TEMPORARY_PREFIX = ".captum-shallow-"
TEMPORARY_SUFFIX = ".tmp"
#: How much of the target's name a temporary name keeps: at most 4 x 40 bytes of
#: UTF-8, so prefix, name, random part and suffix stay well under 255 bytes.
TEMPORARY_NAME_CHARS = 40
#: The lock file of an output folder (see :func:`folder_lock`).
LOCK_NAME = ".captum-shallow.lock"


class FolderLockedError(OSError):
    """Another live process holds the folder's lock; ``owner`` says which."""

    def __init__(self, folder: Path, owner: str) -> None:
        super().__init__(f"{folder} is in use by another run ({owner})")
        self.folder = folder
        self.owner = owner


class UnsafeLockError(UserError, OSError):
    """The lock file's path is a link or a special file: it is left alone."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(
            f"{path} is {kind}; the lock file is never followed or shared, so the run is "
            "refused: remove it (it is not the package's), then rerun"
        )


def open_temporary(path: str | os.PathLike[str]) -> tuple[int, str]:
    """Create ``.captum-shallow-<name>.<random>.tmp`` next to ``path``; raises OSError
    if it cannot.

    The same folder makes :func:`os.replace` an atomic rename on one file system.
    """
    target = Path(path)
    # The name is cut short: a target near the file system's name-length limit
    # (255 bytes) must not fail because of what the temporary name adds to it.
    return tempfile.mkstemp(
        dir=target.parent,
        prefix=f"{TEMPORARY_PREFIX}{target.name[:TEMPORARY_NAME_CHARS]}.",
        suffix=TEMPORARY_SUFFIX,
    )


@contextlib.contextmanager
def replace_when_done(
    handle: int, temporary: str, path: str | os.PathLike[str]
) -> Iterator[IO[bytes]]:
    """Yield the temporary file; rename it to ``path`` on success, remove it on error.

    The data reach the disk before the rename (``fsync`` of the file) and the
    rename itself after it (``fsync`` of the folder), so a power cut leaves the
    old file or the whole new one under ``path``, never an empty or short one.
    """
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes files private (0600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_folder(Path(path).parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path``; on success rename it to ``path``.

    The package's one way to write a file: the temporary file lives in the same
    folder (so :func:`os.replace` is an atomic rename on one file system) and is
    removed if the block raises, so a file appears complete under its name, or
    not at all.

    Args:
        path (str or os.PathLike): The file to write; its folder must exist.

    Yields:
        IO[bytes]: The temporary file, open for binary writing.

    Raises:
        WriteError: When the file cannot be written (a missing or read-only
            folder, a full disk, a folder of that name); nothing is left behind.
            It is an :class:`OSError` with the failed call's ``errno``, and its
            message is one line: ``cannot write <path>: <reason>``. A ``path``
            that is a symbolic link, a folder, a FIFO or a device is refused
            (the rename would drop it).

    Examples::

        >>> import os, tempfile
        >>> from captum_shallow.io import atomic_write
        >>> path = os.path.join(tempfile.mkdtemp(), "out.bin")
        >>> with atomic_write(path) as stream:
        ...     _ = stream.write(b"done")
        >>> open(path, "rb").read(), os.listdir(os.path.dirname(path))
        (b'done', ['out.bin'])
    """
    target = Path(path)
    try:
        _check_replaceable(target)
        with replace_when_done(*open_temporary(target), target) as stream:
            yield stream
    except WriteError:
        raise
    except OSError as error:
        raise WriteError(error.errno, error.strerror or str(error), str(target)) from None


def make_folder(path: str | os.PathLike[str]) -> Path:
    """Create an output folder (and its parents) if needed.

    Args:
        path (str or os.PathLike): The folder.

    Returns:
        Path: The folder.

    Raises:
        UserError: When it cannot be created or is a file.

    Examples::

        >>> import tempfile
        >>> from captum_shallow.io._atomic import make_folder
        >>> make_folder(tempfile.mkdtemp() + "/a/b").is_dir()
        True
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"output folder {folder} is not a folder") from None
    except OSError as error:
        raise UserError(f"cannot create output folder {folder}: {error.strerror}") from None
    return folder


def remove_temporaries(folder: str | os.PathLike[str]) -> int:
    """Remove the package's temporary files left in ``folder`` (not below it) by a
    killed run; any other file stays. Returns how many were removed."""
    removed = 0
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            if (
                entry.name.startswith(TEMPORARY_PREFIX)
                and entry.name.endswith(TEMPORARY_SUFFIX)
                and entry.is_file(follow_symlinks=False)
            ):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``folder``'s lock for the block: one run at a time writes there.

    The lock is an exclusive :func:`fcntl.flock` on ``<folder>/.captum-shallow.lock``,
    which holds the owner's process id and host. The kernel releases it when its
    process dies, so the file a killed run leaves behind is simply taken over.

    Yields:
        Path: The lock file (removed when the block ends).

    Raises:
        FolderLockedError: When a live process holds the lock.
        UnsafeLockError: When the lock's path is a symbolic link, a hard link to
            another file or not a regular file (it is never followed or written).
    """
    import fcntl  # POSIX only; imported here so that atomic writes work everywhere

    path = Path(folder) / LOCK_NAME
    while True:
        handle = _open_lock(path)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(handle, 256).decode(errors="replace").split()
            os.close(handle)
            pid, host = [*owner, "?", "?"][:2]
            raise FolderLockedError(Path(folder), f"process {pid} on {host}") from None
        # The previous holder removes the file on its way out: a lock taken on
        # the removed file would lock nothing, so try again on the new one.
        if _is_same_file(handle, path):
            break
        os.close(handle)
    try:
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still locked, so no one else holds this file
        os.close(handle)


@contextlib.contextmanager
def space_reserve(folder: str | os.PathLike[str], size: int) -> Iterator[Callable[[], None]]:
    """Hold ``size`` bytes of the disk that holds ``folder`` for the block.

    A run that fills the disk frees them (the yielded function) before it writes
    its report, which then still fits. The bytes sit in one of the package's
    temporary files, so a killed run's reserve is removed like its other leftovers
    (:func:`remove_temporaries`); the block's end frees them too.

    Yields:
        Callable[[], None]: Frees the reserve now (later calls do nothing).

    Raises:
        OSError: When the disk lacks the space (nothing is left behind).
    """
    handle, path = open_temporary(Path(folder) / "reserve")

    def release() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    try:
        with os.fdopen(handle, "wb") as stream:
            # Random bytes: a compressing file system would store zeros in no space.
            stream.write(os.urandom(size))
            stream.flush()
            os.fsync(stream.fileno())  # a file system that allocates late fails here
    except BaseException:
        release()
        raise
    try:
        yield release
    finally:
        release()


def _open_lock(path: Path) -> int:
    """Open (or create) a lock file that is a regular file of one name only.

    The lock file is truncated and written, so it must never lead elsewhere: a
    symbolic link is not followed (``O_NOFOLLOW``), and a hard link to another
    file, a FIFO or a device is refused, untouched.
    """
    try:
        handle = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as error:
        if os.path.islink(path):
            raise UnsafeLockError(path, "a symbolic link") from None
        raise error from None
    info = os.fstat(handle)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(handle)
        kind = "a hard link to another file" if stat.S_ISREG(info.st_mode) else "not a file"
        raise UnsafeLockError(path, kind)
    return handle


def _check_replaceable(target: Path) -> None:
    """Refuse to replace anything but a regular file: the rename would silently
    drop a user's symbolic link, FIFO or device in its place."""
    try:
        mode = os.lstat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    if not stat.S_ISREG(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else file_kind(mode)
        raise WriteError(
            errno.EEXIST,
            f"it is {kind}, not a regular file (only regular files are replaced)",
            str(target),
        )


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where folders cannot be opened."""
    try:
        handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # Windows: a folder cannot be opened, and NTFS journals renames
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on a folder
            os.fsync(handle)
    finally:
        os.close(handle)


def _is_same_file(handle: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle), os.stat(path))
    except FileNotFoundError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
