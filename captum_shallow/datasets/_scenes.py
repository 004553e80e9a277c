"""What the synthetic WSSS sets share: scikit-image's photos as backgrounds and
textures, and a split of images, labels and exact masks drawn from any set's
configuration (:class:`SceneConfig`). The sets themselves are ``_shapes`` and
``_composite``; training their classifiers is ``_fitting`` and ``_training``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


class SceneConfig(Protocol):
    """A synthetic set's configuration: its classes, split sizes, seed, and how it
    draws one scene (``_draw``: a float ``(S, S, 3)`` image and its uint8 mask)."""

    @property
    def classes(self) -> tuple[str, ...]: ...
    @property
    def num_train(self) -> int: ...
    @property
    def num_test(self) -> int: ...
    @property
    def seed(self) -> int: ...

    def _draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]: ...


def _skimage_data() -> Any:
    """``skimage.data``, or an error that names the extra to install."""
    try:
        import skimage.data
    except ImportError as error:
        from .._errors import MissingDependencyError

        raise MissingDependencyError(
            'the synthetic benchmarks need scikit-image: pip install "captum-shallow[demo]"'
        ) from error
    return skimage.data


@cache
def _photo(name: str) -> np.ndarray:
    """A scikit-image photo as float32 RGB in [0, 1], downscaled 2x (antialiased)."""
    image = getattr(_skimage_data(), name)()
    if isinstance(image, tuple):  # stereo_motorcycle returns (left, right, disparity)
        image = image[0]
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
    array = array[..., None].expand(*array.shape, 3) if array.dim() == 2 else array[..., :3]
    small = F.interpolate(
        array.permute(2, 0, 1)[None],
        scale_factor=0.5,
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    return small[0].permute(1, 2, 0).clamp(0, 1).numpy()


def _crop(rng: np.random.Generator, photo: np.ndarray, size: int) -> np.ndarray:
    y = int(rng.integers(0, photo.shape[0] - size + 1))
    x = int(rng.integers(0, photo.shape[1] - size + 1))
    patch = photo[y : y + size, x : x + size]
    return patch[:, ::-1] if rng.random() < 0.5 else patch


def _background(rng: np.random.Generator, names: tuple[str, ...], side: int) -> np.ndarray:
    """A ``(side, side, 3)`` crop of one of the photos ``names``, maybe tinted."""
    image = _crop(rng, _photo(names[int(rng.integers(len(names)))]), side).copy()
    if rng.random() < 0.5:  # grey photos get a colour cast, colour ones a gain
        image *= rng.uniform(0.6, 1.0, size=3).astype(np.float32)
    return image


@dataclass(frozen=True)
class SyntheticSplit:
    """A split of a synthetic set (shapes or composite), as tensors.

    Attributes:
        images (Tensor): ``(N, 3, S, S)`` float RGB in :math:`[0, 1]`.
        labels (Tensor): ``(N, K)`` float multi-hot image-level labels.
        masks (Tensor): ``(N, S, S)`` long, 0 background, ``c + 1`` for class ``c``.

    Examples::

        >>> from captum_shallow.datasets import SyntheticConfig, make_synthetic_split
        >>> split = make_synthetic_split(SyntheticConfig(image_size=32, num_test=5,
        ...     min_object_size=8, max_object_size=14), "test")
        >>> len(split), [len(images) for images, _, _ in split.batches(2)]
        (5, [2, 2, 1])
    """

    images: Tensor
    labels: Tensor
    masks: Tensor
    #: The class names, in label order.
    classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(image, labels, mask)`` of image ``index``."""
        return self.images[index], self.labels[index], self.masks[index]

    def batches(self, batch_size: int = 32) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """``(images, labels, masks)`` in order, for :func:`evaluate_cams`."""
        for start in range(0, len(self), batch_size):
            end = start + batch_size
            yield self.images[start:end], self.labels[start:end], self.masks[start:end]


def make_synthetic_split(config: SceneConfig, split: str) -> SyntheticSplit:
    r"""Draw the ``"train"`` or ``"test"`` split of a synthetic WSSS set.

    Image :math:`i` of a split is drawn from its own generator seeded by
    ``(config.seed, split, i)``, so it does not depend on the other images.
    The labels are read off the mask (a class whose object could not be placed,
    or that later objects hid, is absent from both).

    Args:
        config (SyntheticConfig or CompositeConfig): the set and its generator's
            configuration: :class:`SyntheticConfig` draws the shapes set,
            :class:`CompositeConfig` the composite set.
        split (str): ``"train"`` or ``"test"``.

    Returns:
        SyntheticSplit: images, multi-hot labels and exact masks.

    Examples::

        >>> from captum_shallow.datasets import SyntheticConfig, make_synthetic_split
        >>> data = make_synthetic_split(SyntheticConfig(image_size=32, num_test=2,
        ...     min_object_size=8, max_object_size=14), "test")
        >>> data.images.shape, data.labels.shape, data.masks.shape
        (torch.Size([2, 3, 32, 32]), torch.Size([2, 5]), torch.Size([2, 32, 32]))
        >>> bool((data.labels.sum(1) >= 1).all())
        True
    """
    if not hasattr(config, "_draw"):
        raise TypeError(
            f"config must be a SyntheticConfig or a CompositeConfig, got {type(config).__name__}"
        )
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    count = config.num_train if split == "train" else config.num_test
    split_id = 0 if split == "train" else 1
    images, masks = [], []
    for index in range(count):
        rng = np.random.default_rng([config.seed, split_id, index])
        image, mask = config._draw(rng)
        images.append(image)
        masks.append(mask)
    image_tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    mask_tensor = torch.from_numpy(np.stack(masks)).long()
    present = F.one_hot(mask_tensor.flatten(1), len(config.classes) + 1).amax(dim=1)
    return SyntheticSplit(image_tensor, present[:, 1:].float(), mask_tensor, tuple(config.classes))
