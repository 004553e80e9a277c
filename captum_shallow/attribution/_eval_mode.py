"""What an attribution does to the model and its inputs before one forward pass:
layers run in eval mode (a model left in train mode would update its BatchNorm
running statistics, and its dropout would make the maps random), put back as
they were afterwards; integer images are refused with what to do instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch import Tensor
from torch.nn import Module

__all__ = ["check_image_dtype", "eval_mode"]


@contextlib.contextmanager
def eval_mode(forward_func: Callable[..., Any]) -> Iterator[None]:
    """Run the block with every module of ``forward_func`` in eval mode.

    A model left in train mode would change its BatchNorm running statistics
    at each attribution, and compute its maps from the batch's statistics and
    with dropout. Each module's own ``training`` flag is put back afterwards,
    also when the block raises, so the model leaves as it came.

    Args:
        forward_func (Callable): The model (anything else is left alone).

    Examples::

        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.BatchNorm2d(3)).train()
        >>> with eval_mode(model):
        ...     _ = model(torch.rand(2, 3, 4, 4))
        ...     model.training
        False
        >>> model.training, float(model[0].running_mean.abs().sum())
        (True, 0.0)
    """
    if not isinstance(forward_func, Module):
        yield
        return
    training = [(module, module.training) for module in forward_func.modules()]
    if not any(flag for _, flag in training):
        yield
        return
    forward_func.eval()
    try:
        yield
    finally:
        for module, flag in training:
            module.training = flag


def check_image_dtype(inputs: Sequence[Tensor]) -> None:
    """Refuse integer images: a ``(N, C, H, W)`` input of an integer dtype.

    A model's images are floating point, normalised; a ``uint8`` photo would
    otherwise fail deep inside the first convolution. Integer inputs of another
    shape (token ids for an embedding) pass.

    Raises:
        TypeError: Naming the input, its dtype and the fix.

    Examples::

        >>> import torch
        >>> check_image_dtype((torch.zeros(1, 3, 8, 8, dtype=torch.uint8),))
        Traceback (most recent call last):
        ...
        TypeError: inputs[0] is a (1, 3, 8, 8) torch.uint8 image; ...
    """
    for index, tensor in enumerate(inputs):
        if tensor.ndim == 4 and not (tensor.is_floating_point() or tensor.is_complex()):
            raise TypeError(
                f"inputs[{index}] is a {tuple(tensor.shape)} {tensor.dtype} image; the model "
                "takes floating-point, normalised images: pass preprocess(image) "
                "(captum_shallow.io.preprocess reads uint8 0..255 and normalises it)"
            )
