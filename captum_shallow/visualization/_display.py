"""How a map is shown, shared by the figures and the HTML explorer: photo and map
arrays for Captum's visualizer, the colour map and the fused map's display scaling.

A product of :math:`L` maps in [0, 1] is tiny everywhere but at a few pixels, so
drawn linearly it shows dots. Shown through its :math:`L`-th root it becomes the
geometric mean of the layer maps, normalised: the root is monotone, so the
ranking of pixels (and any threshold on the map, mapped through the root) is
unchanged while its extent becomes visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from captum.attr import LayerAttribution
from torch import Tensor

#: Matplotlib colour map of every map drawn by the package: perceptually uniform,
#: dark for no evidence, bright yellow at the map's peak, readable in greyscale.
DEFAULT_CMAP = "inferno"
#: Opacity of a map blended over the (greyscale) photo: the map's colours stay
#: readable while the photo's edges remain visible under them.
DEFAULT_OPACITY = 0.6
#: What the colour bar's values are: every map is divided by its own maximum.
COLORBAR_LABEL = "map value ÷ the map's maximum"


@dataclass(frozen=True)
class DisplayScaling:
    r"""A monotone display scaling :math:`v \mapsto v^{e}` of a map in [0, 1].

    Args:
        exponent (float): :math:`e`; 1 shows the values as they are.
        label (str): What a figure or page says about the scaling.

    Examples::

        >>> import torch
        >>> from captum_shallow.visualization import DisplayScaling
        >>> DisplayScaling(0.5, "square root")(torch.tensor([0.25, 1.0])).tolist()
        [0.5, 1.0]
    """

    exponent: float
    label: str

    def __call__(self, values: Tensor) -> Tensor:
        """The scaled map (negative values are shown as 0)."""
        values = values.clamp(min=0)
        return values if self.exponent == 1 else values**self.exponent


def display_scaling(fusion: str, layers: int) -> DisplayScaling:
    r"""How a fused map is shown: a ``"product"`` of :math:`L > 1` maps through its
    :math:`L`-th root (the geometric mean of the layer maps), any other map linearly.

    The one rule for the figures of ``captum-shallow demo`` / ``explain`` and the
    explorer's fused panel; the explorer's JavaScript mirrors it (tested).

    Args:
        fusion (str): The fusion that made the map (``"max"``, ``"mean"``,
            ``"product"``, ``"geometric"``, ...).
        layers (int): How many layer maps were fused.

    Returns:
        DisplayScaling: The scaling and its label.

    Examples::

        >>> from captum_shallow.visualization import display_scaling
        >>> display_scaling("product", 4)
        DisplayScaling(exponent=0.25, label='shown as value^(1/4) (geometric mean)')
        >>> display_scaling("mean", 4).exponent
        1.0
    """
    if fusion == "product" and layers > 1:
        return DisplayScaling(1 / layers, f"shown as value^(1/{layers}) (geometric mean)")
    return DisplayScaling(1.0, "shown linearly")


def image_to_numpy(image: Tensor) -> npt.NDArray[np.uint8]:
    """An image tensor as the (H, W, 3) ``uint8`` array Captum's visualizer takes.

    Args:
        image (Tensor): (3, H, W) or (1, H, W), ``uint8`` or float in [0, 1].

    Returns:
        numpy.ndarray: (H, W, 3) ``uint8`` array, on the CPU.

    Examples::

        >>> import torch
        >>> from captum_shallow.visualization import image_to_numpy
        >>> array = image_to_numpy(torch.ones(1, 2, 3))
        >>> array.shape, array.dtype.name, int(array.max())
        ((2, 3, 3), 'uint8', 255)
    """
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected an image of shape (3, H, W), got {tuple(image.shape)}")
    if image.is_floating_point():
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    return image.expand(3, -1, -1).permute(1, 2, 0).cpu().numpy()


def map_to_numpy(attribution: Tensor, size: tuple[int, int]) -> npt.NDArray[np.float32]:
    """A map upsampled (bilinear) to ``size`` as an (H, W, 1) array.

    Args:
        attribution (Tensor): One map: (h, w), (1, h, w) or (1, 1, h, w).
        size (tuple[int, int]): The photo's (H, W).

    Returns:
        numpy.ndarray: (H, W, 1) ``float32`` array, on the CPU.

    Examples::

        >>> import torch
        >>> from captum_shallow.visualization import map_to_numpy
        >>> map_to_numpy(torch.tensor([[0.0, 1.0]]), (1, 4))[0, :, 0].tolist()
        [0.0, 0.25, 0.75, 1.0]
    """
    if attribution.ndim < 2 or attribution.numel() == 0 or attribution.shape[:-2].numel() != 1:
        raise ValueError(f"expected one 2-D map, got shape {tuple(attribution.shape)}")
    grid = attribution.detach().float().reshape(1, 1, *attribution.shape[-2:])
    resized = LayerAttribution.interpolate(grid, size, interpolate_mode="bilinear")
    return resized[0].permute(1, 2, 0).cpu().numpy()
