r"""The ``shapes`` set: a synthetic WSSS benchmark with exact masks that runs
offline on a CPU.

The shapes set's scenes: one to three non-overlapping objects of distinct classes on a crop of a
real photo. The class of an object is its *shape* (disk, square, triangle,
cross, ring); its texture is a crop of another real photo, drawn at random and
independent of the class, so a classifier has to learn shapes, not colours.
Backgrounds and object textures come from disjoint sets of scikit-image's
bundled photos (no download). Shapes are rasterised by testing each pixel
centre against the rotated shape, and the same boolean mask paints the texture
and writes the label, so the masks are exact (no anti-aliasing, no void).

A small four-stage CNN (:class:`SyntheticClassifier`) is trained from scratch
on the CPU (multi-label, binary cross-entropy), seeded and deterministic, and
cached on disk under a key that hashes the generator and training
configuration; its test mAP and accuracy come back with it so they can be
printed beside every mIoU.

Everything is a function of the configuration: the same config gives the same
images, masks and weights (same thread count, same torch build).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ._fitting import _train
from ._scenes import SyntheticSplit, _background, _crop, _photo

__all__ = ["SYNTHETIC_CLASSES", "SyntheticClassifier", "SyntheticConfig", "TrainConfig"]

#: Object classes of the synthetic set; segmentation label of class ``c`` is ``c + 1``.
SYNTHETIC_CLASSES: tuple[str, ...] = ("disk", "square", "triangle", "cross", "ring")

# Bump when the generator, the model or the training loop changes: it is part of
# the cache key, so stale weights are never reused.
_VERSION = "1"

# scikit-image photos that ship in its wheel (checked offline). Disjoint pools.
_BACKGROUNDS = ("grass", "gravel", "brick", "moon", "camera", "rocket", "stereo_motorcycle")
_TEXTURES = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry")


@dataclass(frozen=True)
class SyntheticConfig:
    """How the scenes are drawn.

    Attributes:
        image_size (int): side of the square images. Default: 64.
        num_train (int): training images. Default: 2000.
        num_test (int): test images (also the WSSS evaluation set). Default: 500.
        max_objects (int): at most this many objects (of distinct classes); at
            least one. Default: 3.
        min_object_size (int): smallest object box side in pixels. Default: 18.
        max_object_size (int): largest object box side in pixels. Default: 30.
        seed (int): seed of the generator. Default: 0.

    Examples::

        >>> SyntheticConfig(image_size=32, min_object_size=8, max_object_size=14).num_test
        500
        >>> SyntheticConfig(max_objects=9)
        Traceback (most recent call last):
        ...
        ValueError: max_objects must be in 1..5
    """

    image_size: int = 64
    num_train: int = 2000
    num_test: int = 500
    max_objects: int = 3
    min_object_size: int = 18
    max_object_size: int = 30
    seed: int = 0

    #: The class names, in label order.
    classes: ClassVar[tuple[str, ...]] = SYNTHETIC_CLASSES
    _cache_folder: ClassVar[str] = "synthetic"
    _version: ClassVar[str] = _VERSION

    def __post_init__(self) -> None:
        if not 1 <= self.max_objects <= len(SYNTHETIC_CLASSES):
            raise ValueError(f"max_objects must be in 1..{len(SYNTHETIC_CLASSES)}")
        if not 4 <= self.min_object_size <= self.max_object_size <= self.image_size:
            raise ValueError("need 4 <= min_object_size <= max_object_size <= image_size")
        if self.num_train < 1 or self.num_test < 1:
            raise ValueError("num_train and num_test must be positive")

    def _draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return _scene(self, rng)

    def _default_training(self) -> TrainConfig:
        return TrainConfig()


@dataclass(frozen=True)
class TrainConfig:
    """How the classifier is trained.

    Attributes:
        width (int): channels of the first stage (doubled per stage). Default: 16.
        epochs (int): passes over the training set. Default: 20.
        batch_size (int): Default: 64.
        lr (float): peak learning rate of AdamW (one-cycle schedule). Default: 3e-3.
        weight_decay (float): Default: 5e-4.
        seed (int): seed of the initialisation and the shuffling. Default: 0.
        threads (int): torch CPU threads while training (fixed for
            reproducibility). Default: 2.

    Examples::

        >>> TrainConfig(width=8, epochs=3).batch_size
        64
    """

    width: int = 16
    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    seed: int = 0
    threads: int = 2

    _data: ClassVar[type] = SyntheticConfig

    def _build(self, num_classes: int, pretrained: bool) -> SyntheticClassifier:
        return SyntheticClassifier(num_classes, width=self.width)

    def _fit(self, model: nn.Module, data: SyntheticSplit, verbose: bool) -> None:
        _train(model, data.images, data.labels, self, verbose, augment=True)


def _shape_mask(kind: int, size: int, angle: float) -> np.ndarray:
    """Boolean ``(size, size)`` mask: which pixel centres lie in the rotated shape."""
    centre = (np.arange(size) + 0.5 - size / 2) / (size / 2)
    y, x = np.meshgrid(centre, centre, indexing="ij")
    u = math.cos(angle) * x + math.sin(angle) * y
    v = -math.sin(angle) * x + math.cos(angle) * y
    radius2 = u * u + v * v
    name = SYNTHETIC_CLASSES[kind]
    if name == "disk":
        return radius2 <= 0.95**2
    if name == "square":
        return (np.abs(u) <= 0.68) & (np.abs(v) <= 0.68)
    if name == "triangle":  # equilateral, circumradius 1, inradius 0.5
        normals = [(-math.pi / 2), math.pi / 6, 5 * math.pi / 6]
        inside = np.ones_like(u, dtype=bool)
        for phi in normals:
            inside &= math.cos(phi) * u + math.sin(phi) * v <= 0.5
        return inside
    if name == "cross":
        arm, reach = 0.3, 0.95
        return ((np.abs(u) <= arm) & (np.abs(v) <= reach)) | (
            (np.abs(v) <= arm) & (np.abs(u) <= reach)
        )
    return (radius2 <= 0.97**2) & (radius2 >= 0.55**2)  # ring


def _scene(config: SyntheticConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One ``(S, S, 3)`` float image and its ``(S, S)`` uint8 mask."""
    side = config.image_size
    image = _background(rng, _BACKGROUNDS, side)
    mask = np.zeros((side, side), dtype=np.uint8)
    count = int(rng.integers(1, config.max_objects + 1))
    classes = rng.permutation(len(SYNTHETIC_CLASSES))[:count]
    boxes: list[tuple[int, int, int]] = []
    for kind in classes:
        for _ in range(50):  # rejection sampling of a free box
            size = int(rng.integers(config.min_object_size, config.max_object_size + 1))
            y = int(rng.integers(0, side - size + 1))
            x = int(rng.integers(0, side - size + 1))
            if all(
                y + size + 1 <= by or by + bs + 1 <= y or x + size + 1 <= bx or bx + bs + 1 <= x
                for by, bx, bs in boxes
            ):
                break
        else:
            continue
        boxes.append((y, x, size))
        shape = _shape_mask(int(kind), size, float(rng.uniform(0, 2 * math.pi)))
        texture = _crop(rng, _photo(_TEXTURES[int(rng.integers(len(_TEXTURES)))]), size)
        texture = np.clip(texture * rng.uniform(0.8, 1.25), 0, 1)
        region = image[y : y + size, x : x + size]
        region[shape] = texture[shape]
        mask[y : y + size, x : x + size][shape] = kind + 1
    return image, mask


