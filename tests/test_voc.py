"""VOC adapter end to end on a tiny VOC-format folder written by the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader

from captum_shallow.datasets import VOC_CLASSES, VOCWeakSegmentation
from captum_shallow.evaluation import evaluate_cams

# A flat colour per segmentation label present in the fixture (JPEG keeps flat areas).
_COLOURS = {0: (0, 0, 0), 8: (250, 20, 20), 12: (20, 250, 20), 15: (20, 20, 250)}


def _write_voc(root: Path) -> dict[str, np.ndarray]:
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    masks = {}
    a = np.zeros((24, 32), dtype=np.uint8)
    a[4:14, 4:16] = 8  # cat
    a[12:22, 18:30] = 15  # person
    a[3, 4:16] = 255  # void border
    b = np.zeros((24, 32), dtype=np.uint8)
    b[6:20, 8:26] = 12  # dog
    masks["2007_000001"], masks["2007_000002"] = a, b
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[255] = (224, 224, 192)
    for label, colour in _COLOURS.items():
        palette[label] = colour
    for name, mask in masks.items():
        rgb = np.zeros((*mask.shape, 3), dtype=np.uint8)
        for label, colour in _COLOURS.items():
            rgb[mask == label] = colour
        Image.fromarray(rgb).save(voc / "JPEGImages" / f"{name}.jpg", quality=100)
        png = Image.fromarray(mask, mode="P")
        png.putpalette(palette.flatten().tolist())
        png.save(voc / "SegmentationClass" / f"{name}.png")
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(masks) + "\n")
    return masks


def _colour_cam(images: Tensor, target: Tensor) -> Tensor:
    """Closeness of each pixel to the target class's flat colour."""
    colours = torch.tensor([_COLOURS.get(int(c) + 1, (128, 128, 128)) for c in target]) / 255
    distance = (images - colours[:, :, None, None].to(images)).abs().amax(dim=1, keepdim=True)
    return (1 - distance).clamp(min=0) ** 4


def test_voc_items_labels_from_masks(tmp_path: Path) -> None:
    masks = _write_voc(tmp_path)
    data = VOCWeakSegmentation(tmp_path, "train")
    assert len(data) == 2
    image, labels, mask = data[0]
    assert image.shape == (3, 24, 32)
    assert image.min() >= 0.0
    assert image.max() <= 1.0
    assert torch.equal(mask, torch.from_numpy(masks["2007_000001"]).long())
    assert labels.nonzero().flatten().tolist() == [7, 14]  # cat, person (0-based)
    assert [VOC_CLASSES[i + 1] for i in labels.nonzero().flatten()] == ["cat", "person"]
    assert data[1][1].nonzero().flatten().tolist() == [11]  # dog


def test_voc_resize_and_transform(tmp_path: Path) -> None:
    _write_voc(tmp_path)
    data = VOCWeakSegmentation(tmp_path, size=(12, 16), transform=lambda x: x * 2)
    image, _, mask = data[1]
    assert image.shape == (3, 12, 16)
    assert mask.shape == (12, 16)
    assert set(mask.unique().tolist()) == {0, 12}
    assert image.max() > 1.0  # the transform ran


def test_voc_end_to_end_miou(tmp_path: Path) -> None:
    _write_voc(tmp_path)
    loader = DataLoader(VOCWeakSegmentation(tmp_path), batch_size=2)
    result = evaluate_cams(_colour_cam, loader, len(VOC_CLASSES))
    assert result.iou.shape == (96, 21)
    # Classes absent from the fixture are NaN and left out of the mean.
    assert torch.isnan(result.iou[:, 1]).all()
    assert result.best_miou > 0.95
    assert result.miou_at(0.15) > 0.95


def test_voc_missing_data_says_where(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"VOCdevkit.VOC2012.JPEGImages"):
        VOCWeakSegmentation(tmp_path)
    _write_voc(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"val\.txt"):
        VOCWeakSegmentation(tmp_path, "val")
    with pytest.raises(ValueError, match="image_set"):
        VOCWeakSegmentation(tmp_path, "test")


def test_voc_labels_come_from_the_full_resolution_mask(tmp_path: Path) -> None:
    _write_voc(tmp_path)
    # Shrunk 8x with nearest neighbours, image 2's dog survives but a one-pixel
    # object would not; its label must, as in IRN.
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    mask = np.array(Image.open(voc / "SegmentationClass" / "2007_000002.png"))
    mask[1, 1] = 15  # a one-pixel person
    png = Image.fromarray(mask, mode="P")
    png.putpalette(Image.open(voc / "SegmentationClass" / "2007_000001.png").getpalette())
    png.save(voc / "SegmentationClass" / "2007_000002.png")
    _, labels, small = VOCWeakSegmentation(tmp_path, size=(3, 4))[1]
    assert not (small == 15).any()
    assert labels.nonzero().flatten().tolist() == [11, 14]  # dog, person
