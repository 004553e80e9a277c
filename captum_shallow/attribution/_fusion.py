r"""Fusing per-layer maps into one high-resolution map: :func:`fuse_maps`.

Deep layers know *what* the target is but see it coarsely; shallow layers see
it sharply but noisily. Each map is upsampled to a common size, normalised per
sample and combined elementwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor

Fusion = Literal["max", "mean", "product", "geometric"]
_FUSIONS = ("max", "mean", "product", "geometric")


def fuse_maps(
    maps: Sequence[Tensor],
    output_size: tuple[int, int] | None = None,
    fusion: Fusion = "max",
    gamma: float | None = None,
    gate: Tensor | None = None,
) -> Tensor:
    r"""Fuse per-layer maps of shape ``(N, 1, h_l, w_l)`` into one ``(N, 1, h, w)`` map.

    Each map is upsampled (bilinear) to ``output_size`` (default: the largest
    map's size), made non-negative and divided by its per-sample maximum, then
    optionally scaled by :math:`\tanh(\gamma M)` (LayerCAM's Eq. 9), combined by
    elementwise ``max`` (LayerCAM), ``mean`` (pytorch-grad-cam), ``product``
    (RefineCAM) or ``geometric``, the geometric mean
    :math:`(\prod_{l=1}^{L} M_l)^{1/L}`, and divided by the per-sample maximum
    again, so every sample with any positive evidence peaks at 1. A sample
    without any is all zeros.

    With a ``gate``, a class map of the same samples (e.g. Grad-CAM at the deepest
    layer), the fused map is multiplied pixel by pixel by the gate, upsampled,
    clamped at 0 and divided by its maximum, then divided by its maximum again: the
    layers give the detail and the extent, the gate says which of it belongs to the
    class, as Guided Grad-CAM multiplies guided backpropagation by Grad-CAM
    (Selvaraju et al., 2017). A sample whose gate has no positive value is all zeros.

    The geometric mean ranks pixels as the product does, but keeps a usable
    range: a product of :math:`L` maps in [0, 1] is tiny everywhere but at a few
    pixels, which thresholds and colour maps cannot use. It is computed as
    :math:`\exp(\frac{1}{L}\sum_l \log M_l)`, so small positive values do not
    underflow to 0 in float32; a pixel where any map is 0 stays 0.

    Args:
        maps (sequence of Tensor): Layer maps, each ``(N, 1, h, w)``.
        output_size (tuple[int, int], optional): Size of the fused map.
            Default: None (the largest input map's size)
        fusion (str, optional): ``"max"``, ``"mean"``, ``"product"`` or
            ``"geometric"``.
            Default: ``"max"``
        gamma (float, optional): Scale of the tanh, e.g. 2 as in LayerCAM; None
            skips the scaling.
            Default: None
        gate (Tensor, optional): A ``(N, 1, h, w)`` map, any size, that the fused
            map is multiplied by (normalised as the layer maps are, never scaled by
            the tanh); None for no gate.
            Default: None

    Returns:
        *Tensor*: the fused map, ``(N, 1, h, w)``, values in [0, 1].

    Raises:
        TypeError: For one tensor instead of a sequence of maps.
        ValueError: For maps of the wrong shape, or holding NaN or inf.

    Examples::

        >>> import torch
        >>> from captum_shallow import fuse_maps
        >>> fine = torch.tensor([[[[0.0, 2.0], [0.0, 4.0]]]])
        >>> coarse = torch.tensor([[[[3.0]]]])
        >>> fuse_maps([fine, coarse], fusion="product")
        tensor([[[[0.0000, 0.5000],
                  [0.0000, 1.0000]]]])
        >>> fuse_maps([fine, coarse], fusion="geometric")
        tensor([[[[0.0000, 0.7071],
                  [0.0000, 1.0000]]]])
        >>> fuse_maps([fine], gate=torch.tensor([[[[1.0, 1.0], [4.0, 0.0]]]]))
        tensor([[[[0., 1.],
                  [0., 0.]]]])
    """
    if fusion not in _FUSIONS:
        raise ValueError(f"fusion must be one of {_FUSIONS}, got {fusion!r}")
    if gamma is not None and not gamma > 0:
        raise ValueError(f"gamma must be positive or None, got {gamma!r}")
    if isinstance(maps, Tensor):
        raise TypeError(
            f"fuse_maps takes a sequence of maps, one per layer, got one Tensor of shape "
            f"{tuple(maps.shape)}; pass [maps] for a single map"
        )
    if not maps:
        raise ValueError("fuse_maps needs at least one map")
    if gate is not None:
        if not isinstance(gate, Tensor) or gate.dim() != 4 or gate.shape[1] != 1:
            shape = tuple(gate.shape) if isinstance(gate, Tensor) else type(gate).__name__
            raise ValueError(f"gate must have shape (N, 1, h, w), got {shape}")
        if gate.shape[0] != maps[0].shape[0]:
            raise ValueError(
                f"gate has {gate.shape[0]} samples, the maps {maps[0].shape[0]}; give one "
                "gate per sample"
            )
        if not bool(torch.isfinite(gate).all()):
            raise ValueError("gate contains NaN or inf; fix the model or its input")
    for index, item in enumerate(maps):
        if not isinstance(item, Tensor) or item.dim() != 4 or item.shape[1] != 1:
            shape = tuple(item.shape) if isinstance(item, Tensor) else type(item).__name__
            raise ValueError(f"map {index} must have shape (N, 1, h, w), got {shape}")
        if item.shape[0] != maps[0].shape[0]:
            raise ValueError("all maps must have the same batch size")
        if not bool(torch.isfinite(item).all()):
            # Normalising would turn it into zeros, which read as "no evidence".
            raise ValueError(f"map {index} contains NaN or inf; fix the model or its input")
    if output_size is None:
        output_size = cast(
            tuple[int, int], max((tuple(m.shape[-2:]) for m in maps), key=lambda s: s[0] * s[1])
        )
    size = (int(output_size[0]), int(output_size[1]))
    scaled = []
    for item in maps:
        if tuple(item.shape[-2:]) != size:
            item = F.interpolate(item, size=size, mode="bilinear", align_corners=False)
        item = _normalise(item.clamp(min=0))
        scaled.append(torch.tanh(gamma * item) if gamma is not None else item)
    stacked = torch.stack(scaled)
    if fusion == "max":
        fused = stacked.amax(dim=0)
    elif fusion == "mean":
        fused = stacked.mean(dim=0)
    elif fusion == "product":
        fused = stacked.prod(dim=0)
    else:
        fused = _geometric_mean(stacked)
    if gate is not None:
        if tuple(gate.shape[-2:]) != size:
            gate = F.interpolate(gate, size=size, mode="bilinear", align_corners=False)
        fused = _normalise(fused) * _normalise(gate.clamp(min=0))
    return _normalise(fused)


def _geometric_mean(stacked: Tensor) -> Tensor:
    """``(prod_l M_l)^(1/L)`` over dimension 0 of non-negative maps, in log space."""
    positive = stacked > 0
    # log(1) = 0 stands in for the zeros, which the mask puts back: no -inf, so
    # a graph through the maps (create_graph) gets finite gradients.
    logs = torch.where(positive, stacked, 1.0).log()
    return torch.where(positive.all(dim=0), logs.mean(dim=0).exp(), 0.0)


def _normalise(maps: Tensor) -> Tensor:
    peak = maps.amax(dim=(1, 2, 3), keepdim=True)
    return torch.where(peak > 0, maps / torch.where(peak > 0, peak, 1), 0.0)