def _stage(in_channels: int, out_channels: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.MaxPool2d(2)] if pool else []
    for channels in (in_channels, out_channels):
        layers += [
            nn.Conv2d(channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        ]
    return nn.Sequential(*layers)


class SyntheticClassifier(nn.Module):
    r"""A small four-stage CNN for the synthetic set (multi-label logits).

    Input: ``(N, 3, S, S)`` RGB in :math:`[0, 1]` (normalised inside). Stage
    :math:`s = 1..4` has :math:`w \cdot 2^{s-1}` channels at resolution
    :math:`S / 2^{s-1}`; each is two 3x3 conv + batch-norm + ReLU (after a 2x2
    max-pool from stage 2 on). Global average pooling and a linear layer give
    one logit per class. The stages are the layers to hook for CAMs, shallow to
    deep: ``model.stages`` or :meth:`named_stages`.

    Args:
        num_classes (int, optional): Default: 5.
        width (int, optional): channels of stage 1. Default: 16.

    Examples::

        >>> model = SyntheticClassifier(width=4).eval()
        >>> model(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 5])
        >>> list(model.named_stages())
        ['stage1', 'stage2', 'stage3', 'stage4']
    """

    mean: Tensor
    std: Tensor

    def __init__(self, num_classes: int = len(SYNTHETIC_CLASSES), width: int = 16) -> None:
        super().__init__()
        channels = [width * 2**i for i in range(4)]
        self.stages = nn.ModuleList(
            [_stage(3 if i == 0 else channels[i - 1], channels[i], pool=i > 0) for i in range(4)]
        )
        self.head = nn.Linear(channels[-1], num_classes)
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        x = (x - self.mean) / self.std
        for stage in self.stages:
            x = stage(x)
        return self.head(x.mean(dim=(2, 3)))

    def named_stages(self) -> dict[str, nn.Module]:
        """The four stages, shallow to deep, by name (``stage1`` .. ``stage4``)."""
        return {f"stage{i + 1}": stage for i, stage in enumerate(self.stages)}
