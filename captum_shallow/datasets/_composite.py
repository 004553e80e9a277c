r"""The composite WSSS benchmark: real silhouettes, real photos, a pretrained backbone.

Scenes: one to three objects of distinct classes on a crop of a real photo. The
class of an object is its *silhouette*: scikit-image's horse, three glyphs of
the DejaVu Sans font that ships with matplotlib (an airplane, an anchor and an
ampersand, holes included) and a family of random Fourier blobs (smooth
star-convex shapes). Each object gets a random size, rotation and mirror image
and is textured with a crop of a photo from a pool disjoint from the
backgrounds', drawn independently of the class. Objects may touch and overlap:
each later object may cover at most ``max_occlusion`` of every earlier one's
visible pixels, the last one drawn wins a pixel, and the image-level labels are
read off the final mask. One boolean mask per object paints its texture and
writes its label, so the masks are exact.

The classifier (:class:`CompositeClassifier`) is EfficientNet-Lite0 with its
ImageNet weights (the ``demo`` extra, no download), its last layer replaced by
one logit per class and fine-tuned on the CPU (multi-label, binary cross
entropy) with its stem and first blocks frozen, so its shallow layers keep the
features they learnt on real images. Training and the cache are those of the
shapes set (:func:`~captum_shallow.datasets.load_or_train_classifier`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ._fitting import _train
from ._scenes import SyntheticSplit, _background, _crop, _photo, _skimage_data

__all__ = [
    "COMPOSITE_CLASSES",
    "CompositeClassifier",
    "CompositeConfig",
    "FineTuneConfig",
]

#: Object classes of the composite set; segmentation label of class ``c`` is ``c + 1``.
COMPOSITE_CLASSES: tuple[str, ...] = ("horse", "airplane", "anchor", "ampersand", "blob")

# The glyph of each glyph class in DejaVu Sans (bundled with matplotlib).
_GLYPHS = {"airplane": "\u2708", "anchor": "\u2693", "ampersand": "&"}
# Side of the rasterised silhouette templates (their longer side), in pixels.
_TEMPLATE_SIDE = 256

# Photo pools (scikit-image's wheel), disjoint: backgrounds are mostly grey
# surfaces and scenes, object textures colourful photos. After _photo's 2x
# downscale the smallest is 200 px (coffee), which bounds the image size.
_BACKGROUNDS = ("grass", "gravel", "brick", "moon", "camera", "stereo_motorcycle")
_TEXTURES = ("astronaut", "coffee", "rocket", "immunohistochemistry", "retina")
_MAX_IMAGE_SIZE = 200
# An object must stand out: the mean absolute difference between its texture
# and what it covers (RGB in [0, 1]); the best of a few crops is kept.
_MIN_CONTRAST = 0.15
_TEXTURE_TRIES = 8


@dataclass(frozen=True)
class CompositeConfig:
    """How the composite scenes are drawn.

    Attributes:
        image_size (int): side of the square images, at most 200 (the
            smallest photo's side). Default: 128.
        num_train (int): training images. Default: 8000.
        num_test (int): test images (also the WSSS evaluation set). Default: 500.
        max_objects (int): at most this many objects (of distinct classes); at
            least one. Default: 3.
        min_object_size (int): smallest object, as the longer side of its
            silhouette before rotation, in pixels; at least 8. Default: 44.
        max_object_size (int): largest object, likewise; at most
            ``image_size / sqrt(2)``, so that it fits at any angle. Default: 88.
        max_occlusion (float): the largest share of an object's visible pixels
            that a later object may cover (1.0 lets an object vanish, and it is
            then not labelled). Default: 0.3.
        max_rotation (float): objects turn by an angle drawn uniformly in
            ``[-max_rotation, max_rotation]`` degrees (180: any angle). Objects
            in photos are mostly upright. Default: 30.
        seed (int): seed of the generator. Default: 0.

    Examples::

        >>> CompositeConfig().image_size, CompositeConfig().num_test
        (128, 500)
        >>> CompositeConfig(max_object_size=200)
        Traceback (most recent call last):
        ...
        ValueError: need 8 <= min_object_size <= max_object_size <= image_size / sqrt(2) ...
    """

    image_size: int = 128
    num_train: int = 8000
    num_test: int = 500
    max_objects: int = 3
    min_object_size: int = 44
    max_object_size: int = 88
    max_occlusion: float = 0.3
    max_rotation: float = 30.0
    seed: int = 0

    classes: ClassVar[tuple[str, ...]] = COMPOSITE_CLASSES
    _cache_folder: ClassVar[str] = "composite"
    # Bump when the generator, the model or the training changes (part of the cache key).
    _version: ClassVar[str] = "composite-1"

    def __post_init__(self) -> None:
        if not 1 <= self.max_objects <= len(COMPOSITE_CLASSES):
            raise ValueError(
                f"max_objects must be in 1..{len(COMPOSITE_CLASSES)}, got {self.max_objects}"
            )
        if not 16 <= self.image_size <= _MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be in 16..{_MAX_IMAGE_SIZE}, got {self.image_size}")
        fit = self.image_size / math.sqrt(2)
        if not 8 <= self.min_object_size <= self.max_object_size <= fit:
            raise ValueError(
                "need 8 <= min_object_size <= max_object_size <= image_size / sqrt(2) = "
                f"{fit:.1f}, got {self.min_object_size} and {self.max_object_size}"
            )
        if not 0.0 <= self.max_occlusion <= 1.0:
            raise ValueError(f"max_occlusion must be in [0, 1], got {self.max_occlusion}")
        if not 0.0 <= self.max_rotation <= 180.0:
            raise ValueError(f"max_rotation must be in [0, 180] degrees, got {self.max_rotation}")
        if self.num_train < 1 or self.num_test < 1:
            raise ValueError("num_train and num_test must be positive")

    def _draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        image, mask, _drawn = _scene(self, rng)
        return image, mask

    def _default_training(self) -> FineTuneConfig:
        return FineTuneConfig()


# ------------------------------------------------------------------------ silhouettes


@cache
def _template(name: str) -> np.ndarray:
    """A class's silhouette as a boolean array cropped to its bounding box."""
    if name == "horse":
        shape = ~np.asarray(_skimage_data().horse(), dtype=bool)  # a black horse on white
    else:
        shape = _glyph(_GLYPHS[name])
    rows, cols = np.flatnonzero(shape.any(1)), np.flatnonzero(shape.any(0))
    return shape[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _glyph(char: str) -> np.ndarray:
    """A DejaVu Sans glyph filled by the even-odd rule (its holes stay empty)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    path = TextPath((0, 0), char, size=1, prop=FontProperties(family="DejaVu Sans"))
    low, high = path.vertices.min(0), path.vertices.max(0)
    scale = _TEMPLATE_SIDE / float((high - low).max())
    height, width = (np.ceil((high - low) * scale)).astype(int)[::-1]
    y, x = np.mgrid[0:height, 0:width]
    # Pixel centres, top row first (font coordinates point up).
    points = np.stack([low[0] + (x + 0.5) / scale, high[1] - (y + 0.5) / scale], -1).reshape(-1, 2)
    inside = np.zeros(len(points), dtype=bool)
    for polygon in path.to_polygons():
        from matplotlib.path import Path as PolygonPath

        inside ^= PolygonPath(polygon).contains_points(points)
    return inside.reshape(height, width)


def _silhouette(kind: int, size: int, max_rotation: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of one object of class ``kind``: random angle, mirror image and,
    for blobs, shape; ``size`` is its longer side before rotation. Cropped to its box."""
    angle = math.radians(float(rng.uniform(-max_rotation, max_rotation)))
    mirror = bool(rng.random() < 0.5)
    side = math.ceil(size * math.sqrt(2)) + 1  # holds the shape at any angle
    centre = np.arange(side) + 0.5 - side / 2
    y, x = np.meshgrid(centre, centre, indexing="ij")
    # Inverse rotation: the pixel centre in the shape's own frame.
    u = math.cos(angle) * x + math.sin(angle) * y
    v = -math.sin(angle) * x + math.cos(angle) * y
    if mirror:
        u = -u
    name = COMPOSITE_CLASSES[kind]
    if name == "blob":
        # Star-convex: radius 1 + sum_k a_k cos(k phi + p_k), harmonics 2..5.
        harmonics = np.arange(2, 6)
        amplitude = rng.uniform(0.0, 0.6, size=4) / harmonics
        phase = rng.uniform(0, 2 * math.pi, size=4)
        phi = np.arctan2(v, u)[..., None]
        radius = 1 + (amplitude * np.cos(harmonics * phi + phase)).sum(-1)
        grid = np.linspace(0, 2 * math.pi, 720, endpoint=False)[:, None]
        peak = float((1 + (amplitude * np.cos(harmonics * grid + phase)).sum(-1)).max())
        shape = np.hypot(u, v) <= radius * (size / 2) / peak
    else:
        template = _template(name)
        scale = max(template.shape) / size  # template pixels per image pixel
        row = np.floor(v * scale + template.shape[0] / 2).astype(int)
        col = np.floor(u * scale + template.shape[1] / 2).astype(int)
        valid = (row >= 0) & (row < template.shape[0]) & (col >= 0) & (col < template.shape[1])
        shape = np.zeros_like(valid)
        shape[valid] = template[row[valid], col[valid]]
    rows, cols = np.flatnonzero(shape.any(1)), np.flatnonzero(shape.any(0))
    return shape[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _texture(rng: np.random.Generator, covered: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """The ``(n, 3)`` pixels of a texture crop under ``shape``, the first of a few
    draws that differs from the ``covered`` pixels by ``_MIN_CONTRAST`` (or the most
    different one): an object that cannot be seen cannot be labelled."""
    best, best_contrast = covered, -1.0
    for _ in range(_TEXTURE_TRIES):
        photo = _photo(_TEXTURES[int(rng.integers(len(_TEXTURES)))])
        crop = _crop(rng, photo, max(shape.shape))[: shape.shape[0], : shape.shape[1]]
        pixels = np.clip(crop[shape] * rng.uniform(0.8, 1.25), 0, 1)
        contrast = float(np.abs(pixels - covered).mean())
        if contrast > best_contrast:
            best, best_contrast = pixels, contrast
        if contrast >= _MIN_CONTRAST:
            break
    return best


def _scene(
    config: CompositeConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """One ``(S, S, 3)`` float image, its ``(S, S)`` uint8 mask and the classes drawn."""
    side = config.image_size
    image = _background(rng, _BACKGROUNDS, side)
    mask = np.zeros((side, side), dtype=np.uint8)
    count = int(rng.integers(1, config.max_objects + 1))
    classes = rng.permutation(len(COMPOSITE_CLASSES))[:count]
    drawn: list[int] = []
    for kind in classes:
        size = int(rng.integers(config.min_object_size, config.max_object_size + 1))
        shape = _silhouette(int(kind), size, config.max_rotation, rng)
        height, width = min(shape.shape[0], side), min(shape.shape[1], side)
        shape = shape[:height, :width]
        visible = np.bincount(mask.ravel(), minlength=len(COMPOSITE_CLASSES) + 1)
        for _ in range(30):  # rejection sampling of a place that hides little
            y = int(rng.integers(0, side - height + 1))
            x = int(rng.integers(0, side - width + 1))
            covered = np.bincount(
                mask[y : y + height, x : x + width][shape], minlength=len(visible)
            )
            if (covered[1:] <= config.max_occlusion * visible[1:]).all():
                break
        else:
            continue
        region = image[y : y + height, x : x + width]
        texture = _texture(rng, region[shape], shape)
        region[shape] = texture
        mask[y : y + height, x : x + width][shape] = kind + 1
        drawn.append(int(kind))
    return image, mask, drawn


# ------------------------------------------------------------------------ the classifier


class CompositeClassifier(nn.Module):
    r"""EfficientNet-Lite0 (ImageNet weights) with one logit per composite class.

    Input: ``(N, 3, S, S)`` RGB in :math:`[0, 1]`; the module normalises it with
    ImageNet's mean and standard deviation and runs the backbone, whose last
    layer is replaced by a linear layer with ``num_classes`` outputs
    (multi-label logits). The stem and the first ``frozen_blocks`` MBConv blocks
    are frozen: their weights and batch-norm statistics stay ImageNet's
    (:meth:`train` keeps them in eval mode), so the shallow layers that the
    CAMs read keep real-image features. The stages to hook for CAMs, shallow to
    deep, are the backbone's layer preset
    (:func:`~captum_shallow.models.layer_preset`): :meth:`named_stages`.

    Args:
        num_classes (int, optional): Default: 5.
        frozen_blocks (int, optional): the stem and blocks ``0 .. frozen_blocks -
            1`` are frozen; 0 fine-tunes everything. Default: 3 (through
            ``_blocks.2``, the stride-4 stage).
        pretrained (bool, optional): start from the ImageNet weights (the
            ``demo`` extra); False builds the architecture only, to load a state
            dict into. Default: True.

    Examples::

        >>> model = CompositeClassifier(pretrained=False).eval()
        >>> model(torch.rand(2, 3, 128, 128)).shape
        torch.Size([2, 5])
        >>> list(model.named_stages())  # doctest: +NORMALIZE_WHITESPACE
        ['backbone._blocks.0', 'backbone._blocks.2', 'backbone._blocks.4',
         'backbone._blocks.10', 'backbone._blocks.15']
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        num_classes: int = len(COMPOSITE_CLASSES),
        frozen_blocks: int = 3,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        from ..io._images import IMAGENET_MEAN, IMAGENET_STD
        from ..models import build_model, layer_preset, load_model

        backbone = (
            load_model("efficientnet-lite0") if pretrained else build_model("efficientnet-lite0")
        )
        blocks: nn.ModuleList = backbone._blocks  # type: ignore[assignment]
        if not 0 <= frozen_blocks <= len(blocks):
            raise ValueError(f"frozen_blocks must be in 0..{len(blocks)}, got {frozen_blocks}")
        head: nn.Linear = backbone._fc  # type: ignore[assignment]
        backbone._fc = nn.Linear(head.in_features, num_classes)
        self.backbone = backbone
        self.frozen_blocks = frozen_blocks
        frozen: list[nn.Module] = []
        if frozen_blocks:
            frozen = [backbone._conv_stem, backbone._bn0, *blocks[:frozen_blocks]]  # type: ignore[list-item]
        self._frozen = frozen
        for module in frozen:
            module.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self._stages = tuple(f"backbone.{name}" for name in layer_preset(backbone, 128).layers)

    def forward(self, x: Tensor) -> Tensor:
        # The backbone's own forward, in two parts: the frozen part's output is
        # computed once per training image (FineTuneConfig), the rest is trained.
        return self._tail(self._frozen_features(x))

    def _frozen_features(self, x: Tensor) -> Tensor:
        """Normalise, then the stem and the frozen blocks (if any are frozen)."""
        x = (x - self.mean) / self.std
        if not self.frozen_blocks:
            return x
        return self._blocks(self._stem(x), 0, self.frozen_blocks)

    def _tail(self, x: Tensor) -> Tensor:
        """The trained part: the remaining blocks, the head and the new last layer."""
        net: Any = self.backbone
        if not self.frozen_blocks:
            x = self._stem(x)
        x = self._blocks(x, self.frozen_blocks, len(net._blocks))
        x = net._swish(net._bn1(net._conv_head(x)))
        return net._fc(net._dropout(net._avg_pooling(x).flatten(1)))

    def _stem(self, x: Tensor) -> Tensor:
        net: Any = self.backbone
        return net._swish(net._bn0(net._conv_stem(x)))

    def _blocks(self, x: Tensor, start: int, stop: int) -> Tensor:
        net: Any = self.backbone
        rate = net._global_params.drop_connect_rate or 0.0
        for index in range(start, stop):  # drop-connect grows with depth, as in the backbone
            x = net._blocks[index](x, drop_connect_rate=rate * index / len(net._blocks))
        return x

    def train(self, mode: bool = True) -> CompositeClassifier:
        """Set the training mode, keeping the frozen part in eval mode (ImageNet statistics)."""
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def named_stages(self) -> dict[str, nn.Module]:
        """The preset's stages, shallow to deep, by qualified name in this module
        (``backbone._blocks.0`` .. ``backbone._blocks.15``, strides 2 to 32)."""
        modules = dict(self.named_modules())
        return {name: modules[name] for name in self._stages}


@dataclass(frozen=True)
class FineTuneConfig:
    """How the composite classifier is fine-tuned.

    Attributes:
        frozen_blocks (int): the stem and this many leading MBConv blocks keep
            their ImageNet weights (see :class:`CompositeClassifier`). Default: 3.
        epochs (int): passes over the training set. Default: 2.
        batch_size (int): Default: 64.
        lr (float): peak learning rate of AdamW (one-cycle schedule). Default: 1e-3.
        weight_decay (float): Default: 1e-4.
        seed (int): seed of the new layer's initialisation, the shuffling and
            the augmentation. Default: 0.
        threads (int): torch CPU threads while training (fixed for
            reproducibility). Default: 2.

    Examples::

        >>> FineTuneConfig(epochs=3).frozen_blocks
        3
        >>> FineTuneConfig(frozen_blocks=17)
        Traceback (most recent call last):
        ...
        ValueError: frozen_blocks must be in 0..16, got 17
    """

    frozen_blocks: int = 3
    epochs: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 2

    _data: ClassVar[type] = CompositeConfig

    def __post_init__(self) -> None:
        if not 0 <= self.frozen_blocks <= 16:
            raise ValueError(f"frozen_blocks must be in 0..16, got {self.frozen_blocks}")
        if self.epochs < 1 or self.batch_size < 1 or self.threads < 1:
            raise ValueError("epochs, batch_size and threads must be positive")

    def _build(self, num_classes: int, pretrained: bool) -> CompositeClassifier:
        return CompositeClassifier(num_classes, self.frozen_blocks, pretrained)

    def _fit(self, model: nn.Module, data: SyntheticSplit, verbose: bool) -> None:
        assert isinstance(model, CompositeClassifier)
        # The frozen part is deterministic in eval mode: run it once, not per epoch.
        model.eval()
        with torch.no_grad():
            features = torch.cat([model._frozen_features(x) for x, _, _ in data.batches(128)])
        _train(_Tail(model), features, data.labels, self, verbose, augment=False)


class _Tail(nn.Module):
    """The trained part of a :class:`CompositeClassifier`, as a module of its own."""

    def __init__(self, model: CompositeClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor) -> Tensor:
        return self.model._tail(features)
