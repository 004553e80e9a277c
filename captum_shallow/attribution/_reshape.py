r"""Layer outputs back to ``(N, C, H, W)`` grids: token sequences and channels-last maps.

A CAM sums over the channels of a feature map. A vision transformer's block
returns a token sequence ``(N, P + h w, C)`` whose first ``P`` tokens (a class
token, registers) belong to no place in the image; Swin's and ConvNeXt-style
blocks return channels-last maps ``(N, h, w, C)``. :func:`reshape_layer_tensors`
turns a layer's gradient and activation into ``(N, C, h, w)`` with one and the
same transform, so the CAM's sums pair each gradient entry with its activation.

``reshape="auto"`` reads the layout from the activation's shape and the input's
``(H, W)`` (:func:`infer_layout`); a callable (pytorch-grad-cam's
``reshape_transform`` works as is) takes one tensor and returns the grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

#: ``reshape=`` of the CAM classes: None (the layer's output as it is), ``"auto"``
#: or a callable from one layer tensor to ``(N, C, h, w)``.
Reshape = Callable[[Tensor], Tensor] | Literal["auto"] | None

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


def to_grid(tensor: Tensor, layout: GridLayout) -> Tensor:
    """``tensor`` as ``(N, C, h, w)`` by ``layout``.

    Args:
        tensor (Tensor): A layer output (or its gradient) in ``layout``.
        layout (GridLayout): Its layout.

    Returns:
        Tensor: A view (tokens and NHWC permuted, prefix tokens dropped).
    """
    if layout.layout == "NCHW":
        return tensor
    if layout.layout == "tokens":
        tensor = tensor[:, layout.prefix :].unflatten(1, layout.grid)
    return tensor.permute(0, 3, 1, 2)


def check_reshape(reshape: object) -> Reshape:
    """``reshape`` if it is a valid ``reshape=`` argument, else a TypeError.

    Args:
        reshape (object): The argument.

    Returns:
        Reshape: The argument.
    """
    if reshape is None or reshape == "auto" or (callable(reshape) and not isinstance(reshape, str)):
        return reshape
    raise TypeError(
        f"reshape must be None, 'auto' or a callable from a layer tensor to (N, C, H, W), "
        f"got {reshape!r}"
    )


def reshape_layer_tensors(
    reshape: Reshape,
    pairs: list[tuple[tuple[Tensor, ...], tuple[Tensor, ...]]],
    inputs: tuple[Tensor, ...],
    names: Callable[[], list[str]],
) -> list[tuple[tuple[Tensor, ...], tuple[Tensor, ...]]]:
    """Each layer's gradients and activations through one and the same ``reshape``.

    Args:
        reshape (Reshape): None, ``"auto"`` or a callable.
        pairs (list): ``(gradients, activations)`` per layer.
        inputs (tuple[Tensor, ...]): The model inputs; ``"auto"`` reads ``(H, W)``
            from the last two dimensions of the first.
        names (Callable[[], list[str]]): The layers' names, for error messages.

    Returns:
        list: The pairs with every tensor as ``(N, C, h, w)``.

    Raises:
        ValueError: When ``"auto"`` finds no grid or a callable returns
            something other than a tensor of the batch.
    """
    if reshape is None:
        return pairs
    if reshape == "auto" and inputs[0].dim() < 3:
        raise ValueError(
            f"reshape='auto' reads the image size from the input's last two dimensions, "
            f"but the input has shape {tuple(inputs[0].shape)}; pass a callable"
        )
    size = (int(inputs[0].shape[-2]), int(inputs[0].shape[-1]))
    out = []
    for index, (gradients, activations) in enumerate(pairs):
        # Each gradient takes the transform its activation's shape calls for.
        out.append(
            (
                tuple(
                    _reshaped(reshape, gradient, activation, size, names, index)
                    for gradient, activation in zip(gradients, activations, strict=True)
                ),
                tuple(
                    _reshaped(reshape, activation, activation, size, names, index)
                    for activation in activations
                ),
            )
        )
    return out


def _reshaped(
    reshape: Callable[[Tensor], Tensor] | Literal["auto"],
    tensor: Tensor,
    activation: Tensor,
    size: tuple[int, int],
    names: Callable[[], list[str]],
    index: int,
) -> Tensor:
    if reshape == "auto":
        layout = infer_layout(tuple(activation.shape), size)
        if layout is None:
            raise ValueError(
                f"reshape='auto' finds no grid in layer {names()[index]!r}'s output of shape "
                f"{tuple(activation.shape)} for a {size[0]}x{size[1]} input (it reads "
                "(N, C, H, W), (N, H, W, C) and (N, prefix + H*W, C)); pass a callable "
                "that returns (N, C, H, W)"
            )
        return to_grid(tensor, layout)
    result = reshape(tensor)
    if not isinstance(result, Tensor) or result.dim() < 3 or result.shape[0] != tensor.shape[0]:
        got = tuple(result.shape) if isinstance(result, Tensor) else type(result).__name__
        raise ValueError(
            f"reshape must return an (N, C, H, W) tensor of the batch; for layer "
            f"{names()[index]!r} of shape {tuple(tensor.shape)} it returned {got}"
        )
    return result


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
