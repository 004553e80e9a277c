"""Evaluation of class activation maps: faithfulness, localisation and
weakly-supervised semantic segmentation (WSSS), with a synthetic WSSS benchmark
and a PASCAL VOC 2012 adapter.

Metrics take a forward function returning logits, images ``(N, C, H, W)``, maps
``(N, 1, h, w)`` (upsampled bilinearly to the image size) and targets; they run
batched on the model's device under :func:`torch.no_grad` and never depend on
how the maps were made.
"""

from ._faithfulness import (
    ConfidenceChange,
    DeletionInsertion,
    average_drop_increase,
    deletion_insertion,
)
from ._localisation import (
    GridCases,
    boxes_to_masks,
    energy_pointing_game,
    grid_pointing_game,
    make_grid_cases,
    pointing_game,
)
from ._segmentation import (
    DEFAULT_THRESHOLDS,
    IRN_THRESHOLD,
    SweepResult,
    ThresholdSweep,
    class_cams,
    confusion_matrix,
    dense_crf,
    evaluate_cams,
    iou_from_confusion,
    irn_normalise,
    present_class_maps,
    pseudo_masks,
)
from ._synthetic import (
    SYNTHETIC_CLASSES,
    SyntheticClassifier,
    SyntheticConfig,
    SyntheticSplit,
    TrainConfig,
    TrainedClassifier,
    default_cache_dir,
    load_or_train_classifier,
    make_synthetic_split,
    multilabel_metrics,
)
from ._voc import VOC_CLASSES, VOCWeakSegmentation

__all__ = [
    "DEFAULT_THRESHOLDS",
    "IRN_THRESHOLD",
    "SYNTHETIC_CLASSES",
    "VOC_CLASSES",
    "ConfidenceChange",
    "DeletionInsertion",
    "GridCases",
    "SweepResult",
    "SyntheticClassifier",
    "SyntheticConfig",
    "SyntheticSplit",
    "ThresholdSweep",
    "TrainConfig",
    "TrainedClassifier",
    "VOCWeakSegmentation",
    "average_drop_increase",
    "boxes_to_masks",
    "class_cams",
    "confusion_matrix",
    "default_cache_dir",
    "deletion_insertion",
    "dense_crf",
    "energy_pointing_game",
    "evaluate_cams",
    "grid_pointing_game",
    "iou_from_confusion",
    "irn_normalise",
    "load_or_train_classifier",
    "make_grid_cases",
    "make_synthetic_split",
    "multilabel_metrics",
    "pointing_game",
    "present_class_maps",
    "pseudo_masks",
]
