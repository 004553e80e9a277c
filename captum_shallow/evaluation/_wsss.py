r"""IRN's evaluation of CAMs as pseudo-masks (Ahn et al. 2019, ``step/eval_cam.py``):
the confusion matrix of the pseudo-masks at every background threshold of a
sweep, the mIoU per threshold, and the whole protocol over a data set with an
optional dense-CRF pass. The pseudo-masks themselves are
:mod:`captum_shallow.segmentation`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import THRESHOLD_SWEEP, check_positive_int
from ..segmentation._irn import (
    IRN_THRESHOLD,
    CamFn,
    check_labels,
    class_cams,
    dense_crf,
    pseudo_masks,
)
from ._miou import check_segmentation, confusion_matrix, iou_from_confusion

__all__ = ["DEFAULT_THRESHOLDS", "SweepResult", "ThresholdSweep", "evaluate_cams"]

#: The sweep of the background threshold, 0.00 to 0.95 by 0.01: SEAM's 0.00..0.60
#: extended, because maps of deep layers and fused maps can peak above 0.60.
DEFAULT_THRESHOLDS: tuple[float, ...] = THRESHOLD_SWEEP


@dataclass(frozen=True)
class SweepResult:
    """mIoU over the background thresholds.

    Attributes:
        thresholds (Tensor): ``(T,)`` background thresholds.
        iou (Tensor): ``(T, K)`` per-class IoU (background first).
        miou (Tensor): ``(T,)`` mIoU at each threshold.
        confusion (Tensor): ``(T, K, K)`` confusion matrices.
        crf_miou (float or None): mIoU after dense-CRF refinement at
            ``crf_threshold``, when it was computed.
        crf_threshold (float or None): threshold of the CRF pass.

    Examples::

        >>> sweep = ThresholdSweep(2, thresholds=[0.1, 0.15, 0.5])
        >>> cams = torch.tensor([[[[0.3, 0.9]]]])
        >>> sweep.update(cams, torch.tensor([[1]]), torch.tensor([[[0, 1]]]))
        >>> result = sweep.result()
        >>> result.miou.tolist(), result.best_threshold, result.miou_at(0.15)
        ([0.25, 0.25, 1.0], 0.5, 0.25)
    """

    thresholds: Tensor
    iou: Tensor
    miou: Tensor
    confusion: Tensor
    crf_miou: float | None = None
    crf_threshold: float | None = None

    @property
    def best_threshold(self) -> float:
        """Threshold of the highest mIoU (the lowest one when several tie)."""
        return float(self.thresholds[int(self.miou.argmax())])

    @property
    def best_miou(self) -> float:
        """Highest mIoU over the sweep."""
        return float(self.miou.max())

    def miou_at(self, threshold: float = IRN_THRESHOLD) -> float:
        """mIoU at a threshold of the sweep (IRN's 0.15 by default)."""
        hit = (self.thresholds - threshold).abs() < 1e-6
        if not hit.any():
            raise ValueError(f"threshold {threshold} is not in the sweep")
        return float(self.miou[int(hit.nonzero()[0])])


class ThresholdSweep:
    r"""Accumulates confusion matrices for every background threshold at once.

    For a pixel, the pseudo-label at threshold :math:`t` is its best present
    class when :math:`m = \max_{c \in L} \hat M_c > t`, else background. So
    with :math:`k` = the number of thresholds below :math:`m`, the pixel votes
    for its class at the first :math:`k` thresholds and for the background at
    the others: one histogram over (k, ground truth, class) and two cumulative
    sums give all :math:`T` confusion matrices, identical to calling
    :func:`pseudo_masks` and :func:`confusion_matrix` per threshold.

    Args:
        num_classes (int): labels including the background (``K + 1``).
        thresholds (Sequence[float], optional): increasing background
            thresholds. Default: 0.00, 0.01, ..., 0.95.
        ignore_index (int, optional): ground-truth label to skip. Default: 255.

    Examples::

        >>> sweep = ThresholdSweep(3, thresholds=[0.0, 0.5])
        >>> cams = torch.tensor([[[[0.2, 0.9]], [[0.0, 0.0]]]])
        >>> sweep.update(cams, torch.tensor([[1, 0]]), torch.tensor([[[0, 1]]]))
        >>> sweep.result().miou.tolist()
        [0.25, 1.0]
    """

    def __init__(
        self,
        num_classes: int,
        thresholds: Sequence[float] | Tensor = DEFAULT_THRESHOLDS,
        ignore_index: int = 255,
    ) -> None:
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.thresholds = torch.as_tensor(thresholds, dtype=torch.float32).flatten()
        if self.thresholds.numel() == 0 or (self.thresholds.diff() <= 0).any():
            raise ValueError("thresholds must be a non-empty, strictly increasing sequence")
        self.ignore_index = ignore_index
        self._hist = torch.zeros(
            self.thresholds.numel() + 1, num_classes, num_classes, dtype=torch.long
        )

    @torch.no_grad()
    def update(self, cams: Tensor, labels: Tensor, masks: Tensor) -> None:
        """Add a batch.

        Args:
            cams (Tensor): ``(N, K, H, W)`` normalised CAMs (:func:`class_cams`).
            labels (Tensor): ``(N, K)`` multi-hot image-level labels.
            masks (Tensor): ``(N, H, W)`` ground truth in ``0..K`` or ``ignore_index``.
        """
        if not isinstance(cams, Tensor) or cams.dim() != 4:
            raise ValueError("cams must be a (N, K, H, W) tensor")
        if cams.shape[1] + 1 != self.num_classes:
            raise ValueError(
                f"cams has {cams.shape[1]} classes but num_classes={self.num_classes} "
                "expects num_classes - 1 (the background is added)"
            )
        labels = check_labels(labels, cams.shape[0], cams.shape[1]).to(cams.device)
        masks = masks.to(cams.device)
        scores = cams.masked_fill(~labels[:, :, None, None], float("-inf"))
        top, best = scores.max(dim=1)
        best = (best + 1).masked_fill(~labels.any(dim=1)[:, None, None], 0)
        valid = check_segmentation(best, masks, self.num_classes, self.ignore_index)
        thresholds = self.thresholds.to(device=cams.device, dtype=top.dtype)
        below = torch.searchsorted(thresholds, top[valid].contiguous(), right=False)
        k = self.num_classes
        index = (below * k + masks[valid].long()) * k + best[valid]
        self._hist += torch.bincount(index, minlength=self._hist.numel()).view_as(self._hist).cpu()

    def confusion(self) -> Tensor:
        """``(T, K, K)`` confusion matrices, one per threshold."""
        # Pixels with k > j keep their class at threshold j, the others are background.
        keep = self._hist.flip(0).cumsum(0).flip(0)[1:]
        dropped = self._hist.cumsum(0)[:-1].sum(-1)
        confusion = keep.clone()
        confusion[:, :, 0] += dropped
        return confusion

    def result(
        self, crf_miou: float | None = None, crf_threshold: float | None = None
    ) -> SweepResult:
        """mIoU at every threshold (see :class:`SweepResult`)."""
        confusion = self.confusion()
        iou, miou = iou_from_confusion(confusion)
        return SweepResult(
            thresholds=self.thresholds.clone(),
            iou=iou,
            miou=miou,
            confusion=confusion,
            crf_miou=crf_miou,
            crf_threshold=crf_threshold,
        )


def _default_rgb(images: Tensor) -> Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def evaluate_cams(
    cam_fn: CamFn,
    batches: Iterable[tuple[Tensor, Tensor, Tensor]],
    num_classes: int,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    batch_size: int = 16,
    ignore_index: int = 255,
    crf: bool = False,
    crf_threshold: float = IRN_THRESHOLD,
    to_rgb: Callable[[Tensor], Tensor] = _default_rgb,
    device: torch.device | str | None = None,
) -> SweepResult:
    r"""The whole IRN evaluation of a CAM method on a dataset.

    For each batch ``(images, labels, masks)``: :func:`class_cams` of every
    present class, then the threshold sweep (:class:`ThresholdSweep`) and,
    with ``crf=True``, the pseudo-masks at ``crf_threshold`` refined by
    :func:`dense_crf` (IRN's CRF; on the CPU, one image at a time).

    Args:
        cam_fn (Callable): ``cam_fn(images, target) -> (B, 1, h, w)``.
        batches (Iterable): ``(images (N, C, H, W), labels (N, K) multi-hot,
            masks (N, H, W) in 0..K or ignore_index)``, e.g. a DataLoader.
        num_classes (int): labels including the background, ``K + 1``.
        thresholds (Sequence[float], optional): background thresholds.
            Default: 0.00 .. 0.95 by 0.01.
        batch_size (int, optional): (image, class) pairs per ``cam_fn`` call.
            Default: 16.
        ignore_index (int, optional): ground truth to skip. Default: 255.
        crf (bool, optional): also report the mIoU after dense CRF. Default: False.
        crf_threshold (float, optional): threshold of the CRF pass. Default: 0.15.
        to_rgb (Callable, optional): model input -> ``(N, 3, H, W)`` uint8 RGB
            for the CRF. Default: inputs in [0, 1] scaled by 255.
        device (torch.device or str, optional): where to move each batch before
            ``cam_fn`` (the model's device). Default: None (leave it).

    Returns:
        SweepResult: mIoU per threshold, best threshold, IRN's value and the
        CRF mIoU when asked.

    Examples::

        >>> images = torch.zeros(1, 3, 4, 4)
        >>> masks = torch.zeros(1, 4, 4, dtype=torch.long)
        >>> masks[0, :, 2:] = 1
        >>> cam_fn = lambda x, t: (masks[:1, None] == 1).float().expand(len(x), 1, 4, 4)
        >>> result = evaluate_cams(cam_fn, [(images, torch.tensor([[1]]), masks)], 2)
        >>> result.miou_at(0.15), result.best_miou
        (1.0, 1.0)
    """
    sweep = ThresholdSweep(num_classes, thresholds, ignore_index)
    crf_confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for images, labels, masks in batches:
        if device is not None:
            images, labels, masks = images.to(device), labels.to(device), masks.to(device)
        cams = class_cams(cam_fn, images, labels, batch_size=batch_size)
        sweep.update(cams, labels, masks)
        if crf:
            pred = pseudo_masks(cams, labels, crf_threshold).cpu()
            rgb = to_rgb(images)
            refined = torch.stack([dense_crf(rgb[i], pred[i]) for i in range(len(pred))])
            crf_confusion += confusion_matrix(refined, masks.cpu(), num_classes, ignore_index)
    crf_miou = float(iou_from_confusion(crf_confusion)[1]) if crf else None
    return sweep.result(crf_miou, crf_threshold if crf else None)
