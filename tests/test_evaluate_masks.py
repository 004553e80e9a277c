"""``captum-shallow evaluate-masks`` against the evaluation module's in-memory mIoU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captum_shallow.cli import main
from captum_shallow.datasets import VOC_CLASSES
from captum_shallow.evaluation import ThresholdSweep, confusion_matrix, iou_from_confusion
from captum_shallow.io._label_png import voc_palette
from captum_shallow.segmentation import pseudo_masks


def _save(path: Path, labels: np.ndarray, mode: str = "P") -> None:
    """A label PNG: VOC's palette (``P``) or greyscale (``L``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode)
    if mode == "P":
        image.putpalette(voc_palette())
    image.save(path)


@pytest.fixture
def masks(tmp_path: Path) -> tuple[Path, Path, list[np.ndarray], list[np.ndarray]]:
    """Four random prediction / ground-truth pairs of different sizes, 255 borders."""
    rng = np.random.default_rng(0)
    preds, gts = [], []
    for i, (height, width) in enumerate([(10, 12), (7, 9), (16, 5), (11, 11)]):
        gt = rng.choice([0, 3, 8, 15], size=(height, width))
        gt[0] = 255
        pred = np.where(rng.random((height, width)) < 0.7, gt, rng.choice([0, 3, 8, 12], gt.shape))
        pred[pred == 255] = 0
        _save(tmp_path / "pred" / f"img{i}.png", pred, "P" if i % 2 else "L")
        _save(tmp_path / "gt" / f"img{i}.png", gt)
        preds.append(pred)
        gts.append(gt)
    return tmp_path / "pred", tmp_path / "gt", preds, gts


def test_matches_the_in_memory_miou(
    masks: tuple[Path, Path, list[np.ndarray], list[np.ndarray]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pred_dir, gt_dir, preds, gts = masks
    out = tmp_path / "table.json"
    assert (
        main(["evaluate-masks", "--pred", str(pred_dir), "--gt", str(gt_dir), "--json", str(out)])
        == 0
    )
    pred = torch.cat([torch.from_numpy(p).flatten() for p in preds])
    gt = torch.cat([torch.from_numpy(g).flatten() for g in gts])
    iou, miou = iou_from_confusion(confusion_matrix(pred, gt, len(VOC_CLASSES)))
    table = json.loads(out.read_text())
    assert table["images"] == 4
    assert table["miou"] == pytest.approx(float(miou), abs=1e-12)
    for name, expected in zip(VOC_CLASSES, iou.tolist(), strict=True):
        value = table["classes"][name]
        assert value is None if math.isnan(expected) else value == pytest.approx(expected)
    assert table["classes"]["dog"] == 0.0  # predicted, never true
    assert table["classes"]["cat"] > 0.5
    printed = capsys.readouterr().out
    assert printed.splitlines()[-1].split()[:2] == ["mIoU", f"{100 * float(miou):.2f}"]


def test_matches_the_threshold_sweep_on_pseudo_masks(tmp_path: Path) -> None:
    """Masks written from CAMs score what ThresholdSweep scores on the same CAMs."""
    generator = torch.Generator().manual_seed(0)
    cams = torch.rand(3, 20, 9, 13, generator=generator)
    labels = torch.zeros(3, 20)
    labels[0, [2, 7]] = labels[1, 11] = labels[2, [0, 14, 19]] = 1
    gt = torch.randint(0, 21, (3, 9, 13), generator=generator)
    gt[:, :, 0] = 255
    sweep = ThresholdSweep(21, thresholds=[0.15])
    sweep.update(cams, labels, gt)
    predicted = pseudo_masks(cams, labels, 0.15)
    for i in range(3):
        _save(tmp_path / "pred" / f"{i}.png", predicted[i].numpy())
        _save(tmp_path / "gt" / f"{i}.png", gt[i].numpy())
    out = tmp_path / "table.json"
    argv = ["evaluate-masks", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    assert main([*argv, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["miou"] == pytest.approx(sweep.result().miou_at(0.15))


def test_custom_class_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _save(tmp_path / "pred" / "a.png", np.array([[0, 1], [2, 2]]))
    _save(tmp_path / "gt" / "a.png", np.array([[0, 1], [2, 1]]))
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    argv = ["evaluate-masks", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    assert main([*argv, "--classes", str(tmp_path / "classes.txt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["class", "background", "cat", "dog", "mIoU"]
    assert lines[2].split()[1] == "50.00"  # cat: 1 / (2 + 1 - 1)


def _expect_error(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("captum-shallow: error: ")
    assert err.count("\n") == 1
    assert message in err


def test_size_mismatch_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _save(tmp_path / "pred" / "a.png", np.zeros((4, 6)))
    _save(tmp_path / "gt" / "a.png", np.zeros((5, 6)))
    argv = ["evaluate-masks", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    _expect_error(argv, "size mismatch for a.png: prediction 6x4, ground truth 6x5", capsys)


def test_palette_mismatch_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = Image.fromarray(np.ones((4, 4), dtype=np.uint8), "P")
    other.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    (tmp_path / "pred").mkdir()
    other.save(tmp_path / "pred" / "a.png")
    _save(tmp_path / "gt" / "a.png", np.ones((4, 4)))
    argv = ["evaluate-masks", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    _expect_error(argv, "palette mismatch in", capsys)
    assert "label 1 is coloured (10, 200, 30), VOC's palette has (128, 0, 0)" in _last_error(
        argv, capsys
    )


def _last_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    main(argv)
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("rgb", "is a RGB image; expected a label PNG"),
        ("missing-gt", "1 of 1 masks have no ground truth"),
        ("empty", "holds no .png masks"),
        ("out-of-range", "a.png: ground truth holds labels outside 0..20"),
        ("no-folder", "--gt"),
    ],
)
def test_user_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str, message: str
) -> None:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    if setup != "no-folder":
        gt.mkdir()
    if setup == "rgb":
        Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(pred / "a.png")
        _save(gt / "a.png", np.zeros((4, 4)))
    elif setup in ("missing-gt", "no-folder"):
        _save(pred / "a.png", np.zeros((4, 4)))
    elif setup == "out-of-range":
        _save(pred / "a.png", np.zeros((4, 4)))
        _save(gt / "a.png", np.full((4, 4), 30))
    _expect_error(["evaluate-masks", "--pred", str(pred), "--gt", str(gt)], message, capsys)


def test_ground_truth_without_prediction_is_reported(
    masks: tuple[Path, Path, list[np.ndarray], list[np.ndarray]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pred_dir, gt_dir, preds, gts = masks
    (pred_dir / "img3.png").unlink()  # as if that image had failed
    out = tmp_path / "table.json"
    argv = ["evaluate-masks", "--pred", str(pred_dir), "--gt", str(gt_dir), "--json", str(out)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err == f"note: 1 ground-truth masks in {gt_dir} have no prediction and are not scored\n"
    table = json.loads(out.read_text())
    assert table["images"] == 3
    assert table["ground_truth_without_prediction"] == 1
    confusion = sum(
        confusion_matrix(torch.from_numpy(p), torch.from_numpy(g), len(VOC_CLASSES), 255)
        for p, g in zip(preds[:3], gts[:3])
    )
    assert table["miou"] == pytest.approx(float(iou_from_confusion(confusion)[1]))
