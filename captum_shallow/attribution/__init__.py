"""Every Captum ``LayerAttribution`` of the package: the CAM family, the fused
:class:`ShallowCAM`, and the gradient truncation they take."""

from ._cams import (
    LayerCAM,
    LayerGradCam,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerXGradCam,
)
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
    "Fusion",
    "GradientTruncation",
    "LayerCAM",
    "LayerGradCam",
    "LayerGradCamPlusPlus",
    "LayerHiResCam",
    "LayerXGradCam",
    "ShallowCAM",
    "fuse_maps",
]
