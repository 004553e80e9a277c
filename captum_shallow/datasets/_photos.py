"""The photos that ship inside scikit-image's wheel, as image tensors."""

from __future__ import annotations

import torch
from torch import Tensor

from .._errors import MissingDependencyError, unknown_name

#: The photos :func:`sample_photo` knows, with the ImageNet class that the
#: embedded EfficientNet-Lite0 predicts for each at 224 px.
SAMPLE_PHOTOS: dict[str, int] = {
    "chelsea": 285,  # Egyptian cat
    "coffee": 967,  # espresso
    "camera": 872,  # tripod
    "stereo_motorcycle": 665,  # moped
}


def sample_photo(name: str = "chelsea") -> Tensor:
    """A photo from scikit-image's data (in its wheel, no download) as an RGB tensor.

    Args:
        name (str, optional): One of ``SAMPLE_PHOTOS``: ``"chelsea"`` (a cat),
            ``"coffee"`` (a cup of espresso), ``"camera"`` (a cameraman on a
            tripod, grey, repeated over three channels) or
            ``"stereo_motorcycle"`` (the left view of a motorcycle).
            Default: ``"chelsea"``

    Returns:
        Tensor: ``uint8`` tensor of shape (3, H, W).

    Raises:
        ValueError: For an unknown name (close names are suggested).
        MissingDependencyError: When scikit-image is not installed.

    Examples::

        >>> from captum_shallow.datasets import sample_photo
        >>> sample_photo("chelsea").shape
        torch.Size([3, 300, 451])
    """
    if name not in SAMPLE_PHOTOS:
        raise unknown_name("photo", name, SAMPLE_PHOTOS)
    try:
        from skimage import data
    except ImportError as error:
        raise MissingDependencyError(
            "the sample photos need scikit-image: pip install 'captum-shallow[demo]'"
        ) from error
    pixels = getattr(data, name)()
    if name == "stereo_motorcycle":
        pixels = pixels[0]  # (left view, right view, disparity)
    image = torch.from_numpy(pixels.copy())
    if image.ndim == 2:
        return image.expand(3, -1, -1).contiguous()
    return image.permute(2, 0, 1).contiguous()
