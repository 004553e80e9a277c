"""Faithfulness and localisation metrics: hand-computed values and oracles."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torch import Tensor, nn

from captum_shallow.evaluation import (
    average_drop_increase,
    boxes_to_masks,
    deletion_insertion,
    energy_pointing_game,
    grid_extent,
    grid_pointing_game,
    make_grid_cases,
    pointing_game,
    region_extent,
)


def _tiny_model(classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, classes),
    )
    return model.eval()


class _FixedCAM:
    """The smallest object torchcam's metrics accept: returns given CAMs."""

    def __init__(self, model: nn.Module, cams: Tensor) -> None:
        self.model = model
        self.cams = cams

    def __call__(self, class_idx: Any = None, scores: Any = None, **kwargs: Any) -> list[Tensor]:
        return [self.cams.clone()]

    def fuse_cams(self, cams: list[Tensor]) -> Tensor:
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self) -> Iterator[None]:
        yield


# ----------------------------------------------------------------------- deletion / insertion


def test_deletion_insertion_hand_computed_curve() -> None:
    # The model's "probability" is the mean of channel 0 over the top-left pixel only,
    # so deleting that pixel first drops the score to the substrate at once.
    class TopLeft(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            v = x[:, 0, 0, 0]
            return torch.stack([v, 1 - v], dim=1)

    images = torch.ones(1, 3, 2, 2)
    maps = torch.tensor([[[[1.0, 0.5], [0.2, 0.1]]]])
    out = deletion_insertion(
        TopLeft(), images, maps, 0, steps=4, substrate="zeros", probability="logits"
    )
    assert out.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert out.deletion.tolist() == [[1.0, 0.0, 0.0, 0.0, 0.0]]
    assert out.insertion.tolist() == [[0.0, 1.0, 1.0, 1.0, 1.0]]
    assert out.deletion_auc.item() == pytest.approx(0.125)
    assert out.insertion_auc.item() == pytest.approx(0.875)
    # The reversed ranking finds the pixel last.
    rev = deletion_insertion(
        TopLeft(), images, -maps, 0, steps=4, substrate="zeros", probability="logits"
    )
    assert rev.deletion_auc.item() == pytest.approx(0.875)
    assert rev.insertion_auc.item() == pytest.approx(0.125)


def test_deletion_insertion_breaks_ties_by_pixel_index() -> None:
    class Pixel(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return torch.stack([x[:, 0, 0, 1], x[:, 0, 1, 0]], dim=1)

    out = deletion_insertion(
        Pixel(),
        torch.ones(1, 3, 2, 2),
        torch.ones(1, 1, 2, 2),
        0,
        steps=4,
        substrate="zeros",
        probability="logits",
    )
    # Constant map: pixels go in row-major order, (0, 1) is the second one.
    assert out.deletion.tolist() == [[1.0, 1.0, 0.0, 0.0, 0.0]]


def test_deletion_insertion_batch_equals_single_and_chunking() -> None:
    model = _tiny_model()
    torch.manual_seed(1)
    images, maps = torch.rand(3, 3, 8, 8), torch.rand(3, 1, 4, 4)
    target = torch.tensor([0, 2, 3])
    full = deletion_insertion(model, images, maps, target, steps=8, batch_size=5)
    for i in range(3):
        one = deletion_insertion(
            model, images[i : i + 1], maps[i : i + 1], target[i : i + 1], steps=8, batch_size=64
        )
        torch.testing.assert_close(one.deletion[0], full.deletion[i])
        torch.testing.assert_close(one.insertion_auc[0], full.insertion_auc[i])


@pytest.mark.parametrize("substrate", ["zeros", "blur"])
def test_deletion_insertion_matches_torchcam(substrate: str) -> None:
    from torchcam import metrics

    model = _tiny_model()
    torch.manual_seed(2)
    images, cams = torch.rand(3, 3, 8, 8), torch.rand(3, 4, 4)
    cams[0, 0] = cams[0, 1]  # a tie
    baseline = (
        None
        if substrate == "zeros"
        else partial(TF.gaussian_blur, kernel_size=[11, 11], sigma=[5.0, 5.0])
    )
    oracle = metrics.DeletionInsertionMetric(
        _FixedCAM(model, cams), partial(torch.softmax, dim=-1), steps=16, baseline=baseline
    )
    target = [1, 0, 3]
    ours = deletion_insertion(
        model, images, cams[:, None], torch.tensor(target), steps=16, substrate=substrate
    )  # type: ignore[arg-type]
    for i in range(3):  # torchcam accumulates means; compare sample by sample
        oracle.reset()
        oracle.cam_extractor.cams = cams[i : i + 1]
        oracle.update(images[i : i + 1], class_idx=[target[i]])
        summary = oracle.summary()
        assert ours.deletion_auc[i].item() == pytest.approx(summary["deletion_auc"], abs=1e-6)
        assert ours.insertion_auc[i].item() == pytest.approx(summary["insertion_auc"], abs=1e-6)


def test_deletion_insertion_rejects_bad_input() -> None:
    model = _tiny_model()
    images = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match="maps has 1 samples"):
        deletion_insertion(model, images, torch.rand(1, 1, 4, 4), 0)
    with pytest.raises(ValueError, match=r"\(N, 1, h, w\)"):
        deletion_insertion(model, images, torch.rand(2, 4, 4), 0)
    with pytest.raises(ValueError, match="target out of range"):
        deletion_insertion(model, images, torch.rand(2, 1, 4, 4), 7, steps=2)
    with pytest.raises(ValueError, match="substrate"):
        deletion_insertion(model, images, torch.rand(2, 1, 4, 4), 0, substrate="noise", steps=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        deletion_insertion(model, images, torch.rand(2, 1, 4, 4), 0, steps=17)
    with pytest.raises(ValueError, match="target has 3 entries"):
        deletion_insertion(model, images, torch.rand(2, 1, 4, 4), torch.tensor([0, 1, 2]), steps=2)


# ------------------------------------------------------------- average drop / increase


def test_average_drop_hand_computed() -> None:
    class Mean(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([m, 2 * m], dim=1)

    images = torch.ones(2, 3, 2, 2)
    maps = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    out = average_drop_increase(Mean(), images, maps, 0, normalize=False, probability="logits")
    assert out.drop.tolist() == [0.5, 0.0]
    assert out.increase.tolist() == [False, False]
    assert out.average_drop == pytest.approx(0.25)
    assert out.increase_in_confidence == 0.0


def test_average_drop_matches_torchcam() -> None:
    from torchcam import metrics

    model = _tiny_model()
    torch.manual_seed(3)
    images, cams = torch.rand(4, 3, 8, 8), torch.rand(4, 4, 4)
    # torchcam's extractors hand out min-max normalised CAMs; the metric uses them as is.
    low = cams.amin(dim=(1, 2), keepdim=True)
    cams = (cams - low) / ((cams - low).amax(dim=(1, 2), keepdim=True) + 1e-8)
    target = [0, 1, 2, 3]
    oracle = metrics.ClassificationMetric(_FixedCAM(model, cams), partial(torch.softmax, dim=-1))
    ours = average_drop_increase(model, images, cams[:, None], torch.tensor(target))
    for i in range(4):
        oracle.reset()
        oracle.cam_extractor.cams = cams[i : i + 1]
        oracle.update(images[i : i + 1], class_idx=[target[i]])
        summary = oracle.summary()
        assert ours.drop[i].item() == pytest.approx(summary["avg_drop"], abs=1e-5)
        assert float(ours.increase[i]) == summary["conf_increase"]


def test_average_drop_relation_to_pytorch_grad_cam() -> None:
    from pytorch_grad_cam.metrics import cam_mult_image as pgc
    from pytorch_grad_cam.utils import model_targets as targets_mod

    model = _tiny_model()
    torch.manual_seed(4)
    images = torch.rand(4, 3, 8, 8)
    cams = torch.rand(4, 8, 8)
    cams = (cams - cams.amin(dim=(1, 2), keepdim=True)) / (
        cams.amax(dim=(1, 2), keepdim=True) - cams.amin(dim=(1, 2), keepdim=True)
    )
    target = [3, 1, 0, 2]
    targets = [targets_mod.ClassifierOutputSoftmaxTarget(t) for t in target]
    their_drop = pgc.DropInConfidence()(images, cams.numpy(), targets, model)
    their_increase = pgc.IncreaseInConfidence()(images, cams.numpy(), targets, model)
    ours = average_drop_increase(model, images, cams[:, None], torch.tensor(target))
    # Theirs is not divided by the original score: theirs = drop * score.
    np.testing.assert_allclose((ours.drop * ours.score).numpy(), their_drop, atol=1e-6)
    np.testing.assert_array_equal(ours.increase.float().numpy(), their_increase)


# ------------------------------------------------------------------------- localisation


def test_pointing_game_tolerance_and_ties() -> None:
    maps = torch.zeros(2, 1, 20, 20)
    maps[0, 0, 0, 0] = 1.0
    maps[1, 0, 0, 0] = 1.0
    maps[1, 0, 19, 19] = 1.0  # tie: the first (row-major) maximum counts
    masks = torch.zeros(2, 20, 20, dtype=torch.bool)
    masks[:, 10:, 10:] = True
    # Distance from (0, 0) to the mask is sqrt(200) ~ 14.14.
    assert pointing_game(maps, masks, tolerance=15).tolist() == [1.0, 1.0]
    assert pointing_game(maps, masks, tolerance=14).tolist() == [0.0, 0.0]
    empty = torch.zeros_like(masks)
    assert all(math.isnan(v) for v in pointing_game(maps, empty).tolist())


def test_pointing_game_with_boxes_and_upsampling() -> None:
    maps = torch.zeros(1, 1, 4, 4)
    maps[0, 0, 3, 0] = 1.0  # bottom-left quarter after upsampling to 16 x 16
    box = boxes_to_masks(torch.tensor([[0, 12, 4, 16]]), (16, 16))
    assert pointing_game(maps, box, tolerance=0).tolist() == [1.0]
    box_far = boxes_to_masks(torch.tensor([[12, 0, 16, 4]]), (16, 16))
    assert pointing_game(maps, box_far, tolerance=0).tolist() == [0.0]


@pytest.mark.needs_extra("quantus")
def test_pointing_game_matches_quantus_without_ties() -> None:
    import quantus

    torch.manual_seed(5)
    maps = torch.rand(16, 1, 12, 12)
    masks = torch.rand(16, 12, 12) > 0.6
    ours = pointing_game(maps, masks, tolerance=0)
    theirs = quantus.PointingGame(disable_warnings=True).evaluate_batch(
        a_batch=maps.numpy(), s_batch=masks[:, None].numpy()
    )
    np.testing.assert_array_equal(ours.numpy(), np.asarray(theirs, dtype=np.float32))


def test_energy_pointing_game_exact_object_and_half() -> None:
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True
    maps = torch.stack([masks[0].float(), torch.ones(8, 8)])[:, None]
    assert energy_pointing_game(maps, masks).tolist() == [1.0, 0.25]
    # Negative values do not count, a map without positive mass scores 0.
    signed = maps.clone()
    signed[0, 0, 0, 0] = -5.0
    assert energy_pointing_game(signed, masks)[0].item() == 1.0
    assert energy_pointing_game(-maps, masks).tolist() == [0.0, 0.0]


@pytest.mark.needs_extra("quantus")
def test_energy_pointing_game_matches_quantus() -> None:
    import quantus

    torch.manual_seed(6)
    maps = torch.randn(8, 1, 10, 10)
    masks = torch.rand(8, 10, 10) > 0.5
    ours = energy_pointing_game(maps, masks)
    metric = quantus.AttributionLocalisation(
        disable_warnings=True, abs=False, normalise=False, positive_attributions=True
    )
    theirs = metric.evaluate_batch(
        x_batch=torch.zeros(8, 3, 10, 10).numpy(),
        a_batch=maps.numpy(),
        s_batch=masks[:, None].numpy(),
    )
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), rtol=1e-5)


def test_grid_pointing_game_values() -> None:
    maps = torch.zeros(3, 1, 6, 6)
    maps[0, 0, 3:, :3] = 1.0  # bottom-left cell (index 2)
    maps[1] = 1.0  # uniform: chance
    maps[2, 0, 0, 0] = 2.0
    maps[2, 0, 5, 5] = 2.0
    cells = torch.tensor([2, 3, 0])
    assert grid_pointing_game(maps, cells).tolist() == [1.0, 0.25, 0.5]
    low = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])
    # Bilinear (align_corners=False) spreads the cell's value: in each axis 7/8 of the
    # mass stays on its side of the middle.
    score = grid_pointing_game(low, torch.tensor([1]), size=(64, 64)).item()
    assert score == pytest.approx((7 / 8) ** 2)
    assert grid_pointing_game(torch.ones(1, 1, 9, 9), torch.tensor([4]), grid=3).item() == (
        pytest.approx(1 / 9)
    )
    with pytest.raises(ValueError, match="cells must lie"):
        grid_pointing_game(maps, torch.tensor([0, 1, 4]))


