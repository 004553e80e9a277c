"""Atomic output: a file appears complete under its name, or not at all."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

from ..io._atomic import open_temporary, replace_when_done
from ._errors import CLIError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path``; on success rename it to ``path``.

    The temporary file lives in the same folder (so :func:`os.replace` is an
    atomic rename on one file system) and is removed if the block raises.

    Args:
        path (str or os.PathLike): The file to write; its folder must exist.

    Yields:
        IO[bytes]: The temporary file, open for binary writing.

    Examples::

        >>> import os, tempfile
        >>> from captum_shallow.cli import atomic_write
        >>> path = os.path.join(tempfile.mkdtemp(), "out.bin")
        >>> with atomic_write(path) as stream:
        ...     _ = stream.write(b"done")
        >>> open(path, "rb").read(), os.listdir(os.path.dirname(path))
        (b'done', ['out.bin'])

    Raises:
        CLIError: When the file cannot be written (a missing or read-only folder,
            a full disk, a folder of that name); nothing is left behind.
    """
    target = Path(path)
    try:
        with replace_when_done(*open_temporary(target), target) as stream:
            yield stream
    except OSError as error:
        raise CLIError(f"cannot write {target}: {error.strerror or error}") from None


def make_folder(path: str | os.PathLike[str]) -> Path:
    """Create an output folder (and its parents) if needed.

    Args:
        path (str or os.PathLike): The folder.

    Returns:
        Path: The folder.

    Raises:
        CLIError: When it cannot be created or is a file.

    Examples::

        >>> import tempfile
        >>> from captum_shallow.cli import make_folder
        >>> make_folder(tempfile.mkdtemp() + "/a/b").is_dir()
        True
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise CLIError(f"output folder {folder} is not a folder") from None
    except OSError as error:
        raise CLIError(f"cannot create output folder {folder}: {error.strerror}") from None
    return folder


def write_figure(figure: Figure, path: str | os.PathLike[str], dpi: float = 100) -> Path:
    """Save a figure as PNG, atomically.

    Args:
        figure (Figure): The figure.
        path (str or os.PathLike): The PNG file.
        dpi (float, optional): Pixels per inch.
            Default: 100

    Returns:
        Path: ``path``.

    Examples::

        >>> import tempfile
        >>> from matplotlib.figure import Figure
        >>> from captum_shallow.cli import write_figure
        >>> write_figure(Figure(figsize=(1, 1)), tempfile.mkdtemp() + "/f.png").read_bytes()[:4]
        b'\x89PNG'
    """
    with atomic_write(path) as stream:
        figure.savefig(stream, format="png", dpi=dpi)
    return Path(path)


def write_arrays(path: str | os.PathLike[str], **arrays: npt.ArrayLike) -> Path:
    """Save arrays as an uncompressed ``.npz`` archive, atomically.

    Args:
        path (str or os.PathLike): The ``.npz`` file.
        **arrays (ArrayLike): The arrays, by name.

    Returns:
        Path: ``path``.

    Examples::

        >>> import tempfile
        >>> from captum_shallow.cli import write_arrays
        >>> path = write_arrays(tempfile.mkdtemp() + "/maps.npz", fused=np.ones((2, 2)))
        >>> np.load(path)["fused"].shape
        (2, 2)
    """
    with atomic_write(path) as stream:
        np.savez(stream, **arrays)  # type: ignore[arg-type]
    return Path(path)
