"""Every Captum ``LayerAttribution`` of the package: the CAM family, the fused
:class:`ShallowCAM`, the gradient truncation they take, and ShallowCAM's
defaults per task."""

from ._cams import (
    LayerCAM,
    LayerGradCam,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerXGradCam,
)
from ._defaults import TASK_DEFAULTS, TaskDefaults, task_defaults
from ._fusion import Fusion, fuse_maps
from ._multiscale import IRN_SCALES, multiscale_attribute
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
    "IRN_SCALES",
    "TASK_DEFAULTS",
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
