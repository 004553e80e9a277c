"""Every Captum ``LayerAttribution`` of the package: the CAM family, the fused
:class:`ShallowCAM`, the gradient truncation they take, and ShallowCAM's
defaults per task."""

from collections.abc import Callable
from typing import Any

from .._moved import deprecated_alias
from ._cams import (
    CAMBase,
    LayerCAM,
    LayerGradCam,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerXGradCam,
)
from ._defaults import TASK_DEFAULTS, TaskDefaults, task_defaults
from ._fusion import Fusion, fuse_maps
from ._multiscale import IRN_SCALES, multiscale_attribute
from ._shallowcam import ShallowCAM
from ._truncation import GradientTruncation

#: Deprecated aliases (CHANGELOG.md, 0.2.0): each name, what to write instead, and
#: its value. The task defaults are the one source of ShallowCAM's defaults;
#: ``DEFAULT_TRUNCATION`` was the default of no parameter.
_DEPRECATED: dict[str, tuple[str, Callable[[], Any]]] = {
    "DEFAULT_FUSION": (
        'task_defaults("localisation").fusion',
        lambda: task_defaults("localisation").fusion,
    ),
    "DEFAULT_FUSED_TRUNCATION": (
        'task_defaults("localisation").truncation',
        lambda: task_defaults("localisation").truncation,
    ),
    "DEFAULT_TRUNCATION": (
        'GradientTruncation("soft", quantile=0.9)',
        lambda: GradientTruncation("soft", quantile=0.9),
    ),
}


def __getattr__(name: str) -> Any:
    return deprecated_alias(__name__, name, _DEPRECATED)


__all__ = [
    "IRN_SCALES",
    "TASK_DEFAULTS",
    "CAMBase",
    "Fusion",
    "GradientTruncation",
    "LayerCAM",
    "LayerGradCam",
    "LayerGradCamPlusPlus",
    "LayerHiResCam",
    "LayerXGradCam",
    "ShallowCAM",
    "TaskDefaults",
    "fuse_maps",
    "multiscale_attribute",
    "task_defaults",
]
