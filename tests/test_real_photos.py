"""Real photos with human masks: the index.csv reader, the per-photo scores and their
aggregates, on a tiny set of the format built in tmp_path; multi-scale and flip
inference, which the real photos measure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from captum_shallow import ShallowCAM
from captum_shallow.attribution import IRN_SCALES, multiscale_attribute
from captum_shallow.datasets import SegmentationSet
from captum_shallow.datasets._real_photos import RealPhotoSet, listed_target
from captum_shallow.evaluation import ThresholdSweep, region_extent
from captum_shallow.evaluation._real_photos import RealPhotoScores, score_photo

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
    assert photos.imagenet_indices == ((281, 285), (817,))
    assert isinstance(photos, SegmentationSet)
    assert photos.classes == ("object",)
    assert photos.matches == ("group", "approx")
    assert photos.datasets == ("pet", "coco")
    cat, car = photos.photo(0), photos.photo(1)
    assert cat.imagenet_indices == (281, 285)
    assert car.dataset == "coco"
    assert cat.image.dtype == torch.uint8
    assert cat.image.shape == (3, 6, 8)
    assert cat.image[:, 0, 0].tolist() == [10, 20, 30]
    assert int(cat.mask.sum()) == 24
    assert bool(cat.mask[:, :4].all())
    assert int(cat.ignore.sum()) == 6
    assert bool(cat.ignore[:, 4].all())
    assert int(car.ignore.sum()) == 0
    assert car.mask[0].all()
    assert int(car.mask.sum()) == 8
    only = RealPhotoSet(tmp_path, matches=["exact", "group"])
    assert only.names == ("cat",)
    assert RealPhotoSet(tmp_path, datasets=["coco"]).names == ("car",)
    assert photos.subset([1]).names == ("car",)
    image, labels, mask = photos[0]
    assert image.dtype == torch.float32
    assert image[:, 0, 0].tolist() == pytest.approx([10 / 255, 20 / 255, 30 / 255])
    assert labels.tolist() == [1.0]
    assert mask[0].tolist() == [1, 1, 1, 1, 255, 0, 0, 0]


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
    with pytest.raises(FileNotFoundError, match=r"no index\.csv"):
        RealPhotoSet(root)


def test_the_target_is_the_best_scoring_listed_class() -> None:
    logits = torch.tensor([[5.0, 1.0, 3.0, 2.0], [5.0, 1.0, 3.0, 2.0]])
    assert listed_target(logits, [[1, 3], [2]]).tolist() == [3, 2]


def test_scores_of_a_map_covering_half_the_object(tmp_path: Path) -> None:
    photo = RealPhotoSet(_photo_set(tmp_path)).photo(0)
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
    assert both.pointing_mean == 0.5
    assert both.pointing_15_mean == 1.0
    assert both.energy_mean == pytest.approx(0.6)
    assert both.iou_curve.tolist() == pytest.approx([0.3, 0.4])
    assert both.best_threshold == 0.5
    assert both.iou_best == pytest.approx(0.4)
    assert both.iou_at(0.0) == pytest.approx(0.3)
    # pooled at 0.5: [[18, 2], [5, 15]]: background 18 / 25, object 15 / 22
    assert both.miou_at(0.5) == pytest.approx((18 / 25 + 15 / 22) / 2)
    assert both.object_iou_at(0.5) == pytest.approx(15 / 22)
    assert both.select([1]).pointing.tolist() == [0.0]
    assert both.select(torch.tensor([True, False])).energy.tolist() == pytest.approx([0.8])
    with pytest.raises(ValueError, match="not in the sweep"):
        both.iou_at(0.3)


# ----------------------------------------------------------------------- multi-scale and flips


def _cam() -> ShallowCAM:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()
    return ShallowCAM(model, [model[1], model[3]], truncation=None, propagation=None)


def test_one_scale_without_flips_is_the_plain_attribution() -> None:
    cam = _cam()
    x = torch.rand(2, 3, 12, 16)
    plain = cam.attribute(x, target=1)
    assert torch.equal(cam.attribute(x, target=1, scales=[1.0], flips=False), plain)
    # a map already in [0, 1] with maximum 1 is its own normalisation: flips of one
    # pass average the map with itself when the input is symmetric
    mirror = torch.cat([x[..., :8], x[..., :8].flip(-1)], dim=-1)
    both = cam.attribute(mirror, target=1, scales=[1.0], flips=True)
    alone = cam.attribute(mirror, target=1)
    expected = alone + alone.flip(-1)
    assert torch.allclose(both, expected / expected.amax(dim=(2, 3), keepdim=True), atol=1e-6)


def test_the_flip_of_a_flipped_input_is_the_flip_of_the_map() -> None:
    cam = _cam()
    x = torch.rand(1, 3, 12, 16)
    flipped = cam.attribute(x.flip(-1), target=2, scales=[1.0, 0.5], flips=True)
    straight = cam.attribute(x, target=2, scales=[1.0, 0.5], flips=True)
    assert torch.allclose(flipped, straight.flip(-1), atol=1e-6)


def test_scales_average_the_normalised_maps_of_resized_inputs() -> None:
    cam = _cam()
    x = torch.rand(1, 3, 12, 16)
    half = F.interpolate(x, size=(6, 8), mode="bilinear", antialias=True)
    small = F.interpolate(cam.attribute(half, target=0), size=(12, 16), mode="bilinear")
    small = small / small.amax()
    expected = cam.attribute(x, target=0, output_size=(12, 16)) + small
    expected = expected / expected.amax()
    out = cam.attribute(x, target=0, scales=[1.0, 0.5], output_size=(12, 16))
    assert torch.allclose(out, expected, atol=1e-6)
    fused, layer_maps = cam.attribute(x, target=0, scales=[1.0, 0.5], return_layer_maps=True)
    assert torch.equal(fused, cam.attribute(x, target=0, scales=[1.0, 0.5]))
    plain = cam.attribute(x, target=0, return_layer_maps=True)[1]
    assert all(torch.equal(a, b) for a, b in zip(layer_maps, plain, strict=True))
    with pytest.raises(ValueError, match="positive numbers"):
        cam.attribute(x, target=0, scales=[0.0])


def test_a_shallowcam_can_carry_scales_and_flips() -> None:
    cam = _cam()
    ms = ShallowCAM(
        cam.forward_func,
        cam.layers,
        truncation=None,
        propagation=None,
        scales=IRN_SCALES,
        flips=True,
    )
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(
        ms.attribute(x, target=1), cam.attribute(x, target=1, scales=IRN_SCALES, flips=True)
    )
    assert "scales=(1.0, 0.5, 1.5, 2.0), flips=True" in repr(ms)


def test_averaged_maps_are_detached_so_each_pass_frees_its_graph() -> None:
    # The parameters require grad, so a one-pass map holds its forward graph (as
    # Captum's do); an average over 8 passes would hold 8 of them at once.
    cam = _cam()
    x = torch.rand(2, 3, 12, 16)
    assert cam.attribute(x, target=1).grad_fn is not None
    fused, layer_maps = cam.attribute(
        x, target=1, scales=IRN_SCALES, flips=True, return_layer_maps=True
    )
    assert fused.grad_fn is None
    assert all(m.grad_fn is None for m in layer_maps)
    # multiscale_attribute keeps what its function returns: differentiable if asked.
    kept = multiscale_attribute(lambda b: cam.attribute(b, target=1), x, [1.0, 0.5], flips=False)
    assert kept.grad_fn is not None
    torch.testing.assert_close(kept.detach(), cam.attribute(x, target=1, scales=[1.0, 0.5]))
