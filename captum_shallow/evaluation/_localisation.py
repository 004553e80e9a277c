r"""Localisation metrics: does the map point at the object?

Three scores of a map :math:`M` (upsampled bilinearly to the image size) against
a ground-truth region :math:`R` (a mask, a box or a grid cell):

- pointing game (Zhang et al., 2018): a hit when the map's maximum lies within
  ``tolerance`` pixels of :math:`R`;
- energy pointing game (Wang et al., Score-CAM, 2020):
  :math:`\sum_{p \in R} M^+_p / \sum_p M^+_p`;
- grid pointing game (Rao, Boehle and Schiele, 2022): the same share of positive
  mass, where :math:`R` is the cell of an :math:`n \times n` grid of tiles that
  holds the target class;
- extent (:func:`region_extent`, :func:`grid_extent`): the IoU of the thresholded
  map with :math:`R` and the share of :math:`R` it covers, over a sweep of
  thresholds. The pointing scores rise under any monotone sharpening of the map
  (squaring it, or a product of several maps), so a map collapsed to a few hot
  pixels can win them; it cannot win the extent, and a best threshold shared by
  all cases makes the extent invariant to a monotone rescaling of the maps.

All functions are batched, run on the maps' device and need no gradient.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import THRESHOLD_SWEEP, check_maps, check_masks, check_positive_int, upsample

__all__ = [
    "FIXED_EXTENT_THRESHOLD",
    "Extent",
    "GridCases",
    "boxes_to_masks",
    "energy_pointing_game",
    "grid_extent",
    "grid_pointing_game",
    "make_grid_cases",
    "pointing_game",
    "region_extent",
]

#: The fixed threshold of the extent metrics: 20% of the map's maximum, the
#: threshold CAM (Zhou et al., 2016) uses to draw its localisation boxes.
FIXED_EXTENT_THRESHOLD = 0.2


@torch.no_grad()
def boxes_to_masks(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    r"""Rasterise boxes into boolean masks.

    Pixel :math:`(y, x)` is inside box :math:`(x_0, y_0, x_1, y_1)` when
    :math:`x_0 \le x < x_1` and :math:`y_0 \le y < y_1` (pixel coordinates, end
    exclusive, as in ``torchvision.ops`` boxes of integer corners).

    Args:
        boxes (Tensor): ``(N, 4)`` boxes ``(x0, y0, x1, y1)``.
        size (tuple[int, int]): ``(H, W)`` of the masks.

    Returns:
        Tensor: ``(N, H, W)`` boolean masks on the boxes' device.

    Examples::

        >>> m = boxes_to_masks(torch.tensor([[1, 0, 3, 2]]), (3, 4))
        >>> m.int().tolist()
        [[[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]]
    """
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError("boxes must be a tensor of shape (N, 4) holding (x0, y0, x1, y1)")
    height, width = size
    ys = torch.arange(height, device=boxes.device)[None, :, None]
    xs = torch.arange(width, device=boxes.device)[None, None, :]
    x0, y0, x1, y1 = (boxes[:, i, None, None] for i in range(4))
    return (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)


@torch.no_grad()
def pointing_game(maps: Tensor, masks: Tensor, tolerance: float = 15.0) -> Tensor:
    r"""Pointing game of Zhang et al. (2018), "Top-down neural attention by
    excitation backprop" (https://arxiv.org/abs/1608.00507).

    The map is upsampled to the mask size; its maximum
    :math:`p^* = \arg\max_p M_p` (the first one in row-major order when several
    pixels tie, as :func:`torch.argmax`) is a hit when

    .. math::

        \min_{q \in R} \lVert p^* - q \rVert_2 \le \text{tolerance},

    i.e. when a disk of radius ``tolerance`` around :math:`p^*` touches the
    region (TorchRay's implementation of the paper's 15-pixel tolerance).

    Quantus' ``PointingGame`` has no tolerance and counts a hit when *any* of
    several tied maxima lies in the region; with ``tolerance=0`` and a unique
    maximum both agree, and ours is never above theirs.

    Args:
        maps (Tensor): ``(N, 1, h, w)`` maps, any resolution.
        masks (Tensor): ``(N, H, W)`` boolean ground-truth regions (use
            :func:`boxes_to_masks` for boxes).
        tolerance (float, optional): distance in pixels of the upsampled map.
            Default: 15.

    Returns:
        Tensor: ``(N,)`` float hits (1.0 or 0.0), NaN where the mask is empty.

    Examples::

        >>> maps = torch.zeros(1, 1, 8, 8)
        >>> maps[0, 0, 2, 2] = 1.0
        >>> masks = torch.zeros(1, 8, 8, dtype=torch.bool)
        >>> masks[0, 5:, 5:] = True
        >>> pointing_game(maps, masks, tolerance=0).tolist()
        [0.0]
        >>> pointing_game(maps, masks, tolerance=5).tolist()
        [1.0]
    """
    maps = check_maps(maps)
    masks = check_masks(masks, maps.shape[0]).to(maps.device)
    if tolerance < 0:
        raise ValueError(f"tolerance must be non-negative, got {tolerance}")
    height, width = masks.shape[-2:]
    flat = upsample(maps, (height, width)).flatten(1)
    peak = flat.argmax(dim=1)
    py, px = (peak // width).float(), (peak % width).float()
    ys = torch.arange(height, device=maps.device, dtype=torch.float32)
    xs = torch.arange(width, device=maps.device, dtype=torch.float32)
    dist2 = (ys[None, :, None] - py[:, None, None]) ** 2 + (
        xs[None, None, :] - px[:, None, None]
    ) ** 2
    nearest = dist2.masked_fill(~masks, float("inf")).flatten(1).amin(dim=1)
    hits = (nearest <= float(tolerance) ** 2).float()
    return hits.masked_fill(~masks.flatten(1).any(dim=1), float("nan"))


@torch.no_grad()
def energy_pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    r"""Energy-based pointing game of Score-CAM (Wang et al., 2020,
    https://arxiv.org/abs/1910.01279).

    With :math:`M^+ = \max(M, 0)` the positive part of the upsampled map,

    .. math::

        E = \frac{\sum_{p \in R} M^+_p}{\sum_p M^+_p}.

    A map that is exactly the region scores 1; a map without positive mass
    scores 0. This is Quantus' ``AttributionLocalisation`` with
    ``positive_attributions=True`` and ``weighted=False`` (checked in the tests).

    Args:
        maps (Tensor): ``(N, 1, h, w)`` maps, any resolution.
        masks (Tensor): ``(N, H, W)`` boolean regions (masks or rasterised boxes).

    Returns:
        Tensor: ``(N,)`` shares in :math:`[0, 1]`, NaN where the mask is empty.

    Examples::

        >>> masks = torch.zeros(1, 4, 4, dtype=torch.bool)
        >>> masks[0, :2] = True
        >>> energy_pointing_game(masks[:, None].float(), masks).tolist()
        [1.0]
    """
    maps = check_maps(maps)
    masks = check_masks(masks, maps.shape[0]).to(maps.device)
    positive = upsample(maps, (masks.shape[-2], masks.shape[-1])).clamp(min=0).flatten(1)
    inside = (positive * masks.flatten(1)).sum(dim=1)
    total = positive.sum(dim=1)
    share = torch.where(total > 0, inside / total.clamp(min=torch.finfo(total.dtype).tiny), 0.0)
    return share.masked_fill(~masks.flatten(1).any(dim=1), float("nan"))


def _cell_masks(grid: int, size: tuple[int, int], device: torch.device) -> Tensor:
    """``(grid * grid, H, W)`` masks of the cells, row-major; edges at floor(i * H / n)."""
    height, width = size
    row = (torch.arange(height, device=device) * grid) // height
    col = (torch.arange(width, device=device) * grid) // width
    cell = row[:, None] * grid + col[None, :]
    return cell[None] == torch.arange(grid * grid, device=device)[:, None, None]


@torch.no_grad()
def grid_pointing_game(
    maps: Tensor, cells: Tensor, grid: int = 2, size: tuple[int, int] | None = None
) -> Tensor:
    r"""Grid pointing game of Rao, Boehle and Schiele (CVPR 2022), "Towards Better
    Understanding Attribution Methods" (https://arxiv.org/abs/2205.10435).

    The input is an :math:`n \times n` grid of tiles of distinct classes (see
    :func:`make_grid_cases`); the map explains the class of cell :math:`c`.
    With :math:`M^+` the positive part of the map upsampled to ``size``,

    .. math::

        S = \frac{\sum_{p \in \text{cell}_c} M^+_p}{\sum_p M^+_p},

    1 for a perfect map, :math:`1 / n^2` for a uniform one (chance), 0 for a map
    without positive mass. Cells are row-major; the edges of row :math:`r` are
    :math:`\lfloor r H / n \rfloor` and :math:`\lfloor (r + 1) H / n \rfloor`.

    Args:
        maps (Tensor): ``(N, 1, h, w)`` maps.
        cells (Tensor): ``(N,)`` index of the target's cell, in
            :math:`0 .. n^2 - 1`, row-major.
        grid (int, optional): :math:`n`. Default: 2.
        size (tuple[int, int], optional): the grid image's ``(H, W)`` to upsample
            the maps to. Default: None (the maps' own size).

    Returns:
        Tensor: ``(N,)`` scores in :math:`[0, 1]`.

    Examples::

        >>> maps = torch.zeros(2, 1, 4, 4)
        >>> maps[:, :, :2, 2:] = 1.0   # all mass in the top-right cell (index 1)
        >>> grid_pointing_game(maps, torch.tensor([1, 0])).tolist()
        [1.0, 0.0]
    """
    maps = check_maps(maps)
    return energy_pointing_game(maps, _grid_masks(maps, cells, grid, size))


class Extent(NamedTuple):
    r"""Extent of maps against regions over a sweep of thresholds.

    Attributes:
        thresholds (Tensor): ``(T,)`` thresholds on the max-normalised maps.
        iou (Tensor): ``(N, T)`` IoU of :math:`\{\hat M > t\}` with each region.
        coverage (Tensor): ``(N, T)`` share of each region's pixels with
            :math:`\hat M > t`.
        area (Tensor): ``(N, T)`` share of the image's pixels with :math:`\hat M > t`.
    """

    thresholds: Tensor
    iou: Tensor
    coverage: Tensor
    area: Tensor

    def _index(self, threshold: float) -> int:
        hits = (self.thresholds - float(threshold)).abs() < 1e-9
        if not bool(hits.any()):
            raise ValueError(f"threshold {threshold} is not in the sweep")
        return int(hits.nonzero()[0, 0])

    @property
    def best_index(self) -> int:
        """Index of the threshold with the highest mean IoU (the first on ties)."""
        return int(self.iou.nanmean(dim=0).argmax())

    @property
    def best_threshold(self) -> float:
        """The threshold, shared by all cases, with the highest mean IoU."""
        return float(self.thresholds[self.best_index])

    @property
    def best_iou(self) -> float:
        """Mean IoU over the cases at :attr:`best_threshold`."""
        return float(self.iou[:, self.best_index].nanmean())

    @property
    def best_coverage(self) -> float:
        """Mean share of the region covered at :attr:`best_threshold`."""
        return float(self.coverage[:, self.best_index].nanmean())

    def iou_at(self, threshold: float) -> float:
        """Mean IoU at one threshold of the sweep."""
        return float(self.iou[:, self._index(threshold)].nanmean())

    def coverage_at(self, threshold: float) -> float:
        """Mean share of the region covered at one threshold of the sweep."""
        return float(self.coverage[:, self._index(threshold)].nanmean())

    def area_at(self, threshold: float) -> float:
        """Mean share of the image above one threshold of the sweep."""
        return float(self.area[:, self._index(threshold)].nanmean())


@torch.no_grad()
def region_extent(
    maps: Tensor,
    masks: Tensor,
    thresholds: Sequence[float] = THRESHOLD_SWEEP,
    ignore: Tensor | None = None,
) -> Extent:
    r"""How much of a region the map covers, and how tightly, over thresholds.

    With :math:`\hat M = M^+ / \max_p M^+` the upsampled map's positive part
    divided by its own maximum and :math:`P_t = \{p : \hat M_p > t\}`,

    .. math::

        \mathrm{IoU}_t = \frac{|P_t \cap R|}{|P_t \cup R|}, \qquad
        \mathrm{coverage}_t = \frac{|P_t \cap R|}{|R|}.

    A map without positive mass covers nothing (IoU 0). Report the IoU at the
    threshold shared by all cases that maximises the mean (:attr:`Extent.best_iou`,
    invariant to a monotone rescaling of the maps up to the sweep's step) and at a
    fixed threshold (:data:`FIXED_EXTENT_THRESHOLD`).

    Args:
        maps (Tensor): ``(N, 1, h, w)`` maps, any resolution.
        masks (Tensor): ``(N, H, W)`` boolean regions.
        thresholds (sequence of float, optional): increasing thresholds in
            :math:`[0, 1)`. Default: 0.00, 0.01, ..., 0.95.
        ignore (Tensor, optional): ``(N, H, W)`` boolean pixels left out of
            every count (a mask's uncertain band); the map is still normalised
            by its maximum over the whole image. Default: None.

    Returns:
        Extent: per-case IoU, coverage and area (share of the pixels not
        ignored) at every threshold; NaN rows where the region is empty.

    Examples::

        >>> masks = torch.zeros(1, 4, 4, dtype=torch.bool)
        >>> masks[0, :2] = True                       # the top half
        >>> maps = torch.zeros(1, 1, 4, 4)
        >>> maps[0, 0, :2, :2] = 1.0                  # the top-left quarter only
        >>> extent = region_extent(maps, masks, thresholds=[0.0, 0.5])
        >>> extent.iou.tolist(), extent.coverage.tolist()
        ([[0.5, 0.5]], [[0.5, 0.5]])
    """
    maps = check_maps(maps)
    masks = check_masks(masks, maps.shape[0]).to(maps.device)
    levels = torch.as_tensor(list(thresholds), dtype=torch.float64, device=maps.device)
    if levels.dim() != 1 or not levels.numel():
        raise ValueError("thresholds must be a non-empty sequence of numbers")
    if bool((levels[1:] <= levels[:-1]).any()) or bool((levels < 0).any() | (levels >= 1).any()):
        raise ValueError("thresholds must be increasing and lie in [0, 1)")
    positive = upsample(maps, (masks.shape[-2], masks.shape[-1])).clamp(min=0).flatten(1)
    peak = positive.amax(dim=1, keepdim=True)
    normalised = torch.where(peak > 0, positive / peak.clamp(min=torch.finfo(peak.dtype).tiny), 0)
    # Each pixel falls into the bin of the number of thresholds strictly below its value;
    # a reversed cumulative count then gives, per threshold, the pixels above it. Pixels
    # of a map without positive mass are 0 and lie above no threshold >= 0.
    bins = torch.searchsorted(levels, normalised.double().contiguous(), right=False)
    region = masks.flatten(1)
    valid = torch.ones_like(region)
    if ignore is not None:
        valid = ~check_masks(ignore, maps.shape[0]).to(maps.device).flatten(1)
        region = region & valid
    count, steps = bins.shape[0], levels.numel() + 1
    offset = torch.arange(count, device=maps.device)[:, None] * steps
    above = torch.bincount((bins + offset)[valid], minlength=count * steps).view(count, steps)
    inside = torch.bincount((bins + offset)[region], minlength=count * steps).view(count, steps)
    # pixels above threshold j: those in bins j + 1 .. T
    pred = above.flip(1).cumsum(1).flip(1)[:, 1:].double()
    inter = inside.flip(1).cumsum(1).flip(1)[:, 1:].double()
    area = region.sum(dim=1, keepdim=True).double()
    union = pred + area - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), 0.0)
    coverage = inter / area.clamp(min=1)
    empty = area[:, 0] == 0
    iou[empty] = float("nan")
    coverage[empty] = float("nan")
    return Extent(levels, iou, coverage, pred / valid.sum(dim=1, keepdim=True).clamp(min=1))


@torch.no_grad()
def grid_extent(
    maps: Tensor,
    cells: Tensor,
    grid: int = 2,
    size: tuple[int, int] | None = None,
    thresholds: Sequence[float] = THRESHOLD_SWEEP,
) -> Extent:
    r"""Extent of maps on the grid pointing game: :func:`region_extent` with the
    target's cell as the region.

    A cell is a square holding object and background, so the IoU also rewards
    coarse blobs; read it beside the pointing score and let exact masks decide
    (:mod:`captum_shallow.segmentation`).

    Args:
        maps (Tensor): ``(N, 1, h, w)`` maps.
        cells (Tensor): ``(N,)`` index of the target's cell, row-major.
        grid (int, optional): :math:`n`. Default: 2.
        size (tuple[int, int], optional): the grid image's ``(H, W)``.
            Default: None (the maps' own size).
        thresholds (sequence of float, optional): as in :func:`region_extent`.
            Default: 0.00, 0.01, ..., 0.95.

    Returns:
        Extent: per-case IoU, coverage and area at every threshold.

    Examples::

        >>> maps = torch.zeros(2, 1, 4, 4)
        >>> maps[:, :, :2, 2:] = 1.0   # the top-right cell (index 1)
        >>> extent = grid_extent(maps, torch.tensor([1, 0]), thresholds=[0.0, 0.5])
        >>> extent.iou.tolist(), extent.best_iou
        ([[1.0, 1.0], [0.0, 0.0]], 0.5)
    """
    maps = check_maps(maps)
    masks = _grid_masks(maps, cells, grid, size)
    return region_extent(maps, masks, thresholds)


def _grid_masks(maps: Tensor, cells: Tensor, grid: int, size: tuple[int, int] | None) -> Tensor:
    grid = check_positive_int(grid, "grid")
    if not isinstance(cells, Tensor) or cells.dim() != 1 or cells.shape[0] != maps.shape[0]:
        raise ValueError(f"cells must be a (N,) tensor with N = {maps.shape[0]}")
    if cells.numel() and (int(cells.min()) < 0 or int(cells.max()) >= grid * grid):
        raise ValueError(f"cells must lie in 0..{grid * grid - 1} for a {grid}x{grid} grid")
    out_size = (maps.shape[-2], maps.shape[-1]) if size is None else size
    return _cell_masks(grid, out_size, maps.device)[cells.to(maps.device).long()]


class GridCases(NamedTuple):
    """Grid images and the (image, cell, class) cases to explain in each.

    Attributes:
        images (Tensor): ``(M, C, n * s, n * s)`` grid images.
        tiles (Tensor): ``(M, n * n)`` index of the tile in each cell (row-major).
        image (Tensor): ``(M * n * n,)`` grid image of each case.
        cell (Tensor): ``(M * n * n,)`` cell of each case.
        target (Tensor): ``(M * n * n,)`` class of each case (the tile's label).

    Examples::

        >>> tiles = torch.rand(4, 3, 2, 2)
        >>> cases = make_grid_cases(tiles, torch.tensor([7, 8, 9, 10]))
        >>> cases.image[:5].tolist(), cases.cell[:5].tolist()
        ([0, 0, 0, 0, 1], [0, 1, 2, 3, 0])
        >>> bool(torch.equal(cases.images[0, :, :2, :2], tiles[0]))
        True
    """

    images: Tensor
    tiles: Tensor
    image: Tensor
    cell: Tensor
    target: Tensor


@torch.no_grad()
def make_grid_cases(tiles: Tensor, labels: Tensor, grid: int = 2) -> GridCases:
    r"""Build every grid of the grid pointing game from a set of tiles.

    Every ordered choice of :math:`n^2` distinct tiles (all permutations, in
    :func:`itertools.permutations` order) fills one grid, row-major. Each cell
    of each grid is one case, whose target is its tile's class. With 4 tiles and
    :math:`n = 2` this gives the 24 arrangements x 4 targets = 96 cases of the
    project's development set. The tiles should be confidently classified and of
    distinct classes (Rao et al.); this function does not check confidence.

    Args:
        tiles (Tensor): ``(K, C, s, s)`` tiles, :math:`K \ge n^2`.
        labels (Tensor): ``(K,)`` class of each tile, all distinct.
        grid (int, optional): :math:`n`. Default: 2.

    Returns:
        GridCases: images, tile index per cell and the flattened cases.

    Examples::

        >>> tiles = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 2, 2)
        >>> cases = make_grid_cases(tiles, torch.tensor([10, 11, 12, 13]))
        >>> cases.images.shape, cases.target.shape
        (torch.Size([24, 3, 4, 4]), torch.Size([96]))
        >>> cases.images[1, 0].tolist()   # second arrangement: tiles 0, 1, 3, 2
        [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [3.0, 3.0, 2.0, 2.0], [3.0, 3.0, 2.0, 2.0]]
    """
    grid = check_positive_int(grid, "grid")
    if not isinstance(tiles, Tensor) or tiles.dim() != 4:
        raise ValueError("tiles must be a tensor of shape (K, C, s, s)")
    count, channels, height, width = tiles.shape
    if labels.shape != (count,):
        raise ValueError(f"labels must have shape ({count},), got {tuple(labels.shape)}")
    if labels.unique().numel() != count:
        raise ValueError("the tiles' labels must be distinct")
    if count < grid * grid:
        raise ValueError(f"a {grid}x{grid} grid needs at least {grid * grid} tiles, got {count}")
    order = torch.tensor(
        list(itertools.permutations(range(count), grid * grid)), device=tiles.device
    )
    arranged = tiles[order].view(-1, grid, grid, channels, height, width)
    images = arranged.permute(0, 3, 1, 4, 2, 5).reshape(-1, channels, grid * height, grid * width)
    cells_per_image = grid * grid
    image = torch.arange(order.shape[0], device=tiles.device).repeat_interleave(cells_per_image)
    cell = torch.arange(cells_per_image, device=tiles.device).repeat(order.shape[0])
    target = labels.to(tiles.device)[order.flatten()]
    return GridCases(images, order, image, cell, target)
