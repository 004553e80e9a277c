"""Output folders and files of the commands, written through the one atomic writer
(:func:`captum_shallow.io.atomic_write`): a file appears complete under its name,
or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

from ..io._atomic import atomic_write, make_folder

__all__ = ["atomic_write", "make_folder", "write_arrays", "write_figure"]


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
