"""Label maps as PNG files in PASCAL VOC's format: one byte per pixel (label 0
the background, 255 "void"), with VOC's colour map as palette."""

from __future__ import annotations

import os
from typing import IO

import numpy as np
import numpy.typing as npt

from ._paths import open_regular

__all__ = ["read_label_png", "voc_palette", "write_label_png"]


def voc_palette() -> list[int]:
    """VOC's colour map: label ``l`` gets the colour of its bits, interleaved.

    Returns:
        list[int]: 768 values, ``[r0, g0, b0, r1, ...]``, for ``Image.putpalette``.

    Examples::

        >>> voc_palette()[3:9]
        [128, 0, 0, 0, 128, 0]
    """
    palette = []
    for label in range(256):
        rgb = [0, 0, 0]
        value = label
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette += rgb
    return palette


def write_label_png(stream: IO[bytes], mask: npt.NDArray[np.uint8]) -> None:
    """Write a label map as a palette PNG in VOC's format.

    Args:
        stream (IO[bytes]): Binary stream to write to.
        mask (ndarray): ``(H, W)`` labels in 0..255.

    Raises:
        ValueError: For labels outside 0..255.
    """
    from PIL import Image

    if mask.size and (int(mask.max()) > 255 or int(mask.min()) < 0):
        raise ValueError(
            f"labels {int(mask.min())}..{int(mask.max())} do not fit a VOC label PNG (0..255)"
        )
    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(voc_palette())
    image.save(stream, format="PNG")


def read_label_png(path: str | os.PathLike[str]) -> npt.NDArray[np.uint8]:
    """Read a label PNG: a palette (``P``) or greyscale (``L``) image.

    A palette image must use VOC's colours for the labels it holds, so that a
    colour means the same class in every file.

    Args:
        path (str or os.PathLike): The PNG.

    Returns:
        ndarray: ``(H, W)`` uint8 labels.

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: For an unreadable file (a folder, a FIFO or a device too,
            refused without blocking), a colour (RGB) image or another
            palette; the message names the file.
    """
    with open_regular(path, "label image") as stream:
        return _decode(stream, os.fspath(path))


def _decode(stream: IO[bytes], path: str) -> npt.NDArray[np.uint8]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(stream) as image:
            mode = image.mode
            palette = image.getpalette() if mode == "P" else None
            labels = np.array(image, dtype=np.uint8) if mode in ("P", "L") else None
    except (
        OSError,
        UnidentifiedImageError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as error:
        raise ValueError(f"cannot read label image {path}: {error}") from None
    if labels is None:
        raise ValueError(
            f"{path} is a {mode} image; expected a label PNG (palette 'P' or greyscale 'L', "
            "one label per pixel) in VOC's format"
        )
    if palette is not None:
        used = np.unique(labels)
        expected = np.array(voc_palette(), dtype=np.int64).reshape(-1, 3)
        have = np.zeros((256, 3), dtype=np.int64)
        given = np.array(palette, dtype=np.int64).reshape(-1, 3)[:256]
        have[: len(given)] = given
        wrong = [int(label) for label in used if (have[label] != expected[label]).any()]
        if wrong:
            raise ValueError(
                f"palette mismatch in {path}: label {wrong[0]} is coloured "
                f"{tuple(have[wrong[0]].tolist())}, VOC's palette has "
                f"{tuple(expected[wrong[0]].tolist())}"
            )
    return labels
