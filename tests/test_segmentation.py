"""WSSS pipeline: IRN pseudo-masks, confusion matrix, mIoU, threshold sweep, CRF."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import Tensor

from captum_shallow.evaluation import (
    DEFAULT_THRESHOLDS,
    ThresholdSweep,
    confusion_matrix,
    evaluate_cams,
    iou_from_confusion,
)
from captum_shallow.segmentation import class_cams, dense_crf, pseudo_masks


def _irn_reference(
    cams: np.ndarray, labels: np.ndarray, gts: np.ndarray, t: float, k: int
) -> float:
    """IRN's eval_cam written independently with numpy: pad, argmax, keys, nanmean."""
    conf = np.zeros((k, k), dtype=np.int64)
    for cam, label, gt in zip(cams, labels, gts, strict=True):
        keys = np.nonzero(label)[0]
        present = np.pad(cam[keys], ((1, 0), (0, 0), (0, 0)), constant_values=np.float32(t))
        pred = np.pad(keys + 1, (1, 0))[np.argmax(present, axis=0)]
        valid = gt != 255
        np.add.at(conf, (gt[valid], pred[valid]), 1)
    tp = np.diag(conf).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (conf.sum(0) + conf.sum(1) - tp)
    return float(np.nanmean(iou))


def test_pseudo_masks_argmax_ties_and_absent_classes() -> None:
    cams = torch.tensor([[[[0.15, 0.9, 0.3, 0.0]], [[0.1, 0.2, 0.6, 0.0]], [[1.0, 1.0, 1.0, 1.0]]]])
    labels = torch.tensor([[1, 1, 0]])  # class 2 absent: its high CAM must not win
    # Pixel 0: 0.15 ties the background score -> background.
    assert pseudo_masks(cams, labels, 0.15).tolist() == [[[0, 1, 2, 0]]]
    assert pseudo_masks(cams, labels, 0.5).tolist() == [[[0, 1, 2, 0]]]
    assert pseudo_masks(cams, labels, 0.7).tolist() == [[[0, 1, 0, 0]]]
    assert pseudo_masks(cams, torch.zeros(1, 3), 0.0).tolist() == [[[0, 0, 0, 0]]]


def test_confusion_matrix_known_values_and_ignore() -> None:
    gt = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    conf = confusion_matrix(pred, gt, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    iou, miou = iou_from_confusion(conf)
    assert iou.tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert miou.item() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_perfect_mask_gives_miou_one_and_absent_class_is_nan() -> None:
    gt = torch.tensor([[0, 1, 1, 3, 255]])
    iou, miou = iou_from_confusion(confusion_matrix(gt.clamp(max=3), gt, 4))
    assert miou.item() == 1.0
    assert torch.isnan(iou[2])


def test_confusion_matrix_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 5]), 3)
    with pytest.raises(ValueError, match="differ"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="prediction holds"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)


def test_class_cams_expands_present_classes_and_normalises() -> None:
    calls: list[tuple[list[float], list[int]]] = []

    def cam_fn(x: Tensor, target: Tensor) -> Tensor:
        calls.append((x[:, 0, 0, 0].tolist(), target.tolist()))
        # A 2 x 2 map whose value is (target + 1) * pixel ramp, negative corner included.
        ramp = torch.tensor([[-1.0, 1.0], [2.0, 4.0]])
        return (target[:, None, None, None] + 1).float() * ramp.expand(len(x), 1, 2, 2)

    images = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 3, 2, 2).contiguous()
    labels = torch.tensor([[1, 0, 1], [0, 0, 0], [0, 1, 0]])
    cams = class_cams(cam_fn, images, labels, batch_size=2)
    assert calls == [([0.0, 0.0], [0, 2]), ([2.0], [1])]
    expected = torch.tensor([[0.0, 1.0], [2.0, 4.0]]) / (4 + 1e-5)
    torch.testing.assert_close(cams[0, 0], expected)
    torch.testing.assert_close(cams[2, 1], expected)
    assert cams[0, 1].abs().sum() == 0
    assert cams[1].abs().sum() == 0


def test_class_cams_upsamples_and_checks_output() -> None:
    images = torch.zeros(1, 3, 8, 8)
    labels = torch.tensor([[1]])
    ramp = torch.tensor([[[[-1.0, 1.0], [2.0, 4.0]]]])
    cams = class_cams(lambda x, t: ramp.expand(len(x), -1, -1, -1), images, labels)
    assert cams.shape == (1, 1, 8, 8)
    upsampled = torch.nn.functional.interpolate(
        ramp, size=(8, 8), mode="bilinear", align_corners=False
    ).clamp(min=0)
    torch.testing.assert_close(cams, upsampled / (upsampled.max() + 1e-5))
    with pytest.raises(ValueError, match="cam_fn must return"):
        class_cams(lambda x, t: torch.ones(len(x), 2, 2), images, labels)
    with pytest.raises(ValueError, match="multi-hot"):
        class_cams(lambda x, t: torch.ones(len(x), 1, 2, 2), images, torch.tensor([1]))


