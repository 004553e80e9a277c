"""captum_shallow: high-resolution CAMs from shallow CNN layers, denoised by
truncating the positive gradient, as Captum layer attributions."""

from typing import Any

from ._moved import deprecated_alias
from .attribution import _DEPRECATED as _ALIASES
from .attribution import (
    CAMBase,
    GradientTruncation,
    LayerCAM,
    LayerGradCam,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerXGradCam,
    ShallowCAM,
    TaskDefaults,
    fuse_maps,
    task_defaults,
)

__version__ = "0.1.0"

__all__ = [
    "CAMBase",
    "GradientTruncation",
    "LayerCAM",
    "LayerGradCam",
    "LayerGradCamPlusPlus",
    "LayerHiResCam",
    "LayerXGradCam",
    "ShallowCAM",
    "TaskDefaults",
    "__version__",
    "fuse_maps",
    "task_defaults",
]


def __getattr__(name: str) -> Any:
    # DEFAULT_TRUNCATION, deprecated (CHANGELOG.md, 0.2.0).
    aliases = {"DEFAULT_TRUNCATION": _ALIASES["DEFAULT_TRUNCATION"]}
    return deprecated_alias(__name__, name, aliases)
