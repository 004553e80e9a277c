r"""Where the spatial grid sits in a layer's output: ``(N, C, H, W)`` maps,
channels-last maps ``(N, H, W, C)`` and transformer token sequences
``(N, P + h w, C)``. Read by the layer search (:mod:`captum_shallow.models`) and
by the CAMs' ``reshape="auto"`` (:mod:`captum_shallow.attribution`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

#: The most tokens ``"auto"`` drops before the grid: a class token and registers.
MAX_PREFIX_TOKENS = 16


@dataclass(frozen=True)
class GridLayout:
    """Where the grid sits in a layer tensor.

    Args:
        layout (str): ``"NCHW"``, ``"NHWC"`` (channels last) or ``"tokens"``
            (``(N, prefix + h w, C)``, row-major).
        grid (tuple[int, int]): The map's ``(h, w)``.
        channels (int): The channels ``C``.
        prefix (int): Tokens before the grid (class token, registers); 0
            unless ``layout`` is ``"tokens"``.
    """

    layout: Literal["NCHW", "NHWC", "tokens"]
    grid: tuple[int, int]
    channels: int
    prefix: int = 0


def infer_layout(shape: Sequence[int], input_size: tuple[int, int]) -> GridLayout | None:
    """The layout of a layer output of ``shape`` for an input of ``input_size``.

    A grid ``(h, w)`` fits the input ``(H, W)`` when both sides shrink by about
    one stride (within one cell). A 4D shape is ``NCHW`` when its last two
    dimensions fit, else ``NHWC`` when its middle two do; a 3D shape is a token
    sequence when dropping the fewest leading tokens (at most
    ``MAX_PREFIX_TOKENS``, and fewer than the grid's) leaves a fitting grid.

    Args:
        shape (Sequence[int]): The tensor's shape, batch first.
        input_size (tuple[int, int]): The model input's ``(H, W)``.

    Returns:
        GridLayout or None: None when no reading fits.

    Examples::

        >>> infer_layout((2, 197, 768), (224, 224))
        GridLayout(layout='tokens', grid=(14, 14), channels=768, prefix=1)
        >>> infer_layout((2, 56, 56, 96), (224, 224)).layout
        'NHWC'
    """
    height, width = input_size
    if len(shape) == 4:
        if _fits(shape[2], shape[3], height, width):
            return GridLayout("NCHW", (shape[2], shape[3]), shape[1])
        if _fits(shape[1], shape[2], height, width):
            return GridLayout("NHWC", (shape[1], shape[2]), shape[3])
    if len(shape) == 3:
        tokens = shape[1]
        for prefix in range(min(MAX_PREFIX_TOKENS, tokens - 1) + 1):
            grid = _token_grid(tokens - prefix, height, width)
            if grid is not None and grid[0] * grid[1] > prefix:
                return GridLayout("tokens", grid, shape[2], prefix)
    return None


def _fits(h: int, w: int, height: int, width: int) -> bool:
    """Whether an ``h`` x ``w`` grid is the input shrunk by one stride, within a cell."""
    return 1 <= h <= height and 1 <= w <= width and abs(h * width - w * height) < max(height, width)


def _token_grid(count: int, height: int, width: int) -> tuple[int, int] | None:
    """The fitting ``(h, w)`` with ``h * w == count``, if any."""
    for h in range(1, math.isqrt(count) + 1):
        if count % h == 0:
            for grid in ((h, count // h), (count // h, h)):
                if _fits(*grid, height, width):
                    return grid
    return None
