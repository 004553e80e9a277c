"""Images from disk into model inputs: reading, resizing and normalising."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._paths import open_regular

if TYPE_CHECKING:
    from PIL import Image

#: ImageNet's per-channel mean and standard deviation, :func:`preprocess`'s default.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: How far outside [0, 1] a floating-point image may reach (a resampled image
#: overshoots a little); farther means 0..255 floats or a normalised image.
FLOAT_MARGIN = 0.05
#: The EXIF tag of a photo's orientation (1: as stored; 2 to 8: mirrored or turned).
_EXIF_ORIENTATION = 0x0112


def read_image(path: str | os.PathLike[str]) -> Tensor:
    r"""Read an image file (any format Pillow reads) as an RGB tensor.

    The EXIF orientation is honoured (the picture is turned as every viewer
    shows it). Grey, palette and RGBA images are converted to RGB (alpha is
    dropped).
    16-bit greyscale (Pillow's modes ``I;16`` and, for values in 0..65535,
    ``I``) is scaled to 8 bits, :math:`v_8 = \mathrm{round}(255 v / 65535)`,
    rather than clipped. Floating-point pixels (mode ``F``, e.g. a float TIFF)
    have no fixed range, so they are refused rather than guessed.

    Args:
        path (str or os.PathLike): The image file.

    Returns:
        Tensor: ``uint8`` tensor of shape (3, H, W).

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: When the file is a folder, a FIFO or a device (refused
            without blocking), or not an image that can be decoded (or is
            larger than Pillow's decompression-bomb limit, or holds
            floating-point or wider than 16-bit pixels); the message names the
            file and the reason.

    Examples::

        >>> import os, tempfile
        >>> from PIL import Image
        >>> from captum_shallow.io import read_image
        >>> path = os.path.join(tempfile.mkdtemp(), "grey.png")
        >>> Image.new("L", (5, 4), color=7).save(path)
        >>> image = read_image(path)
        >>> image.shape, image.dtype, int(image[2, 0, 0])
        (torch.Size([3, 4, 5]), torch.uint8, 7)
    """
    path = os.fspath(path)
    try:
        stream = open_regular(path, "image")
    except FileNotFoundError:
        raise FileNotFoundError(f"no such image file: {path}") from None
    with stream:
        return _decode(stream, path)


def _decode(stream: IO[bytes], path: str) -> Tensor:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(stream) as image:
            # Every viewer shows a photo turned as its EXIF orientation says;
            # the maps and masks must match what the user sees.
            rgb = _eight_bits(ImageOps.exif_transpose(image)).convert("RGB")
    except UnidentifiedImageError:
        raise ValueError(f"cannot read image {path}: not an image format Pillow knows") from None
    except Image.DecompressionBombError as error:
        raise ValueError(f"cannot read image {path}: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        # Pillow reports truncated or corrupt data with these.
        raise ValueError(f"cannot read image {path}: {error}") from None
    data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return data.view(rgb.height, rgb.width, 3).permute(2, 0, 1).contiguous()


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(H, W)`` of the tensor :func:`read_image` returns, from the file's header
    (the EXIF orientation applied), without decoding the pixels.

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: When it is not a regular file or not an image Pillow knows.
    """
    from PIL import Image

    with open_regular(path, "image") as stream:
        try:
            with Image.open(stream) as image:
                width, height = image.size
                orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise ValueError(f"cannot read image {os.fspath(path)}: {error}") from None
    # Orientations 5 to 8 turn the picture by a quarter turn.
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _eight_bits(image: Image.Image) -> Image.Image:
    """An ``L`` image of 16-bit greyscale; other images as they are.

    Pillow's own conversion clips 16-bit values at 255 (nearly all white), and
    float values too (an image in [0, 1] would read as black).
    """
    from PIL import Image

    if image.mode == "F":
        raise ValueError(
            "floating-point pixels (Pillow mode F) have no fixed range to read as colours; "
            "save the image with 8- or 16-bit integer pixels"
        )
    if not image.mode.startswith("I"):
        return image
    pixels = np.asarray(image, dtype=np.int64)
    if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
        raise ValueError(
            f"{image.mode} pixels in {int(pixels.min())}..{int(pixels.max())}; expected "
            "16-bit values (0..65535)"
        )
    # 65535 / 255 = 257 exactly; integer rounding keeps the result reproducible.
    return Image.fromarray(((pixels + 128) // 257).astype(np.uint8))


def preprocess(
    image: Tensor,
    size: int | tuple[int, int] = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    r"""Resize an image to the model's input size and normalise it.

    The whole image is resized (bilinear, antialiased), without cropping, so a
    map computed on the input covers the whole photo and can be resized back to
    the photo's own shape. Then :math:`x = (v - \mu) / \sigma` per channel, with
    :math:`v \in [0, 1]`.

    Args:
        image (Tensor): (3, H, W) or a batch (N, 3, H, W); ``uint8`` in
            [0, 255] or floating point in [0, 1]. One channel is repeated to three.
            Floats outside [-0.05, 1.05] (0..255 floats, or an image normalised
            already) are refused rather than guessed.
        size (int or tuple[int, int], optional): Output (height, width), or one
            number for a square.
            Default: 224
        mean (Sequence[float], optional): Per-channel mean.
            Default: ImageNet's ``(0.485, 0.456, 0.406)``
        std (Sequence[float], optional): Per-channel standard deviation.
            Default: ImageNet's ``(0.229, 0.224, 0.225)``

    Returns:
        Tensor: ``float32`` tensor of shape (3, h, w), or (N, 3, h, w) for a batch,
        on the image's device.

    Raises:
        ValueError: For a wrong shape, or floating-point values outside [0, 1].

    Examples::

        >>> from captum_shallow.io import preprocess
        >>> from captum_shallow.datasets import sample_photo
        >>> preprocess(sample_photo("coffee")).shape
        torch.Size([3, 224, 224])
    """
    if image.ndim not in (3, 4) or image.shape[-3] not in (1, 3):
        raise ValueError(
            f"expected an image of shape (3, H, W) or (N, 3, H, W), got {tuple(image.shape)}"
        )
    batch = image if image.ndim == 4 else image.unsqueeze(0)
    if batch.is_floating_point() and batch.numel():
        low, high = (float(v) for v in torch.aminmax(batch.detach().float()))
        if low < -FLOAT_MARGIN or high > 1 + FLOAT_MARGIN:
            raise ValueError(
                f"a floating-point image with values in [{low:.4g}, {high:.4g}]; preprocess "
                "takes floats in [0, 1] or uint8 in [0, 255]: divide 0..255 floats by 255 "
                "(an image normalised already goes to the model as it is)"
            )
    pixels = batch.float() / 255 if not batch.is_floating_point() else batch.float()
    pixels = pixels.expand(-1, 3, -1, -1)
    height, width = (size, size) if isinstance(size, int) else size
    pixels = F.interpolate(
        pixels, size=(height, width), mode="bilinear", antialias=True, align_corners=False
    )
    mean_t = torch.tensor(mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    normalised = (pixels - mean_t) / std_t
    return normalised if image.ndim == 4 else normalised.squeeze(0)


def load_image(
    path: str | os.PathLike[str], size: int | tuple[int, int] = 224
) -> tuple[Tensor, Tensor]:
    """Read an image file and make it a model input.

    Args:
        path (str or os.PathLike): The image file.
        size (int or tuple[int, int], optional): The model's input size.
            Default: 224

    Returns:
        tuple[Tensor, Tensor]: The input, normalised, of shape (1, 3, h, w), and
        the image as read, ``uint8`` (3, H, W), for display.

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: When the file cannot be decoded as an image.

    Examples::

        >>> import os, tempfile
        >>> from PIL import Image
        >>> from captum_shallow.io import load_image
        >>> path = os.path.join(tempfile.mkdtemp(), "photo.jpg")
        >>> Image.new("RGB", (64, 48), color=(200, 30, 30)).save(path)
        >>> inputs, image = load_image(path, size=32)
        >>> inputs.shape, image.shape
        (torch.Size([1, 3, 32, 32]), torch.Size([3, 48, 64]))
    """
    image = read_image(path)
    return preprocess(image, size).unsqueeze(0), image
