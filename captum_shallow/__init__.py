"""captum_shallow: high-resolution CAMs from shallow CNN layers, denoised by
truncating the positive gradient, as Captum layer attributions."""

from .attribution import (
    DEFAULT_TRUNCATION,
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
    "DEFAULT_TRUNCATION",
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