def test_make_grid_cases_builds_all_arrangements() -> None:
    tiles = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 5, 5)
    labels = torch.tensor([7, 8, 9, 6])
    cases = make_grid_cases(tiles, labels)
    assert cases.images.shape == (24, 3, 10, 10)
    assert cases.target.shape == (96,)
    # The target's tile really is in the target's cell, for every case.
    row, col = cases.cell // 2, cases.cell % 2
    values = cases.images[cases.image, 0, row * 5 + 2, col * 5 + 2].long()
    assert torch.equal(labels[values], cases.target)
    # Every tile appears in every cell equally often.
    assert torch.equal(torch.bincount(cases.tiles[:, 3]), torch.full((4,), 6))
    # A perfect map for each case scores 1.
    maps = torch.zeros(96, 1, 10, 10)
    for r in range(2):
        for c in range(2):
            sel = cases.cell == r * 2 + c
            maps[sel, :, r * 5 : r * 5 + 5, c * 5 : c * 5 + 5] = 1.0
    assert grid_pointing_game(maps, cases.cell).min().item() == 1.0
    with pytest.raises(ValueError, match="distinct"):
        make_grid_cases(tiles, torch.tensor([1, 1, 2, 3]))


def _reference_extent(maps: Tensor, masks: Tensor, thresholds: list[float]) -> tuple[Any, Any]:
    ious, covers = [], []
    for m, r in zip(maps[:, 0].double(), masks, strict=True):
        m = m.clamp(min=0)
        m = m / m.max() if m.max() > 0 else m
        row_iou, row_cov = [], []
        for t in thresholds:
            above = m > t
            inter = (above & r).sum().item()
            union = (above | r).sum().item()
            row_iou.append(inter / union if union else 0.0)
            row_cov.append(inter / r.sum().item())
        ious.append(row_iou)
        covers.append(row_cov)
    return np.array(ious), np.array(covers)


