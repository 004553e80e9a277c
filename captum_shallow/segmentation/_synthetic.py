r"""Synthetic WSSS benchmarks with exact masks that run offline on a CPU.

This module holds the ``shapes`` set and what both sets share: the split, the
training loop, the metrics and the cache. The ``composite`` set (real
silhouettes, a pretrained EfficientNet-Lite0) is in ``_composite``; each set's
configuration classes say how to draw a scene and build a classifier, so
:func:`make_synthetic_split` and :func:`load_or_train_classifier` serve both.

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

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._atomic import atomic_write

if TYPE_CHECKING:
    from ._composite import CompositeClassifier, CompositeConfig, FineTuneConfig

__all__ = [
    "SYNTHETIC_CLASSES",
    "SyntheticClassifier",
    "SyntheticConfig",
    "SyntheticSplit",
    "TrainConfig",
    "TrainedClassifier",
    "default_cache_dir",
    "load_or_train_classifier",
    "make_synthetic_split",
    "multilabel_metrics",
]

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


# ------------------------------------------------------------------------ the scenes


def _skimage_data() -> Any:
    """``skimage.data``, or an error that names the extra to install."""
    try:
        import skimage.data
    except ImportError as error:
        from ..models._errors import MissingDependencyError

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


@dataclass(frozen=True)
class SyntheticSplit:
    """A split of a synthetic set (shapes or composite), as tensors.

    Attributes:
        images (Tensor): ``(N, 3, S, S)`` float RGB in :math:`[0, 1]`.
        labels (Tensor): ``(N, K)`` float multi-hot image-level labels.
        masks (Tensor): ``(N, S, S)`` long, 0 background, ``c + 1`` for class ``c``.

    Examples::

        >>> split = make_synthetic_split(SyntheticConfig(image_size=32, num_test=5,
        ...     min_object_size=8, max_object_size=14), "test")
        >>> len(split), [len(images) for images, _, _ in split.batches(2)]
        (5, [2, 2, 1])
    """

    images: Tensor
    labels: Tensor
    masks: Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def batches(self, batch_size: int = 32) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """``(images, labels, masks)`` in order, for :func:`evaluate_cams`."""
        for start in range(0, len(self), batch_size):
            end = start + batch_size
            yield self.images[start:end], self.labels[start:end], self.masks[start:end]


def make_synthetic_split(config: SyntheticConfig | CompositeConfig, split: str) -> SyntheticSplit:
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
    return SyntheticSplit(image_tensor, present[:, 1:].float(), mask_tensor)


# ------------------------------------------------------------------------ the classifier


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


# ------------------------------------------------------------------------ training


@torch.no_grad()
def multilabel_metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    r"""mAP and accuracies of multi-label logits.

    - ``mAP``: mean over classes of the average precision
      :math:`AP_c = \frac{1}{|P_c|} \sum_{k: y_k = 1} \mathrm{precision@}k`
      (samples ranked by decreasing score, ties in index order; the same value
      as scikit-learn's ``average_precision_score`` without ties);
    - ``label_accuracy``: share of (sample, class) decisions
      :math:`[z > 0] = y` that are right;
    - ``exact_match``: share of samples whose whole label set is right.

    Args:
        logits (Tensor): ``(N, K)`` scores.
        labels (Tensor): ``(N, K)`` multi-hot targets.

    Returns:
        dict[str, float]: ``mAP``, ``label_accuracy`` and ``exact_match``.

    Examples::

        >>> m = multilabel_metrics(torch.tensor([[2.0, -1.0], [1.0, 3.0], [-1.0, 0.5]]),
        ...                        torch.tensor([[1, 0], [0, 1], [0, 1]]))
        >>> round(m["mAP"], 4), round(m["label_accuracy"], 4), round(m["exact_match"], 4)
        (1.0, 0.8333, 0.6667)
    """
    if logits.shape != labels.shape or logits.dim() != 2:
        raise ValueError("logits and labels must both be (N, K)")
    truth = labels.bool()
    order = torch.argsort(logits, dim=0, descending=True, stable=True)
    hits = truth.gather(0, order).double()
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)[:, None]
    positives = hits.sum(0)
    ap = (precision * hits).sum(0) / positives
    decisions = (logits > 0) == truth
    return {
        "mAP": float(ap[positives > 0].mean()),
        "label_accuracy": float(decisions.double().mean()),
        "exact_match": float(decisions.all(dim=1).double().mean()),
    }


@contextlib.contextmanager
def _deterministic(threads: int) -> Iterator[None]:
    """Fixed thread count and deterministic kernels, restored on exit."""
    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic, warn_only=old_warn)


def _train(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    config: TrainConfig | FineTuneConfig,
    verbose: bool,
    augment: bool,
) -> None:
    """Multi-label training of ``model``'s parameters that require a gradient.

    ``inputs`` are images, turned and flipped at random when ``augment``, or
    features that a frozen part of the network computed once.
    """
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = math.ceil(len(inputs) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch
    )
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(inputs), generator=generator)
        total = 0.0
        for start in range(0, len(inputs), config.batch_size):
            index = order[start : start + config.batch_size]
            batch = inputs[index]
            if augment:  # flips and 90-degree turns keep the classes
                flip = torch.rand(len(index), generator=generator) < 0.5
                batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
                turns = int(torch.randint(4, (1,), generator=generator))
                batch = torch.rot90(batch, turns, dims=(2, 3))
            loss = loss_fn(model(batch), labels[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(index)
        if verbose:
            print(f"  epoch {epoch + 1:3d}/{config.epochs}  loss {total / len(inputs):.4f}")
    model.eval()


@dataclass(frozen=True)
class TrainedClassifier:
    """A trained synthetic classifier with its test metrics.

    Attributes:
        model (SyntheticClassifier or CompositeClassifier): in eval mode, on the CPU.
        metrics (dict[str, float]): test ``mAP``, ``label_accuracy``,
            ``exact_match``, and ``train_seconds`` (of the run that made the
            cache entry).
        path (Path): the cache file.
        cached (bool): True when loaded from the cache without training.
        config (SyntheticConfig or CompositeConfig): the data configuration.
        train_config (TrainConfig or FineTuneConfig): the training configuration.

    :func:`load_or_train_classifier` returns one; its example shows it in use.
    """

    model: SyntheticClassifier | CompositeClassifier
    metrics: dict[str, float]
    path: Path
    cached: bool
    config: SyntheticConfig | CompositeConfig = field(default_factory=SyntheticConfig)
    train_config: TrainConfig | FineTuneConfig = field(default_factory=TrainConfig)


def _cache_key(
    config: SyntheticConfig | CompositeConfig, train_config: TrainConfig | FineTuneConfig
) -> str:
    blob = json.dumps(
        {"version": config._version, "data": asdict(config), "train": asdict(train_config)},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$CAPTUM_SHALLOW_CACHE`` or ``~/.cache/captum_shallow``.

    Returns:
        Path: The folder under which :func:`load_or_train_classifier` caches.

    Examples::

        >>> folder = default_cache_dir()   # nothing is created until a classifier is cached
        >>> isinstance(folder, Path)
        True
    """
    return Path(os.environ.get("CAPTUM_SHALLOW_CACHE", Path.home() / ".cache" / "captum_shallow"))


def load_or_train_classifier(
    config: SyntheticConfig | CompositeConfig | None = None,
    train_config: TrainConfig | FineTuneConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    retrain: bool = False,
    verbose: bool = False,
) -> TrainedClassifier:
    r"""A synthetic benchmark's classifier: from the cache, or trained now.

    The set follows the configurations: :class:`SyntheticConfig` with
    :class:`TrainConfig` trains the shapes set's :class:`SyntheticClassifier`
    from scratch; :class:`CompositeConfig` with :class:`FineTuneConfig`
    fine-tunes the composite set's :class:`CompositeClassifier`. The cache file
    is ``<cache_dir>/<set>/classifier-<key>.pt`` (``<set>`` is ``synthetic`` or
    ``composite``) where the key hashes both configurations and the code
    version. Training is seeded and runs with
    ``torch.use_deterministic_algorithms`` and a fixed thread count (both
    restored afterwards; the global RNG state is untouched); the test split is
    then scored with :func:`multilabel_metrics`.

    Args:
        config (SyntheticConfig or CompositeConfig, optional): data.
            Default: ``SyntheticConfig()``.
        train_config (TrainConfig or FineTuneConfig, optional): training; it
            must fit the data's set. Default: ``TrainConfig()`` for the shapes
            set, ``FineTuneConfig()`` for the composite set.
        cache_dir (str or Path, optional): Default: ``$CAPTUM_SHALLOW_CACHE`` or
            ``~/.cache/captum_shallow``.
        retrain (bool, optional): ignore an existing cache entry. Default: False.
        verbose (bool, optional): print the loss per epoch. Default: False.

    Returns:
        TrainedClassifier: model (eval mode, CPU), test metrics, cache path.

    Raises:
        TypeError: when ``train_config`` does not fit the set of ``config``.

    Examples::

        >>> import tempfile
        >>> tiny = SyntheticConfig(image_size=32, num_train=64, num_test=32,
        ...                        min_object_size=8, max_object_size=14)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     first = load_or_train_classifier(tiny, TrainConfig(width=4, epochs=1),
        ...                                      cache_dir=folder)
        ...     again = load_or_train_classifier(tiny, TrainConfig(width=4, epochs=1),
        ...                                      cache_dir=folder)
        >>> first.cached, again.cached, again.metrics == first.metrics
        (False, True, True)
    """
    config = SyntheticConfig() if config is None else config
    train_config = config._default_training() if train_config is None else train_config
    if not isinstance(config, getattr(train_config, "_data", ())):
        raise TypeError(
            f"{type(config).__name__} and {type(train_config).__name__} do not go together: "
            "SyntheticConfig takes a TrainConfig, CompositeConfig a FineTuneConfig"
        )
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _cache_key(config, train_config)
    path = folder / config._cache_folder / f"classifier-{key}.pt"
    num_classes = len(config.classes)
    if path.exists() and not retrain:
        with torch.random.fork_rng(devices=[]):  # construction draws initial weights
            model = train_config._build(num_classes, pretrained=False)
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["state_dict"])
        return TrainedClassifier(
            model.eval(), dict(saved["metrics"]), path, True, config, train_config
        )
    with _deterministic(train_config.threads):
        torch.manual_seed(train_config.seed)
        model = train_config._build(num_classes, pretrained=True)
        train = make_synthetic_split(config, "train")
        start = time.perf_counter()
        train_config._fit(model, train, verbose)
        seconds = time.perf_counter() - start
        model.eval()
        test = make_synthetic_split(config, "test")
        with torch.no_grad():
            logits = torch.cat([model(x) for x, _, _ in test.batches(256)])
    metrics = multilabel_metrics(logits, test.labels)
    metrics["train_seconds"] = seconds
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as stream:  # a concurrent reader never sees half a file
        torch.save({"state_dict": model.state_dict(), "metrics": metrics}, stream)
    return TrainedClassifier(model, metrics, path, False, config, train_config)
