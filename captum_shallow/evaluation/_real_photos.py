r"""Scores of maps against the human masks of real photos.

Each map is upsampled (bilinear) to its photo, clamped at 0 and divided by its
maximum; pixels of the photo's ignore mask are left out of every score. Per photo:

- pointing (:func:`pointing_game`): the map's maximum on the object, exactly and
  within 15 pixels;
- energy in the mask (:func:`energy_pointing_game`): the share of the positive mass
  on the object;
- IoU of :math:`\{\hat M > t\}` with the object at every threshold of the sweep
  (:func:`region_extent`);
- the two-class (background, object) confusion matrix at every threshold, for IRN's
  mIoU of the confusion pooled over the photos (:func:`iou_from_confusion`).

:class:`RealPhotoScores` holds them for a set of photos and aggregates: means, the
IoU at the best threshold shared by all photos, at a given threshold, and per group
(the source data set, the ``match`` of the labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import THRESHOLD_SWEEP, check_maps, upsample
from ._localisation import energy_pointing_game, pointing_game, region_extent
from ._miou import iou_from_confusion

__all__ = ["POINTING_TOLERANCE", "RealPhotoScores", "score_photo"]

#: The pointing game's tolerance in pixels of the photo (Zhang et al., 2018).
POINTING_TOLERANCE = 15.0


@dataclass(frozen=True)
class RealPhotoScores:
    r"""Per-photo scores of one method (or, from :func:`score_photo`, of several
    maps of one photo), with their aggregates.

    Attributes:
        thresholds (Tensor): ``(T,)`` thresholds on the normalised maps.
        pointing (Tensor): ``(P,)`` hits of the exact pointing game.
        pointing_15 (Tensor): ``(P,)`` hits within :data:`POINTING_TOLERANCE` pixels.
        energy (Tensor): ``(P,)`` share of the positive mass in the mask.
        iou (Tensor): ``(P, T)`` IoU of the thresholded map with the mask.
        confusion (Tensor): ``(P, T, 2, 2)`` background/object confusion matrices.

    Examples::

        >>> mask = torch.zeros(8, 8, dtype=torch.bool)
        >>> mask[:, :4] = True
        >>> maps = torch.zeros(1, 1, 8, 8)
        >>> maps[..., :2] = 1.0                      # half of the object
        >>> scores = score_photo(maps, mask, thresholds=[0.0, 0.5])
        >>> scores.iou_at(0.5), scores.energy_mean, round(scores.miou_at(0.5), 4)
        (0.5, 1.0, 0.5833)
    """

    thresholds: Tensor
    pointing: Tensor
    pointing_15: Tensor
    energy: Tensor
    iou: Tensor
    confusion: Tensor

    def __len__(self) -> int:
        return int(self.pointing.shape[0])

    @staticmethod
    def cat(parts: Sequence[RealPhotoScores]) -> RealPhotoScores:
        """The scores of several sets of photos, one after the other."""
        if not parts:
            raise ValueError("cat needs at least one RealPhotoScores")
        return RealPhotoScores(
            parts[0].thresholds,
            *(torch.cat([getattr(p, f) for p in parts]) for f in _PER_PHOTO),
        )

    def select(self, index: Tensor | Sequence[int]) -> RealPhotoScores:
        """The scores of some photos (indices or a boolean mask)."""
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            index = index.nonzero()[:, 0]
        return RealPhotoScores(self.thresholds, *(getattr(self, f)[index] for f in _PER_PHOTO))

    def _index(self, threshold: float) -> int:
        hits = (self.thresholds - float(threshold)).abs() < 1e-6
        if not bool(hits.any()):
            raise ValueError(f"threshold {threshold} is not in the sweep")
        return int(hits.nonzero()[0, 0])

    @property
    def pointing_mean(self) -> float:
        """Share of photos whose map peaks on the object."""
        return float(self.pointing.nanmean())

    @property
    def pointing_15_mean(self) -> float:
        """Share of photos whose map peaks within 15 px of the object."""
        return float(self.pointing_15.nanmean())

    @property
    def energy_mean(self) -> float:
        """Mean share of the positive mass inside the mask."""
        return float(self.energy.nanmean())

    @property
    def iou_curve(self) -> Tensor:
        """``(T,)`` mean IoU over the photos at each threshold."""
        return self.iou.nanmean(dim=0)

    @property
    def best_threshold(self) -> float:
        """The threshold shared by all photos with the highest mean IoU (the lowest on ties)."""
        return float(self.thresholds[int(self.iou_curve.argmax())])

    @property
    def iou_best(self) -> float:
        """Mean IoU at :attr:`best_threshold`."""
        return float(self.iou_curve.max())

    def iou_at(self, threshold: float) -> float:
        """Mean IoU over the photos at one threshold of the sweep."""
        return float(self.iou_curve[self._index(threshold)])

    @property
    def miou_curve(self) -> Tensor:
        """``(T,)`` background/object mIoU of the confusion pooled over the photos (IRN's)."""
        return iou_from_confusion(self.confusion.sum(dim=0))[1]

    @property
    def miou_best(self) -> float:
        """Highest pooled mIoU over the sweep."""
        return float(self.miou_curve.max())

    def miou_at(self, threshold: float) -> float:
        """Pooled background/object mIoU at one threshold of the sweep."""
        return float(self.miou_curve[self._index(threshold)])

    def object_iou_at(self, threshold: float) -> float:
        """The object's IoU of the pooled confusion (what ``evaluate-masks`` reports)."""
        return float(iou_from_confusion(self.confusion.sum(dim=0))[0][self._index(threshold), 1])


_PER_PHOTO = ("pointing", "pointing_15", "energy", "iou", "confusion")


@torch.no_grad()
def score_photo(
    maps: Tensor,
    mask: Tensor,
    ignore: Tensor | None = None,
    thresholds: Sequence[float] = THRESHOLD_SWEEP,
) -> RealPhotoScores:
    r"""Score several maps of one photo against its mask.

    Each map is upsampled (bilinear) to the mask's size; :math:`\hat M =
    \max(M, 0) / \max_p M` is thresholded for the IoU and the confusion matrices,
    the pointing games take its maximum among the pixels not ignored, and the
    energy its positive mass outside the ignored pixels.

    Args:
        maps (Tensor): ``(N, 1, h, w)`` maps of the photo (one per method, say).
        mask (Tensor): ``(H, W)`` boolean object mask.
        ignore (Tensor, optional): ``(H, W)`` boolean pixels left out of every
            score. Default: None.
        thresholds (sequence of float, optional): increasing thresholds in
            :math:`[0, 1)`. Default: 0.00, 0.01, ..., 0.95.

    Returns:
        RealPhotoScores: one row per map.

    Examples::

        >>> mask = torch.zeros(4, 4, dtype=torch.bool)
        >>> mask[0, 0] = True
        >>> maps = torch.zeros(1, 1, 4, 4)
        >>> maps[0, 0, 3, 3] = 1.0
        >>> scores = score_photo(maps, mask, thresholds=[0.0])
        >>> scores.pointing.tolist(), scores.pointing_15.tolist(), scores.iou.tolist()
        ([0.0], [1.0], [[0.0]])
    """
    maps = check_maps(maps)
    if mask.dim() != 2:
        raise ValueError(f"mask must be (H, W), got {tuple(mask.shape)}")
    mask = mask.to(maps.device).bool()
    ignore = torch.zeros_like(mask) if ignore is None else ignore.to(maps.device).bool()
    if ignore.shape != mask.shape:
        raise ValueError(f"ignore {tuple(ignore.shape)} and mask {tuple(mask.shape)} differ")
    count = maps.shape[0]
    full = upsample(maps, (mask.shape[0], mask.shape[1]))
    masks, ignores = mask.expand(count, -1, -1), ignore.expand(count, -1, -1)
    # The maps are at the mask's size, so the metrics below do not resample them.
    peaks = full.masked_fill(ignore, float("-inf"))
    pointing = pointing_game(peaks, masks, tolerance=0.0)
    pointing_15 = pointing_game(peaks, masks, tolerance=POINTING_TOLERANCE)
    energy = energy_pointing_game(full.masked_fill(ignore, 0.0), masks)
    extent = region_extent(full, masks, thresholds, ignore=ignores)
    # The two-class confusion from the extent's shares: the object's pixels, those
    # predicted (above t) and their overlap, among the pixels not ignored.
    valid = (~ignore).sum().double()
    region = (mask & ~ignore).sum().double()
    predicted = (extent.area * valid).round()
    overlap = (extent.coverage.nan_to_num(0.0) * region).round()
    confusion = torch.stack(
        [
            torch.stack([valid - region - (predicted - overlap), predicted - overlap], -1),
            torch.stack([region - overlap, overlap], -1),
        ],
        dim=-2,
    ).long()
    return RealPhotoScores(
        extent.thresholds.float(),
        pointing,
        pointing_15,
        energy,
        extent.iou,
        confusion,
    )
