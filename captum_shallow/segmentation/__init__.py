"""Pseudo-masks from CAMs, the weakly-supervised segmentation (WSSS) step: IRN's
masks (present-class maps, background threshold, optional dense CRF), the jobs
that list a data set's images, and the resumable pipeline that writes the masks.

Data sets are :mod:`captum_shallow.datasets`; scoring the masks (IRN's threshold
sweep, mIoU) is :mod:`captum_shallow.evaluation`.
"""

from typing import Any

from .._moved import moved_attribute
from ._irn import (
    IRN_THRESHOLD,
    class_cams,
    dense_crf,
    irn_normalise,
    present_class_maps,
    pseudo_masks,
)

__all__ = [
    "IRN_THRESHOLD",
    "class_cams",
    "dense_crf",
    "irn_normalise",
    "present_class_maps",
    "pseudo_masks",
]

_DATASETS = (
    "COMPOSITE_CLASSES",
    "SYNTHETIC_CLASSES",
    "VOC_CLASSES",
    "CompositeClassifier",
    "CompositeConfig",
    "FineTuneConfig",
    "SyntheticClassifier",
    "SyntheticConfig",
    "SyntheticSplit",
    "TrainConfig",
    "TrainedClassifier",
    "VOCWeakSegmentation",
    "default_cache_dir",
    "load_or_train_classifier",
    "make_synthetic_split",
    "multilabel_metrics",
)
_MOVED = dict.fromkeys(_DATASETS, "captum_shallow.datasets") | dict.fromkeys(
    ("DEFAULT_THRESHOLDS", "SweepResult", "ThresholdSweep", "evaluate_cams"),
    "captum_shallow.evaluation",
)


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, name, _MOVED)
