"""Figures of attribution maps, composed from Captum's ``visualize_image_attr``.

Each panel is drawn by :func:`captum.attr.visualization.visualize_image_attr`
on an axis of one grid (``plt_fig_axis``, ``use_pyplot=False``), so the figure
is built without pyplot and renders headless. Maps are upsampled to the
photo's own shape first: the model saw the whole photo resized to a square,
so resizing a map back undoes that resize.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from captum.attr import LayerAttribution
from captum.attr import visualization as captum_viz
from matplotlib.figure import Figure
from torch import Tensor

#: Width of one panel in inches.
PANEL_INCHES = 3.0
#: Height in inches added to each row for the panel titles.
TITLE_INCHES = 0.4
#: Height in inches added for the figure's title.
SUPTITLE_INCHES = 0.4


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


def attribution_figure(
    image: Tensor,
    panels: Sequence[tuple[str, Tensor | None]],
    title: str | None = None,
    ncols: int | None = None,
    method: str = "blended_heat_map",
    cmap: str = "jet",
    alpha_overlay: float = 0.5,
) -> Figure:
    """One figure, a grid of panels: the photo and maps blended over it.

    Args:
        image (Tensor): The photo, (3, H, W), ``uint8`` or float in [0, 1].
        panels (Sequence[tuple[str, Tensor or None]]): ``(title, map)`` per
            panel, in order; a map is (h, w), (1, h, w) or (1, 1, h, w) at any
            resolution, and ``None`` shows the photo itself. A map without any
            positive value is shown as the photo, its title saying so.
        title (str, optional): The figure's title.
            Default: None
        ncols (int, optional): Panels per row.
            Default: all in one row
        method (str, optional): Captum's visualization method for the maps, e.g.
            ``"blended_heat_map"``, ``"heat_map"``, ``"masked_image"`` or
            ``"alpha_scaling"``.
            Default: ``"blended_heat_map"``
        cmap (str, optional): Matplotlib colormap of the maps.
            Default: ``"jet"``
        alpha_overlay (float, optional): Opacity of a blended map.
            Default: 0.5

    Returns:
        matplotlib.figure.Figure: A figure without pyplot (``fig.savefig`` works
        headless); each panel is ``PANEL_INCHES`` wide and the photo's aspect
        high, plus ``TITLE_INCHES`` per row and ``SUPTITLE_INCHES`` for a title.

    Examples::

        >>> import torch
        >>> from captum_shallow.visualization import attribution_figure
        >>> photo = torch.rand(3, 60, 90)
        >>> fig = attribution_figure(photo, [("photo", None), ("map", torch.rand(1, 8, 12))])
        >>> fig.get_size_inches().round(2).tolist()
        [6.0, 2.4]
    """
    if not panels:
        raise ValueError("no panel to draw")
    photo = image_to_numpy(image)
    height, width = photo.shape[:2]
    ncols = len(panels) if ncols is None else max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    row_inches = PANEL_INCHES * height / width + TITLE_INCHES
    figure = Figure(
        figsize=(
            ncols * PANEL_INCHES,
            nrows * row_inches + (SUPTITLE_INCHES if title else 0.0),
        ),
        layout="constrained",
    )
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for axis, (panel_title, attribution) in zip(axes, panels, strict=False):
        values = None if attribution is None else map_to_numpy(attribution, (height, width))
        if values is not None and not float(values.max()) > 0:
            values, panel_title = None, f"{panel_title}\n(no positive evidence)"
        captum_viz.visualize_image_attr(
            values if values is not None else np.ones((height, width, 1), np.float32),
            original_image=photo,
            method=method if values is not None else "original_image",
            sign="positive",
            plt_fig_axis=(figure, axis),
            use_pyplot=False,
            cmap=cmap,
            alpha_overlay=alpha_overlay,
            title=panel_title,
        )
        axis.title.set_fontsize("small")
    for axis in axes[len(panels) :]:
        axis.set_axis_off()
    if title:
        figure.suptitle(title)
    return figure
