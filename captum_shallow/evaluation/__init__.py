"""Scores: metrics of class activation maps (faithfulness, localisation) and of
the pseudo-masks made from them (confusion matrix, IoU, IRN's threshold sweep).

Metrics take a forward function returning logits, images ``(N, C, H, W)``, maps
``(N, 1, h, w)`` (upsampled bilinearly to the image size) and targets; they run
batched on the model's device under :func:`torch.no_grad` and never depend on
how the maps were made. The pipeline that turns maps into masks is
:mod:`captum_shallow.segmentation`.
"""

from ._faithfulness import (
    ConfidenceChange,
    DeletionInsertion,
    average_drop_increase,
    deletion_insertion,
)
from ._localisation import (
    FIXED_EXTENT_THRESHOLD,
    Extent,
    GridCases,
    boxes_to_masks,
    energy_pointing_game,
    grid_extent,
    grid_pointing_game,
    make_grid_cases,
    pointing_game,
    region_extent,
)
from ._miou import confusion_matrix, iou_from_confusion
from ._real_photos import POINTING_TOLERANCE, RealPhotoScores, score_photo
from ._wsss import DEFAULT_THRESHOLDS, SweepResult, ThresholdSweep, evaluate_cams

__all__ = [
    "DEFAULT_THRESHOLDS",
    "FIXED_EXTENT_THRESHOLD",
    "POINTING_TOLERANCE",
    "ConfidenceChange",
    "DeletionInsertion",
    "Extent",
    "GridCases",
    "RealPhotoScores",
    "SweepResult",
    "ThresholdSweep",
    "average_drop_increase",
    "boxes_to_masks",
    "confusion_matrix",
    "deletion_insertion",
    "energy_pointing_game",
    "evaluate_cams",
    "grid_extent",
    "grid_pointing_game",
    "iou_from_confusion",
    "make_grid_cases",
    "pointing_game",
    "region_extent",
    "score_photo",
]
