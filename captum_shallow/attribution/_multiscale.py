r"""Multi-scale and flip inference: one map averaged over resized and mirrored inputs.

IRN (Ahn et al., 2019, ``step/make_cam.py``) computes a CAM of the image at several
scales and of its horizontal mirror, brings every map to one size and sums them
before normalising. With scales :math:`s \in S` relative to the input and flips
:math:`f \in F` (identity, and the horizontal flip when asked),

.. math::

    \bar M = N\Big(\sum_{s \in S} \sum_{f \in F}
        f\big(N(\mathrm{up}(M(f(\mathrm{resize}_s(x)))))\big)\Big),

with every map upsampled (bilinear) to the size of the first scale's map (or the
given ``output_size``) and divided by its own maximum, :math:`N(M) = M^+ / \max M^+`,
so that each pass counts the same (a raw Grad-CAM grows as its map shrinks: the
gradient of a global average pool is :math:`1 / hw`). Each pass is an ordinary
attribution, so the cost is about :math:`\sum_s s^2` times one pass at scale 1,
twice that with flips.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor

__all__ = ["IRN_SCALES", "check_scales", "multiscale_attribute"]

_TINY = 1e-12

#: IRN's scales relative to the input (``step/make_cam.py``: 1.0, 0.5, 1.5, 2.0).
IRN_SCALES: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)


def check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """Validate scales: a non-empty sequence of positive finite numbers."""
    if isinstance(scales, (int, float)):
        scales = (scales,)
    values = tuple(scales)
    if not values or any(
        isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0
        for s in values
    ):
        raise ValueError(f"scales must be positive numbers, got {scales!r}")
    return tuple(float(s) for s in values)


def _resize(inputs: tuple[Tensor, ...], scale: float, flip: bool) -> tuple[Tensor, ...]:
    out = []
    for x in inputs:
        if x.dim() == 4 and x.is_floating_point():
            if scale != 1.0:
                size = (max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale)))
                x = F.interpolate(
                    x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1
                )
            if flip:
                x = x.flip(-1)
        out.append(x)
    return tuple(out)


def multiscale_attribute(
    attribute: Callable[[tuple[Tensor, ...]], Tensor],
    inputs: Tensor | tuple[Tensor, ...],
    scales: Sequence[float] = IRN_SCALES,
    flips: bool = True,
    output_size: tuple[int, int] | None = None,
) -> Tensor:
    r"""The mean of ``attribute``'s maps over resized and mirrored inputs.

    Every 4-D floating-point tensor of ``inputs`` is resized (bilinear,
    antialiased when shrinking) by each scale and, with ``flips``, also mirrored
    left-right; each map is mirrored back, upsampled (bilinear) to
    ``output_size``, clamped at 0 and divided by its maximum; the maps are
    averaged and the mean divided by its maximum. A single scale 1.0 without
    flips returns ``attribute(inputs)`` itself.

    The average keeps the autograd graph of every map ``attribute`` returns, so
    all passes' graphs live until it is freed; return detached maps (as
    ``ShallowCAM.attribute(scales=...)`` does) unless the average must be
    differentiable.

    Args:
        attribute (Callable): ``attribute(inputs) -> (N, 1, h, w)`` maps, with
            ``inputs`` a tuple of tensors (e.g. ``lambda x: cam.attribute(x,
            target=t)`` of any Captum layer attribution).
        inputs (Tensor or tuple[Tensor, ...]): The batch at scale 1.
        scales (sequence of float, optional): Sizes relative to the input.
            Default: IRN's ``(1.0, 0.5, 1.5, 2.0)``
        flips (bool, optional): Also average the maps of the mirrored inputs.
            Default: True
        output_size (tuple[int, int], optional): The size of the averaged map.
            Default: None (the size of the first scale's map)

    Returns:
        Tensor: ``(N, 1, H, W)`` averaged maps, each divided by its maximum.

    Examples::

        >>> import torch
        >>> from captum_shallow.attribution import multiscale_attribute
        >>> left = lambda x: torch.tensor([[[[2.0, 2.0, 0.0, 0.0]]]])  # always the left
        >>> x = torch.zeros(1, 3, 8, 8)
        >>> multiscale_attribute(left, x, scales=[1.0], flips=True)[0, 0].tolist()
        [[1.0, 1.0, 1.0, 1.0]]
    """
    values = check_scales(scales)
    batch = inputs if isinstance(inputs, tuple) else (inputs,)
    if values == (1.0,) and not flips:
        return attribute(batch)
    total: Tensor | None = None
    count = 0
    for scale in values:
        for flip in (False, True) if flips else (False,):
            maps = attribute(_resize(batch, scale, flip))
            if flip:
                maps = maps.flip(-1)
            if output_size is None:
                output_size = (int(maps.shape[-2]), int(maps.shape[-1]))
            if tuple(maps.shape[-2:]) != tuple(output_size):
                maps = F.interpolate(maps, size=output_size, mode="bilinear", align_corners=False)
            maps = maps.clamp(min=0)
            maps = maps / maps.amax(dim=(-2, -1), keepdim=True).clamp(min=_TINY)
            total = maps if total is None else total + maps
            count += 1
    assert total is not None
    # Normalised again, as IRN does after summing: the peaks of the passes need not
    # coincide, and a map of the package peaks at 1.
    return total / total.amax(dim=(-2, -1), keepdim=True).clamp(min=_TINY)
