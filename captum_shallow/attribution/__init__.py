"""Every Captum ``LayerAttribution`` of the package: the CAM family, the fused
:class:`ShallowCAM`, the gradient truncation they take, and ShallowCAM's
defaults per task."""

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
from ._shallowcam import (
    DEFAULT_FUSED_TRUNCATION,
    DEFAULT_FUSION,
    DEFAULT_TRUNCATION,
    ShallowCAM,
)
from ._truncation import GradientTruncation

__all__ = [
    "DEFAULT_FUSED_TRUNCATION",
    "DEFAULT_FUSION",
    "DEFAULT_TRUNCATION",
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
    "task_defaults",
]
