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

from collections.abc import Callable
from typing import Literal

from torch import Tensor

from .._layout import GridLayout, infer_layout

#: ``reshape=`` of the CAM classes: None (the layer's output as it is), ``"auto"``
#: or a callable from one layer tensor to ``(N, C, h, w)``.
Reshape = Callable[[Tensor], Tensor] | Literal["auto"] | None


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
