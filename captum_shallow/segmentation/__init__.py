"""Weakly-supervised semantic segmentation (WSSS) from CAMs: IRN's pseudo-masks
and their evaluation, the mask files and the resumable pipeline that writes them,
a PASCAL VOC 2012 adapter and the synthetic benchmark sets with exact masks.

The metrics these use (confusion matrix, IoU) are in
:mod:`captum_shallow.evaluation`.
"""

from ._composite import (
    COMPOSITE_CLASSES,
    CompositeClassifier,
    CompositeConfig,
    FineTuneConfig,
)
from ._irn import (
    DEFAULT_THRESHOLDS,
    IRN_THRESHOLD,
    SweepResult,
    ThresholdSweep,
    class_cams,
    dense_crf,
    evaluate_cams,
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
    "COMPOSITE_CLASSES",
    "DEFAULT_THRESHOLDS",
    "IRN_THRESHOLD",
    "SYNTHETIC_CLASSES",
    "VOC_CLASSES",
    "CompositeClassifier",
    "CompositeConfig",
    "FineTuneConfig",
    "SweepResult",
    "SyntheticClassifier",
    "SyntheticConfig",
    "SyntheticSplit",
    "ThresholdSweep",
    "TrainConfig",
    "TrainedClassifier",
    "VOCWeakSegmentation",
    "class_cams",
    "default_cache_dir",
    "dense_crf",
    "evaluate_cams",
    "irn_normalise",
    "load_or_train_classifier",
    "make_synthetic_split",
    "multilabel_metrics",
    "present_class_maps",
    "pseudo_masks",
]
