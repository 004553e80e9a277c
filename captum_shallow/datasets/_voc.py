"""PASCAL VOC 2012 for the WSSS protocol: images, image-level labels, masks.

A thin adapter over :class:`torchvision.datasets.VOCSegmentation` with
``download=False``: nothing is fetched, and a missing folder raises
:class:`FileNotFoundError` that names the path and the expected layout. The
image-level labels are read off the segmentation masks (the classes present in
the mask, background and the 255 "void" border excluded), which is exact for
the 1,464 train / 1,449 val images that have masks. (IRN trains its classifier
on the 10,582 images of "train_aug" with labels from SBD; this adapter covers
the evaluation side, which only needs images with masks.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["VOC_CLASSES", "VOCWeakSegmentation"]

#: Segmentation labels of VOC: 0 is the background, 1..20 the object classes
#: (classifier index ``c`` is segmentation label ``c + 1``); 255 is ignored.
VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

_LAYOUT = (
    "expected <root>/VOCdevkit/VOC2012/ with JPEGImages/, SegmentationClass/ and "
    "ImageSets/Segmentation/<image_set>.txt (the VOCtrainval_11-May-2012.tar layout); "
    "download it yourself, nothing is downloaded here"
)


class VOCWeakSegmentation(Dataset[tuple[Tensor, Tensor, Tensor]]):
    r"""VOC 2012 segmentation images with image-level labels, for WSSS.

    Item ``i`` is ``(image, labels, mask)``:

    - ``image``: ``(3, H, W)`` float RGB in :math:`[0, 1]` (after ``transform``
      when given, e.g. the model's normalisation);
    - ``labels``: ``(20,)`` float multi-hot,
      :math:`l_c = [\exists p: \text{mask}(p) = c + 1]`;
    - ``mask``: ``(H, W)`` long in ``0..20`` or 255.

    With ``size`` the image is resized bilinearly and the mask by nearest
    neighbour, so items can be batched; without it use ``batch_size=1``.

    Args:
        root (str or Path): folder that holds ``VOCdevkit/``.
        image_set (str, optional): ``"train"``, ``"val"`` or ``"trainval"``.
            Default: ``"train"``.
        size (tuple[int, int], optional): ``(H, W)`` to resize to. Default: None.
        transform (Callable, optional): applied to the image tensor. Default: None.

    Raises:
        FileNotFoundError: when the VOC folders or the split file are missing.
        ValueError: for an unknown ``image_set``.

    Examples::

        >>> try:
        ...     VOCWeakSegmentation("/nonexistent")
        ... except FileNotFoundError as error:
        ...     print(str(error)[:34])
        PASCAL VOC 2012 not found: missing
    """

    def __init__(
        self,
        root: str | Path,
        image_set: str = "train",
        *,
        size: tuple[int, int] | None = None,
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        from torchvision.datasets import VOCSegmentation

        if image_set not in ("train", "val", "trainval"):
            raise ValueError(f"image_set must be 'train', 'val' or 'trainval', got {image_set!r}")
        voc = Path(root) / "VOCdevkit" / "VOC2012"
        needed = [
            voc / "JPEGImages",
            voc / "SegmentationClass",
            voc / "ImageSets" / "Segmentation" / f"{image_set}.txt",
        ]
        for path in needed:
            if not path.exists():
                raise FileNotFoundError(f"PASCAL VOC 2012 not found: missing {path}; {_LAYOUT}")
        self.voc = VOCSegmentation(str(root), year="2012", image_set=image_set, download=False)
        self.size = size
        self.transform = transform

    @property
    def classes(self) -> tuple[str, ...]:
        """VOC's 20 object classes (``VOC_CLASSES`` without the background)."""
        return VOC_CLASSES[1:]

    def __len__(self) -> int:
        return len(self.voc)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        picture, target = self.voc[index]
        image = torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.uint8).copy())
        image = image.permute(2, 0, 1).float() / 255
        mask = torch.from_numpy(np.asarray(target, dtype=np.uint8).copy()).long()
        # Labels from the full-resolution annotation, as IRN takes them: a small
        # object that a resize would erase keeps its image-level label.
        present = mask.unique()
        present = present[(present > 0) & (present < len(VOC_CLASSES))]
        labels = torch.zeros(len(VOC_CLASSES) - 1)
        labels[present - 1] = 1.0
        if self.size is not None:
            image = F.interpolate(image[None], self.size, mode="bilinear", align_corners=False)[0]
            mask = F.interpolate(mask[None, None].float(), self.size, mode="nearest")[0, 0].long()
        if self.transform is not None:
            image = self.transform(image)
        return image, labels, mask
