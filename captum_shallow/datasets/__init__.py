"""Data sets: images with labels and masks, each a :class:`SegmentationSet`.

The synthetic WSSS sets with exact masks (``shapes``: a small CNN trained from
scratch; ``composite``: real silhouettes and a fine-tuned EfficientNet-Lite0)
and their cached classifiers, PASCAL VOC 2012 read from disk, scikit-image's
sample photos, ImageNet's class names, and real photographs with human object
masks in the ``index.csv`` format (:class:`RealPhotoSet`). Nothing is downloaded.
"""

from ._composite import COMPOSITE_CLASSES, CompositeClassifier, CompositeConfig, FineTuneConfig
from ._fitting import multilabel_metrics
from ._imagenet import class_index, imagenet_classes, output_class_names
from ._photos import SAMPLE_PHOTOS, sample_photo
from ._protocol import SegmentationSet
from ._real_photos import MATCHES, RealPhoto, RealPhotoSet, listed_target
from ._scenes import SceneConfig, SyntheticSplit, make_synthetic_split
from ._shapes import SYNTHETIC_CLASSES, SyntheticClassifier, SyntheticConfig, TrainConfig
from ._training import TrainedClassifier, default_cache_dir, load_or_train_classifier
from ._voc import VOC_CLASSES, VOCWeakSegmentation

__all__ = [
    "COMPOSITE_CLASSES",
    "MATCHES",
    "SAMPLE_PHOTOS",
    "SYNTHETIC_CLASSES",
    "VOC_CLASSES",
    "CompositeClassifier",
    "CompositeConfig",
    "FineTuneConfig",
    "RealPhoto",
    "RealPhotoSet",
    "SceneConfig",
    "SegmentationSet",
    "SyntheticClassifier",
    "SyntheticConfig",
    "SyntheticSplit",
    "TrainConfig",
    "TrainedClassifier",
    "VOCWeakSegmentation",
    "class_index",
    "default_cache_dir",
    "imagenet_classes",
    "listed_target",
    "load_or_train_classifier",
    "make_synthetic_split",
    "multilabel_metrics",
    "output_class_names",
    "sample_photo",
]
