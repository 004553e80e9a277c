"""The CAM family as Captum layer attributions and the gradient truncation they take."""

from ._cams import (
    LayerCAM,
    LayerGradCam,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerXGradCam,
)
from ._truncation import GradientTruncation

__all__ = [
    "GradientTruncation",
    "LayerCAM",
    "LayerGradCam",
    "LayerGradCamPlusPlus",
    "LayerHiResCam",
    "LayerXGradCam",
]
