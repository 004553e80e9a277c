"""captum_shallow: high-resolution CAMs from shallow CNN layers, denoised by
truncating the positive gradient, as Captum layer attributions."""

from .attribution import (
    DEFAULT_TRUNCATION,
    GradientTruncation,
    LayerCAM,
    LayerGradCam,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerXGradCam,
    ShallowCAM,
    fuse_maps,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TRUNCATION",
    "GradientTruncation",
    "LayerCAM",
    "LayerGradCam",
    "LayerGradCamPlusPlus",
    "LayerHiResCam",
    "LayerXGradCam",
    "ShallowCAM",
    "__version__",
    "fuse_maps",
]
