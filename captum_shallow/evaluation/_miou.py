r"""Segmentation metrics: the confusion matrix and per-class IoU / mIoU.

IRN's ``step/eval_cam.py`` scores pseudo-masks this way (label 255 ignored,
:math:`IoU_c = C_{cc} / (\sum_j C_{cj} + \sum_i C_{ic} - C_{cc})`, mIoU = nanmean);
:mod:`captum_shallow.segmentation` builds the masks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_positive_int

__all__ = ["confusion_matrix", "iou_from_confusion"]


def check_segmentation(pred: Tensor, gt: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ"
        )
    valid = gt != ignore_index
    if valid.any():
        bad_gt = (gt[valid] < 0) | (gt[valid] >= num_classes)
        if bad_gt.any():
            raise ValueError(
                f"ground truth holds labels outside 0..{num_classes - 1} (and {ignore_index}): "
                f"{gt[valid][bad_gt].unique().tolist()[:5]}"
            )
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(f"prediction holds labels outside 0..{num_classes - 1}")
    return valid


@torch.no_grad()
def confusion_matrix(pred: Tensor, gt: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    r"""Confusion matrix of segmentation labels, ``ignore_index`` skipped.

    :math:`C_{ij}` = number of pixels of ground truth :math:`i` predicted as
    :math:`j`.

    Args:
        pred (Tensor): predicted labels, any shape.
        gt (Tensor): ground-truth labels, same shape.
        num_classes (int): number of labels, background included (21 for VOC).
        ignore_index (int, optional): ground-truth label to skip. Default: 255.

    Returns:
        Tensor: ``(num_classes, num_classes)`` int64 counts.

    Examples::

        >>> confusion_matrix(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 255]), 2).tolist()
        [[1, 1], [0, 1]]
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    valid = check_segmentation(pred, gt, num_classes, ignore_index)
    index = gt[valid].long() * num_classes + pred.to(gt.device)[valid].long()
    counts = torch.bincount(index, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


def iou_from_confusion(confusion: Tensor) -> tuple[Tensor, Tensor]:
    r"""Per-class IoU and mIoU from confusion matrices.

    :math:`IoU_c = C_{cc} / (\sum_j C_{cj} + \sum_i C_{ic} - C_{cc})`; a class
    absent from both ground truth and prediction gets NaN and is left out of the
    mean (IRN's ``nanmean``).

    Args:
        confusion (Tensor): ``(K, K)`` counts, or a stack ``(..., K, K)``.

    Returns:
        tuple[Tensor, Tensor]: IoU per class ``(..., K)`` and mIoU ``(...)``,
        float64.

    Examples::

        >>> iou, miou = iou_from_confusion(torch.tensor([[3, 1], [0, 4]]))
        >>> iou.tolist(), miou.item()
        ([0.75, 0.8], 0.775)
    """
    if confusion.dim() < 2 or confusion.shape[-1] != confusion.shape[-2]:
        raise ValueError(f"confusion must be (..., K, K), got {tuple(confusion.shape)}")
    conf = confusion.double()
    tp = conf.diagonal(dim1=-2, dim2=-1)
    union = conf.sum(-1) + conf.sum(-2) - tp
    iou = tp / union  # 0 / 0 -> NaN: class absent from both
    return iou, iou.nanmean(-1)