def test_threshold_sweep_equals_per_threshold_masks_and_irn_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    n, k, h, w = 5, 4, 9, 7
    cams = torch.rand(n, k, h, w, generator=gen)
    cams = cams / (cams.amax(dim=(2, 3), keepdim=True) + 1e-5)
    labels = torch.rand(n, k, generator=gen) > 0.5
    labels[0] = False  # an image without labels
    gt = torch.randint(0, k + 1, (n, h, w), generator=gen)
    gt[:, 0, :] = 255
    thresholds = [0.0, 0.15, 0.33, 0.6, 0.99]
    sweep = ThresholdSweep(k + 1, thresholds)
    sweep.update(cams[:2], labels[:2], gt[:2])  # accumulates over batches
    sweep.update(cams[2:], labels[2:], gt[2:])
    result = sweep.result()
    for j, t in enumerate(thresholds):
        direct = confusion_matrix(pseudo_masks(cams, labels, t), gt, k + 1)
        assert torch.equal(result.confusion[j], direct)
        reference = _irn_reference(cams.numpy(), labels.numpy(), gt.numpy(), t, k + 1)
        assert result.miou[j].item() == pytest.approx(reference, abs=1e-12)
    assert result.best_miou == max(result.miou.tolist())
    assert result.miou_at(0.15) == pytest.approx(result.miou[1].item())
    with pytest.raises(ValueError, match="not in the sweep"):
        result.miou_at(0.2)


def test_threshold_sweep_default_grid_and_validation() -> None:
    assert DEFAULT_THRESHOLDS[0] == 0.0
    assert DEFAULT_THRESHOLDS[-1] == 0.95
    assert len(DEFAULT_THRESHOLDS) == 96
    with pytest.raises(ValueError, match="increasing"):
        ThresholdSweep(3, [0.2, 0.1])
    sweep = ThresholdSweep(3)
    with pytest.raises(ValueError, match="num_classes - 1"):
        sweep.update(torch.rand(1, 3, 2, 2), torch.ones(1, 3), torch.zeros(1, 2, 2))


def _scene() -> tuple[Tensor, Tensor, Tensor]:
    masks = torch.zeros(2, 12, 12, dtype=torch.long)
    masks[0, 2:6, 2:8] = 1
    masks[0, 7:11, 6:11] = 3
    masks[1, 4:10, 1:5] = 2
    masks[1, 0, :] = 255
    labels = torch.zeros(2, 3, dtype=torch.long)
    labels[0, [0, 2]] = 1
    labels[1, 1] = 1
    images = (masks.clamp(max=3).float() / 3)[:, None].expand(2, 3, 12, 12).contiguous()
    return images, labels, masks


def test_evaluate_cams_oracle_cam_gives_miou_one() -> None:
    images, labels, masks = _scene()

    def oracle(x: Tensor, target: Tensor) -> Tensor:
        # The image encodes its mask: value / 3 * 3 = label; the CAM is the class's region.
        label = (x[:, 0] * 3).round().long()
        return (label == target[:, None, None] + 1).float()[:, None]

    result = evaluate_cams(
        oracle, [(images[:1], labels[:1], masks[:1]), (images[1:], labels[1:], masks[1:])], 4
    )
    assert result.miou.tolist() == [1.0] * 96
    assert result.best_threshold == 0.0
    # A uniform CAM covers everything: background IoU 0 at thresholds below 1.
    flat = evaluate_cams(lambda x, t: torch.ones(len(x), 1, 3, 3), [(images, labels, masks)], 4)
    assert flat.iou[:, 0].tolist() == [0.0] * 96


@pytest.mark.needs_extra("crf")
def test_dense_crf_snaps_to_image_edges() -> None:
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    image[:, :, 8:] = 255
    labels = torch.zeros(16, 16, dtype=torch.long)
    labels[:, 6:] = 5  # the label spills two pixels over the edge
    refined = dense_crf(image, labels)
    assert refined.dtype == torch.long
    assert refined[:, :8].eq(0).all()
    assert refined[:, 8:].eq(5).all()
    # With one label, nothing changes.
    assert dense_crf(image, torch.full((16, 16), 3)).eq(3).all()


@pytest.mark.needs_extra("crf")
def test_evaluate_cams_with_crf() -> None:
    images, labels, masks = _scene()

    def blurry(x: Tensor, target: Tensor) -> Tensor:
        label = (x[:, 0] * 3).round().long()
        region = (label == target[:, None, None] + 1).float()[:, None]
        return torch.nn.functional.avg_pool2d(region, 3, stride=1, padding=1)

    result = evaluate_cams(blurry, [(images, labels, masks)], 4, crf=True)
    assert result.crf_threshold == 0.15
    assert result.crf_miou is not None
    assert result.crf_miou >= result.miou_at(0.15)


def test_dense_crf_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(ImportError, match=r"captum-shallow\[crf\]"):
        dense_crf(torch.zeros(3, 4, 4, dtype=torch.uint8), torch.zeros(4, 4, dtype=torch.long))
