"""Real photos with human masks: the index.csv reader, the per-photo scores and their
aggregates, on a tiny set of the format built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captum_shallow.datasets._real_photos import RealPhotoSet, listed_target
from captum_shallow.evaluation import region_extent
from captum_shallow.evaluation._real_photos import RealPhotoScores, score_photo
from captum_shallow.segmentation import ThresholdSweep

HEADER = "name,image,mask,ignore_mask,imagenet_indices,match,dataset,notes\n"


def _photo_set(root: Path) -> Path:
    """Two photos of 6 x 8: 'cat' (object: the left half, an ignore band on column 4)
    and 'car' (object: the top row), the second an approx match from another source."""
    for folder in ("images", "masks", "ignore"):
        (root / folder).mkdir()
    Image.new("RGB", (8, 6), (10, 20, 30)).save(root / "images" / "cat.png")
    Image.new("RGB", (8, 6), (200, 0, 0)).save(root / "images" / "car.png")
    cat = np.zeros((6, 8), np.uint8)
    cat[:, :4] = 255
    band = np.zeros((6, 8), np.uint8)
    band[:, 4] = 255
    car = np.zeros((6, 8), np.uint8)
    car[0] = 255
    Image.fromarray(cat).save(root / "masks" / "cat.png")
    Image.fromarray(band).save(root / "ignore" / "cat.png")
    Image.fromarray(car).save(root / "masks" / "car.png")
    (root / "index.csv").write_text(
        HEADER
        + "cat,images/cat.png,masks/cat.png,ignore/cat.png,281 285,group,pet,\n"
        + 'car,images/car.png,masks/car.png,,817,approx,coco,"a, quoted note"\n'
    )
    return root


def test_the_set_reads_images_masks_ignore_bands_and_labels(tmp_path: Path) -> None:
    photos = RealPhotoSet(_photo_set(tmp_path))
    assert len(photos) == 2
    assert photos.names == ("cat", "car")
    assert photos.classes == ((281, 285), (817,))
    assert photos.matches == ("group", "approx")
    assert photos.datasets == ("pet", "coco")
    cat, car = photos[0], photos[1]
    assert cat.image.dtype == torch.uint8 and cat.image.shape == (3, 6, 8)
    assert cat.image[:, 0, 0].tolist() == [10, 20, 30]
    assert int(cat.mask.sum()) == 24 and bool(cat.mask[:, :4].all())
    assert int(cat.ignore.sum()) == 6 and bool(cat.ignore[:, 4].all())
    assert int(car.ignore.sum()) == 0 and car.mask[0].all() and int(car.mask.sum()) == 8
    only = RealPhotoSet(tmp_path, matches=["exact", "group"])
    assert only.names == ("cat",)
    assert RealPhotoSet(tmp_path, datasets=["coco"]).names == ("car",)
    assert photos.subset([1]).names == ("car",)


def test_bad_rows_are_refused_with_the_row_named(tmp_path: Path) -> None:
    root = _photo_set(tmp_path)
    (root / "index.csv").write_text(HEADER + "x,images/cat.png,masks/cat.png,,1000,exact,a,\n")
    with pytest.raises(ValueError, match=r"line 2 \(x\).*0..999"):
        RealPhotoSet(root)
    (root / "index.csv").write_text(HEADER + "x,images/cat.png,masks/cat.png,,1,maybe,a,\n")
    with pytest.raises(ValueError, match="match must be one of"):
        RealPhotoSet(root)
    (root / "index.csv").write_text(HEADER + "x,../cat.png,masks/cat.png,,1,exact,a,\n")
    with pytest.raises(ValueError, match="outside"):
        RealPhotoSet(root)
    (root / "index.csv").unlink()
    with pytest.raises(FileNotFoundError, match="no index.csv"):
        RealPhotoSet(root)


def test_the_target_is_the_best_scoring_listed_class() -> None:
    logits = torch.tensor([[5.0, 1.0, 3.0, 2.0], [5.0, 1.0, 3.0, 2.0]])
    assert listed_target(logits, [[1, 3], [2]]).tolist() == [3, 2]


def test_scores_of_a_map_covering_half_the_object(tmp_path: Path) -> None:
    photo = RealPhotoSet(_photo_set(tmp_path))[0]
    maps = torch.zeros(2, 1, 6, 8)
    maps[0, 0, :, :2] = 1.0  # half of the object (12 of its 24 pixels)
    maps[0, 0, 0, 4] = 5.0  # the peak, in the ignore band: left out
    maps[1, 0, :, 5:] = 1.0  # all background
    scores = score_photo(maps, photo.mask, photo.ignore, thresholds=[0.0, 0.5])
    assert scores.pointing.tolist() == [1.0, 0.0]
    # the second map peaks at column 5, 2 px from the object: a hit within 15 px
    assert scores.pointing_15.tolist() == [1.0, 1.0]
    assert scores.energy.tolist() == [1.0, 0.0]
    # the map is divided by its maximum (5, in the band): 0.2 > 0.0, not > 0.5
    assert scores.iou[0].tolist() == [0.5, 0.0]
    assert scores.iou[1].tolist() == [0.0, 0.0]
    # 42 pixels scored: background 18, object 24; the first map predicts 12 of them
    assert scores.confusion[0, 0].tolist() == [[18, 0], [12, 12]]
    assert scores.confusion[0, 1].tolist() == [[18, 0], [24, 0]]


def test_confusions_equal_the_threshold_sweep_and_iou_equals_region_extent() -> None:
    generator = torch.Generator().manual_seed(1)
    maps = torch.rand(3, 1, 5, 7, generator=generator) - 0.2
    mask = torch.rand(10, 14, generator=generator) > 0.6
    ignore = torch.rand(10, 14, generator=generator) > 0.85
    scores = score_photo(maps, mask, ignore)
    truth = mask.long().masked_fill(ignore, 255)[None]
    full = torch.nn.functional.interpolate(maps, size=(10, 14), mode="bilinear")
    for i in range(3):
        positive = full[i : i + 1].clamp(min=0)
        sweep = ThresholdSweep(2)
        sweep.update(positive / positive.max(), torch.ones(1, 1, dtype=torch.long), truth)
        assert torch.equal(scores.confusion[i], sweep.confusion())
    kept = region_extent(full, (mask & ~ignore).expand(3, -1, -1), ignore=ignore.expand(3, -1, -1))
    assert torch.allclose(scores.iou, kept.iou)


def test_aggregates_over_photos() -> None:
    thresholds = torch.tensor([0.0, 0.5])
    one = RealPhotoScores(
        thresholds,
        torch.tensor([1.0]),
        torch.tensor([1.0]),
        torch.tensor([0.8]),
        torch.tensor([[0.2, 0.6]]),
        torch.tensor([[[[0, 10], [0, 10]], [[8, 2], [0, 10]]]]),
    )
    two = RealPhotoScores(
        thresholds,
        torch.tensor([0.0]),
        torch.tensor([1.0]),
        torch.tensor([0.4]),
        torch.tensor([[0.4, 0.2]]),
        torch.tensor([[[[0, 10], [0, 0]], [[10, 0], [5, 5]]]]),
    )
    both = RealPhotoScores.cat([one, two])
    assert len(both) == 2
    assert both.pointing_mean == 0.5 and both.pointing_15_mean == 1.0
    assert both.energy_mean == pytest.approx(0.6)
    assert both.iou_curve.tolist() == pytest.approx([0.3, 0.4])
    assert both.best_threshold == 0.5 and both.iou_best == pytest.approx(0.4)
    assert both.iou_at(0.0) == pytest.approx(0.3)
    # pooled at 0.5: [[18, 2], [5, 15]]: background 18 / 25, object 15 / 22
    assert both.miou_at(0.5) == pytest.approx((18 / 25 + 15 / 22) / 2)
    assert both.object_iou_at(0.5) == pytest.approx(15 / 22)
    assert both.select([1]).pointing.tolist() == [0.0]
    assert both.select(torch.tensor([True, False])).energy.tolist() == pytest.approx([0.8])
    with pytest.raises(ValueError, match="not in the sweep"):
        both.iou_at(0.3)
