"""Figures of attribution maps, composed from Captum's ``visualize_image_attr``,
and an interactive HTML explorer of the same maps.

Each panel of a figure is drawn by
:func:`captum.attr.visualization.visualize_image_attr` on an axis of one grid
(``plt_fig_axis``, ``use_pyplot=False``), so the figure is built without pyplot
and renders headless. Maps are upsampled to the photo's own shape first: the
model saw the whole photo resized to a square, so resizing a map back undoes
that resize. Every map is then divided by its own maximum, so one colour bar,
labelled ``COLORBAR_LABEL``, reads every panel; a fused product is shown through
:func:`display_scaling`, which its panel's title names.

:func:`explore` and :class:`Explorer` show the maps of the top classes in one
self-contained HTML page (or inline in Jupyter), as ``captum-shallow explain
--html`` writes it.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import numpy as np
from captum.attr import visualization as captum_viz
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import Tensor

from ._display import (
    COLORBAR_LABEL,
    DEFAULT_CMAP,
    DEFAULT_OPACITY,
    DisplayScaling,
    display_scaling,
    image_to_numpy,
    map_to_numpy,
)
from ._explorer import ExplainedImage, Explorer, explain_images, explore

__all__ = [
    "CAPTION_INCHES",
    "COLORBAR_INCHES",
    "COLORBAR_LABEL",
    "DEFAULT_CMAP",
    "DEFAULT_OPACITY",
    "MAX_COLUMNS",
    "PANEL_INCHES",
    "SUPTITLE_INCHES",
    "TALL_INCHES",
    "TITLE_INCHES",
    "WIDE_ASPECT",
    "DisplayScaling",
    "ExplainedImage",
    "Explorer",
    "attribution_figure",
    "display_scaling",
    "explain_images",
    "explore",
    "grid_shape",
    "image_to_numpy",
    "map_to_numpy",
    "panel_inches",
]

#: Width of one panel in inches (of a photo at most ``WIDE_ASPECT`` times wider than high).
PANEL_INCHES = 3.0
#: Aspect (width / height) above which a panel widens, up to ``MAX_COLUMNS`` panels'
#: width, and the rows hold fewer panels: a very wide photo is not drawn as a thin strip.
WIDE_ASPECT = 2.0
#: Highest panel in inches: a very tall photo is drawn narrower, not taller.
TALL_INCHES = 2 * PANEL_INCHES
#: Height in inches added to each row for the panel titles (two lines).
TITLE_INCHES = 0.45
#: Height in inches added for each line of the figure's title (wrapped to its width).
SUPTITLE_INCHES = 0.4
#: Height in inches added for each line of the caption below the figure.
CAPTION_INCHES = 0.25
# Characters per inch of width of the title ("large" font) and the caption ("small").
_TITLE_CHARACTERS_PER_INCH = 9
_CAPTION_CHARACTERS_PER_INCH = 14
#: Height in inches added below the panels for the shared colour bar.
COLORBAR_INCHES = 0.6
#: Most panels per row when the caller does not choose: more rows, not smaller panels.
MAX_COLUMNS = 4

# Captum's methods that colour the map with ``cmap`` (the others need no colour bar).
_COLOURED = ("heat_map", "blended_heat_map")


def grid_shape(
    panels: int, ncols: int | None = None, max_columns: int = MAX_COLUMNS
) -> tuple[int, int]:
    """Rows and columns of a figure's grid: balanced rows of at most ``max_columns``.

    Args:
        panels (int): Number of panels (at least 1).
        ncols (int, optional): Panels per row, clipped to ``[1, panels]``.
            Default: None (as few rows as ``max_columns`` allows, filled evenly)
        max_columns (int, optional): Most panels per row when ``ncols`` is None.
            Default: ``MAX_COLUMNS`` (4)

    Returns:
        tuple[int, int]: ``(rows, columns)``.

    Examples::

        >>> from captum_shallow.visualization import grid_shape
        >>> [grid_shape(n) for n in (1, 4, 5, 6, 7, 9)]
        [(1, 1), (1, 4), (2, 3), (2, 3), (2, 4), (3, 3)]
        >>> grid_shape(5, ncols=5)
        (1, 5)
        >>> grid_shape(6, max_columns=1)
        (6, 1)
    """
    if panels < 1:
        raise ValueError("no panel to draw")
    if ncols is None:
        max_columns = max(1, max_columns)
        ncols = math.ceil(panels / math.ceil(panels / max_columns))
    ncols = max(1, min(ncols, panels))
    return math.ceil(panels / ncols), ncols


def panel_inches(aspect: float) -> tuple[float, float]:
    """Width and height in inches of a panel showing a photo of this aspect.

    A panel is ``PANEL_INCHES`` wide; a photo more than ``WIDE_ASPECT`` times wider
    than high widens it (by ``aspect / WIDE_ASPECT``, to at most ``MAX_COLUMNS``
    panels' width), and a tall one is at most ``TALL_INCHES`` high (the photo is
    then narrower than its panel).

    Args:
        aspect (float): The photo's width over its height.

    Returns:
        tuple[float, float]: ``(width, height)`` of the panel's image area.

    Examples::

        >>> from captum_shallow.visualization import panel_inches
        >>> [panel_inches(a) for a in (1.5, 4.0, 12.0, 0.1)]
        [(3.0, 2.0), (6.0, 1.5), (12.0, 1.0), (3.0, 6.0)]
    """
    width = PANEL_INCHES * min(max(1.0, aspect / WIDE_ASPECT), MAX_COLUMNS)
    return width, min(width / aspect, TALL_INCHES)


def attribution_figure(
    image: Tensor,
    panels: Sequence[tuple[str, Tensor | None]],
    title: str | None = None,
    ncols: int | None = None,
    method: str = "blended_heat_map",
    cmap: str = DEFAULT_CMAP,
    alpha_overlay: float = DEFAULT_OPACITY,
    colorbar_label: str = COLORBAR_LABEL,
    caption: str | None = None,
) -> Figure:
    """One figure, a grid of panels: the photo and maps blended over it, one colour bar.

    Every map is upsampled to the photo, made non-negative and divided by its
    maximum, then drawn by Captum (``sign="positive"``, ``outlier_perc=0``, so
    Captum's own rescaling is the identity): a colour means the same fraction of
    its map's peak in every panel. Apply a :class:`DisplayScaling` to a map first
    to show it otherwise, and say so in its title.

    Args:
        image (Tensor): The photo, (3, H, W), ``uint8`` or float in [0, 1].
        panels (Sequence[tuple[str, Tensor or None]]): ``(title, map)`` per
            panel, in order; a map is (h, w), (1, h, w) or (1, 1, h, w) at any
            resolution, and ``None`` shows the photo itself. A map without any
            positive value is shown as the photo, its title saying so.
        title (str, optional): The figure's title.
            Default: None
        ncols (int, optional): Panels per row.
            Default: :func:`grid_shape`'s balanced rows of at most ``MAX_COLUMNS``
        method (str, optional): Captum's visualization method for the maps, e.g.
            ``"blended_heat_map"``, ``"heat_map"``, ``"masked_image"`` or
            ``"alpha_scaling"``.
            Default: ``"blended_heat_map"``
        cmap (str, optional): Matplotlib colormap of the maps.
            Default: ``DEFAULT_CMAP`` (``"inferno"``, perceptually uniform)
        alpha_overlay (float, optional): Opacity of a blended map.
            Default: ``DEFAULT_OPACITY`` (0.6)
        colorbar_label (str, optional): The colour bar's label, drawn below the
            panels when ``method`` colours the maps.
            Default: ``COLORBAR_LABEL``
        caption (str, optional): Small text below everything, e.g. the settings
            every map was computed with.
            Default: None

    Returns:
        matplotlib.figure.Figure: A figure without pyplot (``fig.savefig`` works
        headless); each panel is :func:`panel_inches` (``PANEL_INCHES`` wide and
        the photo's aspect high, for most photos), plus ``TITLE_INCHES`` per row,
        ``SUPTITLE_INCHES`` per line of the title and ``CAPTION_INCHES`` per line
        of the caption (both wrapped to the figure's width), and
        ``COLORBAR_INCHES`` for the colour bar. A wide panel leaves room for fewer
        than ``MAX_COLUMNS`` per row.

    Examples::

        >>> import torch
        >>> from captum_shallow.visualization import attribution_figure
        >>> photo = torch.rand(3, 60, 90)
        >>> fig = attribution_figure(photo, [("photo", None), ("map", torch.rand(1, 8, 12))])
        >>> fig.get_size_inches().round(2).tolist()
        [6.0, 3.05]
    """
    photo = image_to_numpy(image)
    height, width = photo.shape[:2]
    panel_width, panel_height = panel_inches(width / height)
    if ncols is None:
        ncols = grid_shape(len(panels), max_columns=int(MAX_COLUMNS * PANEL_INCHES // panel_width))[
            1
        ]
    nrows, ncols = grid_shape(len(panels), ncols)
    coloured = method in _COLOURED and any(m is not None for _, m in panels)
    title = _wrap(title, ncols * panel_width * _TITLE_CHARACTERS_PER_INCH)
    caption = _wrap(caption, ncols * panel_width * _CAPTION_CHARACTERS_PER_INCH)
    figure = Figure(
        figsize=(
            ncols * panel_width,
            nrows * (panel_height + TITLE_INCHES)
            + (SUPTITLE_INCHES * (title.count("\n") + 1) if title else 0.0)
            + (CAPTION_INCHES * (caption.count("\n") + 1) if caption else 0.0)
            + (COLORBAR_INCHES if coloured else 0.0),
        ),
        layout="constrained",
    )
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for axis, (panel_title, attribution) in zip(axes, panels, strict=False):
        values = None if attribution is None else map_to_numpy(attribution, (height, width))
        peak = 0.0 if values is None else float(values.max())
        if values is not None and not peak > 0:
            values, panel_title = None, f"{panel_title}\n(no positive evidence)"
        captum_viz.visualize_image_attr(
            np.clip(values, 0, None) / peak if values is not None else np.ones_like(photo[..., :1]),
            original_image=photo,
            method=method if values is not None else "original_image",
            sign="positive",
            outlier_perc=0,
            plt_fig_axis=(figure, axis),
            use_pyplot=False,
            cmap=cmap,
            alpha_overlay=alpha_overlay,
            title=panel_title,
        )
        axis.title.set_fontsize("medium")
    for axis in axes[len(panels) :]:
        axis.set_axis_off()
    if coloured:
        colorbar = figure.colorbar(
            ScalarMappable(Normalize(0, 1), cmap),
            ax=list(axes),
            location="bottom",
            shrink=0.6 if ncols > 1 else 0.9,
            aspect=40,
            pad=0.02,
            ticks=[0, 0.25, 0.5, 0.75, 1],
        )
        colorbar.set_label(colorbar_label)
    if title:
        figure.suptitle(title, fontsize="large")
    if caption:
        figure.supxlabel(caption, fontsize="small")
    return figure


def _wrap(text: str | None, characters: float) -> str | None:
    """Each line of ``text`` wrapped to about ``characters`` characters."""
    if not text:
        return text
    width = max(20, int(characters))
    return "\n".join("\n".join(textwrap.wrap(line, width) or [""]) for line in text.split("\n"))
