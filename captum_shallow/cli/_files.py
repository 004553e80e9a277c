"""Output folders and files of the commands, written through the one atomic writer
(:func:`captum_shallow.io.atomic_write`): a file appears complete under its name,
or not at all.

Every figure, archive and page a command writes carries the package's mark (a
PNG text chunk ``Software``, a zip comment, the explorer page's own markup), so
that a later run replaces only files that the package wrote
(:func:`check_replaceable`), never a user's file that happens to have the name.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

from ..io._atomic import atomic_write, make_folder
from ..io._paths import open_regular
from ._errors import CLIError

__all__ = [
    "MARK",
    "atomic_write",
    "check_replaceable",
    "make_folder",
    "write_arrays",
    "write_figure",
]

#: The package's mark in the files it writes.
MARK = "captum-shallow"
#: What the explorer's page (``Explorer.to_html``) holds near its start.
_PAGE_MARK = b'<body class="csx-page">'


def check_replaceable(
    path: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]
) -> None:
    """Refuse to write ``path`` over an input of the run or a file the package did not write.

    Args:
        path (str or os.PathLike): A file the command is about to write.
        inputs (Iterable): The run's input files.

    Raises:
        CLIError: When ``path`` is one of ``inputs`` (by real path, links
            followed), or exists without the package's mark.
    """
    target = Path(path)
    if not os.path.lexists(target):
        return
    real = os.path.realpath(target)
    if any(os.path.realpath(given) == real for given in inputs):
        raise CLIError(
            f"{target} is an input of this run; refusing to overwrite it: choose another --out"
        )
    if not _marked(target):
        raise CLIError(
            f"{target} exists and was not written by captum-shallow; refusing to overwrite it: "
            "move it away or choose another --out"
        )


def _marked(path: Path) -> bool:
    """Whether ``path`` is a regular file that carries the package's mark."""
    try:
        with open_regular(path) as stream:
            head = stream.read(1 << 16)
            stream.seek(0)
            if head.startswith(b"\x89PNG"):
                from PIL import Image

                with Image.open(stream) as image:
                    return getattr(image, "text", {}).get("Software") == MARK
            if head.startswith(b"PK"):
                with zipfile.ZipFile(stream) as archive:
                    return archive.comment == MARK.encode()
            return _PAGE_MARK in head
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


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
        figure.savefig(stream, format="png", dpi=dpi, metadata={"Software": MARK})
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
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.comment = MARK.encode()
    with atomic_write(path) as stream:
        stream.write(buffer.getvalue())
    return Path(path)