def test_region_extent_equals_a_direct_count() -> None:
    generator = torch.Generator().manual_seed(3)
    maps = torch.randn(5, 1, 6, 6, generator=generator)
    maps[2] = -1.0  # no positive mass: covers nothing
    masks = torch.rand(5, 6, 6, generator=generator) > 0.6
    thresholds = [0.0, 0.1, 0.35, 0.5, 0.9]
    extent = region_extent(maps, masks, thresholds)
    iou, coverage = _reference_extent(maps, masks, thresholds)
    np.testing.assert_allclose(extent.iou.numpy(), iou, atol=1e-12)
    np.testing.assert_allclose(extent.coverage.numpy(), coverage, atol=1e-12)
    assert extent.iou[2].abs().sum().item() == 0.0
    assert extent.best_iou == pytest.approx(float(iou.mean(axis=0).max()))
    assert extent.iou_at(0.5) == pytest.approx(float(iou[:, 3].mean()))
    with pytest.raises(ValueError, match="not in the sweep"):
        extent.iou_at(0.2)


def test_grid_extent_cannot_be_won_by_collapsing_to_a_point() -> None:
    # Target: the top-left cell of an 8 x 8 image. A map filling the cell and a map
    # with one hot pixel in it both put all their mass in the cell (pointing 1.0),
    # but only the first shows the cell's extent.
    cells = torch.tensor([0, 0])
    maps = torch.zeros(2, 1, 8, 8)
    maps[0, 0, :4, :4] = 1.0
    maps[1, 0, 1, 1] = 1.0
    assert grid_pointing_game(maps, cells).tolist() == [1.0, 1.0]
    extent = grid_extent(maps, cells)
    assert extent.iou[:, 0].tolist() == [1.0, 1.0 / 16]
    assert extent.coverage[:, 50].tolist() == [1.0, 1.0 / 16]


def test_best_extent_is_invariant_to_monotone_sharpening_but_pointing_is_not() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(8, 1, 8, 8, generator=generator)
    maps[:, :, :4, :4] += 1.0  # more evidence in the target cell
    cells = torch.zeros(8, dtype=torch.long)
    squared = maps**2
    assert grid_pointing_game(squared, cells).mean() > grid_pointing_game(maps, cells).mean()
    thresholds = [round(0.001 * i, 3) for i in range(1000)]
    plain = grid_extent(maps, cells, thresholds=thresholds)
    sharp = grid_extent(squared, cells, thresholds=thresholds)
    assert sharp.best_iou == pytest.approx(plain.best_iou, abs=0.02)


def test_extent_validates_thresholds() -> None:
    maps, masks = torch.rand(1, 1, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="increasing"):
        region_extent(maps, masks, [0.5, 0.1])
    with pytest.raises(ValueError, match="increasing"):
        region_extent(maps, masks, [0.5, 1.0])
